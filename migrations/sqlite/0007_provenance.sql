-- Provenance (PREMIS) and fixity. Each event row now says which software wrote it: `agent`,
-- e.g. "hili/0.1.0". The event's type is the state machine's edge name (unique per pair of
-- states, see `store::state::EDGES`), its outcome the state reached, its object the job's
-- photo; none of those needs a column. Rows written before this migration have no agent.
ALTER TABLE events ADD COLUMN agent TEXT;

-- The software that enqueues, set by each enqueue in its own transaction (`store::export`), so
-- that the trigger below can name it: a trigger cannot be handed a value by the statement
-- that fires it.
INSERT OR IGNORE INTO meta (key, value) VALUES ('agent', 'hili');

DROP TRIGGER jobs_created;
CREATE TRIGGER jobs_created AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (job_id, from_state, to_state, at, detail, agent)
    VALUES (NEW.id, NULL, NEW.state, NEW.created_at,
            CASE NEW.force WHEN 1 THEN 'enqueued (force)' ELSE 'enqueued' END,
            (SELECT value FROM meta WHERE key = 'agent'));
END;

-- An output folder's manifest lists its done results, sorted: rebuilt after each result lands.
CREATE INDEX jobs_done_output ON jobs (output_dir, output_path) WHERE state = 'done';
