-- The job queue. Paths are BLOBs holding the OS bytes (paths may be invalid UTF-8).
-- Times are unix milliseconds. Every state change goes through the store's guarded UPDATE
-- and leaves one row in `events`.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source_path      BLOB    NOT NULL,
    source_root      BLOB    NOT NULL,
    output_dir       BLOB    NOT NULL,
    repair           TEXT    NOT NULL,           -- wire value: sr, sr,repair, sr,repair,colour, bg
    rgb              TEXT,                       -- "R,G,B" for bg, else NULL
    size             INTEGER NOT NULL,
    mtime_ns         INTEGER NOT NULL,
    content_sha256   TEXT,                       -- lowercase hex; NULL until hashed
    state            TEXT    NOT NULL CHECK (state IN
                       ('queued','uploading','processing','downloading','done','failed','held')),
    attempts         INTEGER NOT NULL DEFAULT 0, -- upload attempts (begin_upload count)
    not_before       INTEGER NOT NULL DEFAULT 0, -- backoff: no upload before this instant
    credits_before   INTEGER,                    -- credits seen just before the last upload
    mdf              TEXT,
    img_url          TEXT,
    output_path      BLOB,
    output_sha256    TEXT,
    reason           TEXT,                       -- why it was last failed/held/requeued
    credit_spent     INTEGER NOT NULL DEFAULT 0, -- at least one credit was charged for this job
    charges          INTEGER NOT NULL DEFAULT 0, -- how many credits were charged for this job
    force            INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    processing_since INTEGER,
    next_poll_at     INTEGER
);

-- Per-state listings in id order (the upload worker scans queued jobs by id, filtering
-- not_before, and stops at its LIMIT without sorting).
CREATE INDEX jobs_state ON jobs (state, id);
-- Enqueue idempotence: the same file version with the same settings.
CREATE INDEX jobs_file ON jobs (source_path, size, mtime_ns, repair, rgb, output_dir);
-- Dedup by content identity.
CREATE INDEX jobs_identity ON jobs (content_sha256, repair, rgb) WHERE content_sha256 IS NOT NULL;

-- Append-only audit trail. from_state is NULL for the creation row.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    detail     TEXT
);
CREATE INDEX events_job ON events (job_id, id);

-- Every credit count read from the vendor, for reconciliation and `hili status`.
CREATE TABLE credit_observations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    credits_left INTEGER NOT NULL
);

-- The creation row of every job's audit trail, written by SQLite itself so that a bulk
-- `hili add` costs one statement per new file.
CREATE TRIGGER jobs_created AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (job_id, from_state, to_state, at, detail)
    VALUES (NEW.id, NULL, NEW.state, NEW.created_at,
            CASE NEW.force WHEN 1 THEN 'enqueued (force)' ELSE 'enqueued' END);
END;
