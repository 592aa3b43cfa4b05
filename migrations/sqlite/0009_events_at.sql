-- Events by time: the daily budget counts the credits charged since local midnight at every
-- upload ([queue] budget_per_day), and `hili export --events --since` reads a time range.
CREATE INDEX events_at ON events (at);
