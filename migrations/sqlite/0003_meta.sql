-- Facts about the queue itself. `queue_id` is random, made once when the database is created
-- (or first migrated); it is written as a `.hili-queue` marker into output directories, so a
-- start with a lost or replaced database can tell that those outputs belong to another queue
-- and refuse to silently re-upload everything.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('queue_id', lower(hex(randomblob(16))));
