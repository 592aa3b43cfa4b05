//! Adding files to the shared queue: the same rules as the SQLite queue's `enqueue.rs` and
//! `invalid.rs` (a file version is known once, in any state, fleet-wide; hili's own results
//! are never queued; invalid files are recorded failed), with the job owned by the node that
//! found it. What SQLite's single writer made atomic — look for the file version, then insert
//! it — is made race-free across nodes here by advisory locks on the files' paths.

use sqlx::PgConnection;

use super::PgStore;
use crate::store::error::SqlContext;
use crate::store::jobs::{path_bytes, rgb_text};
use crate::store::{
    AGENT, EnqueueOutcome, JobId, Known, NewJob, State, StoreError, check, now_ms, state,
};

/// The first key of enqueue's advisory locks (`pg_advisory_xact_lock(class, bucket)`): "hili"
/// in ASCII, so they never meet another lock's keys.
const LOCK_CLASS: i32 = 0x6869_6c69;
/// How many buckets the paths' locks fall into. Every lock held takes a slot of the server's
/// shared lock table (`max_locks_per_transaction` × connections, 6400 by default), so a batch
/// of thousands of files holds at most this many; two paths sharing a bucket only wait for
/// each other's enqueue.
const LOCK_BUCKETS: i32 = 1024;

impl PgStore {
    /// Queues many files in one transaction; outcomes are in input order. See
    /// `SqliteStore::enqueue_many`: without `force` a file version known with the same
    /// settings (in any state) is `AlreadyKnown`; with it, a queued match is only marked
    /// `force`, any other gets a new job.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_many_as(jobs, Known::SameSettings).await
    }

    /// [`PgStore::enqueue_many`] with the rule for what is already known; a file at a path
    /// where a job wrote its result is `OwnResult` (not queued) unless forced.
    pub async fn enqueue_many_as(
        &self,
        jobs: Vec<NewJob>,
        known: Known,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut tx = self.begin_enqueue(&jobs, "enqueueing files").await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let owner = self.owner_of(&j.source_root);
            out.push(enqueue_one(&mut tx, j, now, known, owner.as_deref()).await?);
        }
        tx.commit().await.ctx("committing enqueued files")?;
        Ok(out)
    }

    /// Records invalid files as failed jobs with their reasons, in one transaction (created
    /// then failed: no reader ever sees them queued); outcomes in input order. Deduped as
    /// [`PgStore::enqueue_many`] is, never forced: only a new file version makes a row
    /// (`Failed`).
    pub async fn enqueue_invalid(
        &self,
        jobs: Vec<(NewJob, String)>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let files: Vec<&NewJob> = jobs.iter().map(|(j, _)| j).collect();
        let mut tx = self.begin_enqueue(files, "recording invalid files").await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        for (j, reason) in jobs {
            // Processing it again cannot help: an invalid file is never forced into the queue.
            let j = NewJob { force: false, ..j };
            let owner = self.owner_of(&j.source_root);
            out.push(
                match enqueue_one(&mut tx, &j, now, Known::SameSettings, owner.as_deref()).await? {
                    EnqueueOutcome::Queued(id) => {
                        fail_new(&mut tx, id, &reason, now).await?;
                        EnqueueOutcome::Failed(id)
                    }
                    other => other,
                },
            );
        }
        tx.commit().await.ctx("committing invalid files")?;
        Ok(out)
    }

    /// Checks `jobs`, then opens the transaction that enqueues them: hili's version recorded
    /// for the creation trigger, and the locks of their paths taken.
    async fn begin_enqueue<'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a NewJob>,
        context: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut paths = Vec::new();
        for j in jobs {
            crate::store::enqueue::validate(j)?;
            paths.push(path_bytes(&j.source_path));
        }
        let mut tx = self.begin(context).await?;
        set_agent(&mut tx).await?;
        lock_paths(&mut tx, paths).await?;
        Ok(tx)
    }
}

/// Records hili's version in `meta` for the `jobs_created` trigger to copy into each creation
/// event (the PostgreSQL twin of the SQLite side's `export::set_agent`). The upsert locks the
/// row until commit even when the value is already this one, so a node running another
/// version cannot stamp its own on these jobs before they commit.
async fn set_agent(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('agent', $1) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value \
         WHERE meta.value IS DISTINCT FROM EXCLUDED.value",
    )
    .bind(AGENT)
    .execute(conn)
    .await
    .ctx("recording hili's version with the enqueued files")?;
    Ok(())
}

/// The dedupe's guarantee across nodes: a transaction-scoped advisory lock on each file's path
/// (hashed into [`LOCK_BUCKETS`]), held until commit, so a second node adding the same file
/// waits and then finds the first node's job. Path is the coarsest key of both [`Known`]
/// rules, and of the own-result check. The locks are taken in one statement in bucket order,
/// so two batches naming the same files in any order cannot deadlock. (The agent upsert also
/// serialises enqueues today; the dedupe does not rely on it.)
async fn lock_paths(conn: &mut PgConnection, paths: Vec<Vec<u8>>) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, b) FROM \
         (SELECT DISTINCT abs(hashtext(encode(p, 'hex')) % $2) AS b \
          FROM unnest($3::bytea[]) AS p ORDER BY b) AS buckets",
    )
    .bind(LOCK_CLASS)
    .bind(LOCK_BUCKETS)
    .bind(paths)
    .execute(conn)
    .await
    .ctx("locking the files to enqueue against other nodes")?;
    Ok(())
}

