-- Whether the source file's fate after its job (keep, move to done_dir, delete, move to
-- failed_dir) has been carried out. A retry clears it, so the next outcome is handled again.
ALTER TABLE jobs ADD COLUMN disposed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_undisposed ON jobs (state, id) WHERE disposed = 0;
