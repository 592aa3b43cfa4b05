-- Credit accounting by epochs. An epoch opens with a reading of the credits left taken while
-- no upload is in flight; every upload intent names its epoch (`jobs.epoch`); the uploads
-- answered in it are the `uploading → processing` events after `after_event`. When answers
-- are lost, the epoch is closed by one reading taken once nothing is in flight:
-- charged_lost = start_credits − end_credits − answered decides the lost uploads' fate
-- (`verdict`), recorded here BEFORE the jobs move, so a crash between the two is finished the
-- same way at the next start. The closing reading opens the next epoch.
CREATE TABLE credit_epochs (
    id INTEGER PRIMARY KEY,
    opened_at INTEGER NOT NULL,
    start_credits INTEGER NOT NULL,
    -- The newest events row when the epoch opened: its answers are the events after it.
    after_event INTEGER NOT NULL,
    closed_at INTEGER,
    end_credits INTEGER,
    answered INTEGER,
    lost INTEGER,
    -- 'none' (no answer lost), 'requeue' (none of the lost was charged), 'charged' (all
    -- were), 'ambiguous' (cannot tell which: all held).
    verdict TEXT CHECK (verdict IN ('none', 'requeue', 'charged', 'ambiguous')),
    -- Credits the account lost beyond what hili's uploads explain (another client, the web
    -- console); at least this many.
    spent_elsewhere INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE jobs ADD COLUMN epoch INTEGER REFERENCES credit_epochs (id);

-- Uploads a crash left in flight under the previous accounting (one credit reading just before
-- each upload, kept in `credits_before`) join one epoch opened at that reading with no answer
-- counted: the next start closes it with the same arithmetic the old rule used. Several at once
-- (upload_concurrency above 1) can only come out ambiguous, and are held.
INSERT INTO credit_epochs (opened_at, start_credits, after_event)
SELECT MAX(updated_at), COALESCE(MAX(credits_before), 0),
       (SELECT COALESCE(MAX(id), 0) FROM events)
FROM jobs WHERE state = 'uploading' HAVING COUNT(*) > 0;
UPDATE jobs SET epoch = (SELECT MAX(id) FROM credit_epochs) WHERE state = 'uploading';
