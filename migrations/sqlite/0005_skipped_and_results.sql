-- A job may end `skipped`: not processed, on purpose, and nothing to do — the file is hili's own
-- result of another job, or it was superseded by a job of the same content under a new name.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt inside the
-- migration's transaction with foreign keys on: new copies of `jobs` and of `events` (whose
-- foreign key must point at the new `jobs`) are filled, the old ones dropped (child first, so
-- no row is ever orphaned), the copies renamed into place, and the indexes and the trigger
-- made again.
-- Also: indexes to recognise a file as one of hili's results, by path and by content.
CREATE TABLE jobs_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source_path      BLOB    NOT NULL,
    source_root      BLOB    NOT NULL,
    output_dir       BLOB    NOT NULL,
    repair           TEXT    NOT NULL,
    rgb              TEXT,
    size             INTEGER NOT NULL,
    mtime_ns         INTEGER NOT NULL,
    content_sha256   TEXT,
    state            TEXT    NOT NULL CHECK (state IN
                       ('queued','uploading','processing','downloading','done','failed','held',
                        'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    not_before       INTEGER NOT NULL DEFAULT 0,
    credits_before   INTEGER,
    mdf              TEXT,
    img_url          TEXT,
    output_path      BLOB,
    output_sha256    TEXT,
    reason           TEXT,
    credit_spent     INTEGER NOT NULL DEFAULT 0,
    charges          INTEGER NOT NULL DEFAULT 0,
    force            INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    processing_since INTEGER,
    next_poll_at     INTEGER,
    disposed         INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs_new (id, source_path, source_root, output_dir, repair, rgb, size, mtime_ns,
    content_sha256, state, attempts, not_before, credits_before, mdf, img_url, output_path,
    output_sha256, reason, credit_spent, charges, force, created_at, updated_at,
    processing_since, next_poll_at, disposed)
SELECT id, source_path, source_root, output_dir, repair, rgb, size, mtime_ns,
    content_sha256, state, attempts, not_before, credits_before, mdf, img_url, output_path,
    output_sha256, reason, credit_spent, charges, force, created_at, updated_at,
    processing_since, next_poll_at, disposed
FROM jobs;
CREATE TABLE events_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs_new (id),
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    detail     TEXT
);
INSERT INTO events_new (id, job_id, from_state, to_state, at, detail)
SELECT id, job_id, from_state, to_state, at, detail FROM events;
DROP TABLE events;
DROP TABLE jobs;
-- Renaming the parent also renames the child's reference (SQLite >= 3.26): events -> jobs.
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_job ON events (job_id, id);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_file ON jobs (source_path, size, mtime_ns, repair, rgb, output_dir);
CREATE INDEX jobs_identity ON jobs (content_sha256, repair, rgb) WHERE content_sha256 IS NOT NULL;
CREATE INDEX jobs_undisposed ON jobs (state, id) WHERE disposed = 0;
CREATE INDEX jobs_due ON jobs (state, not_before);
CREATE INDEX jobs_poll ON jobs (state, next_poll_at);
CREATE INDEX jobs_output_path ON jobs (output_path) WHERE output_path IS NOT NULL;
CREATE INDEX jobs_output_sha256 ON jobs (output_sha256) WHERE output_sha256 IS NOT NULL;
CREATE TRIGGER jobs_created AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (job_id, from_state, to_state, at, detail)
    VALUES (NEW.id, NULL, NEW.state, NEW.created_at,
            CASE NEW.force WHEN 1 THEN 'enqueued (force)' ELSE 'enqueued' END);
END;