/// One file, under its path's lock: its outcome (see `SqliteStore::enqueue_many`). A new job
/// names `node`, whose paths it holds (`None`: a shared folder's, any node's). A path is the
/// same file only on the same node (or in the shared folders): `/home/scan/a.jpg` on two
/// workstations is two photos.
async fn enqueue_one(
    conn: &mut PgConnection,
    j: &NewJob,
    now: i64,
    known: Known,
    node: Option<&str>,
) -> Result<EnqueueOutcome, StoreError> {
    let src = path_bytes(&j.source_path);
    let ctx = || format!("enqueueing {}", j.source_path.display());

    if !j.force {
        let writer: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE output_path = $1 LIMIT 1")
                .bind(&src)
                .fetch_optional(&mut *conn)
                .await
                .ctx(ctx())?;
        if let Some(writer) = writer {
            return Ok(EnqueueOutcome::OwnResult(JobId(writer)));
        }
    }
    if let Some((id, state_s)) = latest_version(conn, j, known, node, &ctx).await? {
        let id = JobId(id);
        let state = state_s.parse::<State>().map_err(|e| StoreError::Corrupt {
            job: id,
            detail: e.to_string(),
        })?;
        if !j.force {
            return Ok(EnqueueOutcome::AlreadyKnown(id, state));
        }
        if state == State::Queued {
            sqlx::query("UPDATE jobs SET force = 1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id.0)
                .execute(&mut *conn)
                .await
                .ctx(ctx())?;
            return Ok(EnqueueOutcome::AlreadyKnown(id, state));
        }
    }

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (source_path, source_root, output_dir, repair, rgb, size, mtime_ns, \
         state, force, created_at, updated_at, source_dev, source_ino, node) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $9, $10, $11, $12) RETURNING id",
    )
    .bind(&src)
    .bind(path_bytes(&j.source_root))
    .bind(path_bytes(&j.output_dir))
    .bind(j.repair.wire())
    .bind(rgb_text(j.rgb))
    .bind(j.size as i64) // checked by validate
    .bind(j.mtime_ns)
    .bind(i64::from(j.force))
    .bind(now)
    // The u64s' bits, as PostgreSQL's integers are signed.
    .bind(j.file_id.map(|f| f.dev as i64))
    .bind(j.file_id.map(|f| f.ino as i64))
    .bind(node)
    .fetch_one(&mut *conn)
    .await
    .ctx(ctx())?;
    // The creation event is written by the `jobs_created` trigger (see the migration).
    Ok(EnqueueOutcome::Queued(JobId(id)))
}

/// The latest job for this file version that counts as "already known" under `known`: its id
/// and state as stored.
async fn latest_version(
    conn: &mut PgConnection,
    j: &NewJob,
    known: Known,
    node: Option<&str>,
    ctx: &impl Fn() -> String,
) -> Result<Option<(i64, String)>, StoreError> {
    let src = path_bytes(&j.source_path);
    let size = j.size as i64; // checked by validate
    match known {
        Known::SameSettings => sqlx::query_as(
            "SELECT id, state FROM jobs WHERE source_path = $1 AND size = $2 AND mtime_ns = $3 \
             AND repair = $4 AND rgb IS NOT DISTINCT FROM $5 AND output_dir = $6 \
             AND node IS NOT DISTINCT FROM $7 ORDER BY id DESC LIMIT 1",
        )
        .bind(src)
        .bind(size)
        .bind(j.mtime_ns)
        .bind(j.repair.wire())
        .bind(rgb_text(j.rgb))
        .bind(path_bytes(&j.output_dir))
        .bind(node),
        Known::AnySettings => sqlx::query_as(
            "SELECT id, state FROM jobs WHERE source_path = $1 AND size = $2 AND mtime_ns = $3 \
             AND node IS NOT DISTINCT FROM $4 ORDER BY id DESC LIMIT 1",
        )
        .bind(src)
        .bind(size)
        .bind(j.mtime_ns)
        .bind(node),
    }
    .fetch_optional(&mut *conn)
    .await
    .ctx(ctx())
}

/// The state machine's `fail` edge (queued → failed) for a job created in this transaction:
/// one guarded UPDATE with the edge's fixed changes and the reason, and its events row (a
/// twin of the SQLite side's, which takes a SQLite connection).
async fn fail_new(
    conn: &mut PgConnection,
    id: JobId,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    let edge = state::edge("fail").ok_or_else(|| StoreError::Invalid {
        detail: "no edge \"fail\" in the state machine (a bug in hili)".into(),
    })?;
    let (from, to) = (State::Queued, edge.to);
    check(from, to)?;
    let mut sql = String::from("UPDATE jobs SET state = $1, updated_at = $2, reason = $3");
    for fixed in edge.fixed {
        sql.push_str(", ");
        sql.push_str(fixed);
    }
    sql.push_str(" WHERE id = $4 AND state = $5");
    let context = || format!("recording job {id} as failed at hili add");
    let changed = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(now)
        .bind(reason)
        .bind(id.0)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .ctx(context())?
        .rows_affected();
    if changed != 1 {
        return Err(StoreError::Invalid {
            detail: format!(
                "job {id}, created queued in this transaction, could not be failed (a bug in hili)"
            ),
        });
    }
    sqlx::query(
        "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.0)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now)
    .bind(reason)
    .bind(AGENT)
    .execute(&mut *conn)
    .await
    .ctx(context())?;
    Ok(())
}
