-- Which file a job's source was when it was queued: device and inode, beside the size and
-- mtime recorded already. Before a source is deleted or moved after its job, the file at that
-- path must still be this one (a scan saved again under the same name is a new file, and
-- its own job's). NULL for jobs queued before this migration (size, mtime and the content hash
-- then decide). Stored as the u64's bits in a signed INTEGER.
ALTER TABLE jobs ADD COLUMN source_dev INTEGER;
ALTER TABLE jobs ADD COLUMN source_ino INTEGER;

-- A move of a source into done_dir/failed_dir that has begun and not been settled. Written
-- before the first file operation of the move and removed with the job's `disposed` mark, so
-- a crash in between leaves this row, from which start-up completes the move (the copy is in
-- place: the source is unlinked) or undoes it (the temp copy is removed; the move is redone).
CREATE TABLE source_moves (
    job_id     INTEGER PRIMARY KEY NOT NULL REFERENCES jobs (id),
    source     BLOB    NOT NULL,
    dest       BLOB    NOT NULL,  -- the free name chosen for it (never replaced)
    temp       BLOB    NOT NULL,  -- the copy's temp name beside dest, across filesystems
    source_dev INTEGER NOT NULL,  -- the source's identity when the move began
    source_ino INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- Besides transitions, `events` now holds notes on a job that leave its state as it is
-- (from_state = to_state): what was done with its source, or why it was left in place.
