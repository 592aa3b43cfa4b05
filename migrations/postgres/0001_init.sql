-- The shared queue on PostgreSQL: the same tables as the SQLite queue after its migration
-- 0009 (same columns, same meanings, flags as 0/1 BIGINTs so the state machine's SET
-- fragments are the same text on both), plus what a fleet of nodes needs: who owns a job
-- (`node`, NULL for a shared folder's job), who works it now (`lease_node`, `lease_until`),
-- which node wrote an event, and the `nodes` table of heartbeats.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('queue_id', md5(random()::text || clock_timestamp()::text));
INSERT INTO meta (key, value) VALUES ('agent', 'hili');

CREATE TABLE credit_epochs (
    id              BIGSERIAL PRIMARY KEY,
    opened_at       BIGINT NOT NULL,
    start_credits   BIGINT NOT NULL,
    -- The newest events row when the epoch opened (kept for parity with SQLite; the shared
    -- queue counts an epoch's answers by `jobs.epoch`, which commit order cannot confuse).
    after_event     BIGINT NOT NULL,
    closed_at       BIGINT,
    end_credits     BIGINT,
    answered        BIGINT,
    lost            BIGINT,
    verdict         TEXT CHECK (verdict IN ('none', 'requeue', 'charged', 'ambiguous')),
    spent_elsewhere BIGINT NOT NULL DEFAULT 0,
    -- The node that opened it.
    opened_by       TEXT
);

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    source_path      BYTEA  NOT NULL,
    source_root      BYTEA  NOT NULL,
    output_dir       BYTEA  NOT NULL,
    repair           TEXT   NOT NULL,
    rgb              TEXT,
    size             BIGINT NOT NULL,
    mtime_ns         BIGINT NOT NULL,
    content_sha256   TEXT,
    state            TEXT   NOT NULL CHECK (state IN
                       ('queued','uploading','processing','downloading','done','failed','held',
                        'skipped')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,
    credits_before   BIGINT,
    mdf              TEXT,
    img_url          TEXT,
    output_path      BYTEA,
    output_sha256    TEXT,
    reason           TEXT,
    credit_spent     BIGINT NOT NULL DEFAULT 0,
    charges          BIGINT NOT NULL DEFAULT 0,
    force            BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    processing_since BIGINT,
    next_poll_at     BIGINT,
    disposed         BIGINT NOT NULL DEFAULT 0,
    source_dev       BIGINT,
    source_ino       BIGINT,
    epoch            BIGINT REFERENCES credit_epochs (id),
    -- The node whose paths the job names; NULL: a shared folder's job, any node may take it.
    node             TEXT,
    -- The node working the job now and until when its claim holds (renewed by heartbeats).
    lease_node       TEXT,
    lease_until      BIGINT
);

CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_file ON jobs (source_path, size, mtime_ns, repair, rgb, output_dir);
CREATE INDEX jobs_identity ON jobs (content_sha256, repair, rgb) WHERE content_sha256 IS NOT NULL;
CREATE INDEX jobs_undisposed ON jobs (state, id) WHERE disposed = 0;
CREATE INDEX jobs_due ON jobs (state, not_before);
CREATE INDEX jobs_poll ON jobs (state, next_poll_at);
CREATE INDEX jobs_output_path ON jobs (output_path) WHERE output_path IS NOT NULL;
CREATE INDEX jobs_output_sha256 ON jobs (output_sha256) WHERE output_sha256 IS NOT NULL;
CREATE INDEX jobs_done_output ON jobs (output_dir, output_path) WHERE state = 'done';
CREATE INDEX jobs_epoch ON jobs (epoch) WHERE epoch IS NOT NULL;

CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    job_id     BIGINT NOT NULL REFERENCES jobs (id),
    from_state TEXT,
    to_state   TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    detail     TEXT,
    agent      TEXT,
    -- Each connection says which node it is (`SET hili.node`, see the store's connect).
    node       TEXT DEFAULT current_setting('hili.node', true)
);
CREATE INDEX events_job ON events (job_id, id);
CREATE INDEX events_at ON events (at);

CREATE TABLE credit_observations (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    credits_left BIGINT NOT NULL
);

CREATE TABLE source_moves (
    job_id     BIGINT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    source     BYTEA  NOT NULL,
    dest       BYTEA  NOT NULL,
    temp       BYTEA  NOT NULL,
    source_dev BIGINT NOT NULL,
    source_ino BIGINT NOT NULL,
    size       BIGINT NOT NULL,
    mtime_ns   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- One row per node that ever ran on this queue; a node is live while its heartbeat is fresh.
CREATE TABLE nodes (
    name         TEXT PRIMARY KEY NOT NULL,
    host         TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    version      TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Set when the node stopped cleanly: it is gone, not late.
    stopped_at   BIGINT
);

-- The creation event, as SQLite's `jobs_created` trigger writes it (its node: the column's
-- default, the connection's node).
CREATE FUNCTION jobs_created() RETURNS trigger AS $$
BEGIN
    INSERT INTO events (job_id, from_state, to_state, at, detail, agent)
    VALUES (NEW.id, NULL, NEW.state, NEW.created_at,
            CASE NEW.force WHEN 1 THEN 'enqueued (force)' ELSE 'enqueued' END,
            (SELECT value FROM meta WHERE key = 'agent'));
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_created AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_created();
