-- The scheduler asks "when is the next job due?" several times per job; with these, each
-- per-state MIN is an index lookup instead of a scan of the backlog.
CREATE INDEX jobs_due ON jobs (state, not_before);
CREATE INDEX jobs_poll ON jobs (state, next_poll_at);
