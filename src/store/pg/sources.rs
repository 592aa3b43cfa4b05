//! What happens to source files after their job, on the shared queue: the jobs whose source
//! still awaits its disposition, the durable record of a move in progress (`source_moves`),
//! and marking the disposition carried out with a note in the job's events — the SQLite
//! side's `dispose.rs`, translated. A source is a file on one machine: the one of the job's
//! `node` (NULL: a shared folder's job, reachable from every node), so the lists a node acts
//! on name only the jobs whose files it can reach.

use std::path::{Path, PathBuf};

use super::PgStore;
use crate::media::mover::MovePlan;
use crate::store::dispose::decode_move;
use crate::store::error::SqlContext;
use crate::store::jobs::{JOB_COLUMNS, decode_job, path_bytes};
use crate::store::{AGENT, Job, JobId, StoreError, now_ms};

/// The job's latest move into its state was written by this node (`$2`): the node that ended
/// it (notes, which change no state, do not count).
const ENDED_HERE: &str = "(SELECT e.node FROM events AS e WHERE e.job_id = jobs.id \
     AND e.to_state = jobs.state AND e.from_state IS DISTINCT FROM e.to_state \
     ORDER BY e.id DESC LIMIT 1) = $2";

impl PgStore {
    /// Done, failed or held jobs found under one of `roots` whose source has not been disposed
    /// of yet, oldest first, at most `limit`. Only this node's jobs (another node's source is a
    /// file on its machine, not reachable from here) and the shared folders' jobs this node
    /// ended ([`ENDED_HERE`]: one node disposes of each, so two never move one file).
    pub async fn undisposed(
        &self,
        roots: &[PathBuf],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let roots: Vec<Vec<u8>> = roots.iter().map(|r| path_bytes(r)).collect();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE disposed = 0 \
             AND state IN ('done', 'failed', 'held') AND source_root = ANY($1) \
             AND (node = $2 OR (node IS NULL AND {ENDED_HERE})) ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(roots)
            .bind(self.node().as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .ctx("finding sources to move or delete")?;
        rows.iter().map(decode_job).collect()
    }

    /// A later job for the same source path whose own disposition is still to come: the file
    /// at that path is its business now (a new version, or the same one queued again). The
    /// same path on two machines names two files: a later job of another node does not count,
    /// unless either job is a shared folder's (node NULL), which may be the same file.
    pub async fn later_job_at(&self, id: JobId, path: &Path) -> Result<Option<JobId>, StoreError> {
        let later: Option<i64> = sqlx::query_scalar(
            "SELECT l.id FROM jobs AS l, jobs AS j WHERE j.id = $2 AND l.source_path = $1 \
             AND l.id > $2 AND l.disposed = 0 \
             AND (l.node IS NULL OR j.node IS NULL OR l.node = j.node) \
             ORDER BY l.id LIMIT 1",
        )
        .bind(path_bytes(path))
        .bind(id.0)
        .fetch_optional(self.pool())
        .await
        .ctx(format!("looking for a later job at job {id}'s source"))?;
        Ok(later.map(JobId))
    }

    /// Records that the job's source has been dealt with; `note` (what was done, or why the
    /// file was left alone) goes into the job's events. Guarded: a second call (from this or
    /// another node) does nothing.
    pub async fn mark_disposed(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        let context = format!("recording the disposition of job {id}'s source");
        let mut tx = self.begin(&context).await?;
        mark(&mut tx, id, note, &context).await?;
        tx.commit().await.ctx(context)
    }

    /// Records, before any file is touched, a move of job `id`'s source (see `media::mover`).
    /// `source_moves.job_id` is its primary key: of two nodes moving a shared folder's source
    /// at once, the second one's record fails (before it touches a file).
    pub async fn record_move(&self, id: JobId, plan: &MovePlan) -> Result<(), StoreError> {
        let context = format!("recording the move of job {id}'s source");
        let mut tx = self.begin(&context).await?;
        let inserted = sqlx::query(
            "INSERT INTO source_moves (job_id, source, dest, temp, source_dev, source_ino, \
             size, mtime_ns, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.0)
        .bind(path_bytes(&plan.source))
        .bind(path_bytes(&plan.dest))
        .bind(path_bytes(&plan.temp))
        // The u64s' bits, as in `jobs.source_dev`.
        .bind(plan.source_id.dev as i64)
        .bind(plan.source_id.ino as i64)
        .bind(i64::try_from(plan.size).unwrap_or(i64::MAX))
        .bind(plan.mtime_ns)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "a move of job {id}'s source {} is already recorded (another node of \
                         the shared queue is moving it); nothing was moved: it is looked at \
                         again on the next pass",
                        plan.source.display()
                    ),
                });
            }
            other => other.ctx(context.clone())?,
        };
        tx.commit().await.ctx(context)
    }

    /// The recorded move of job `id`'s source that is not settled yet, if any.
    pub async fn pending_move(&self, id: JobId) -> Result<Option<MovePlan>, StoreError> {
        let row = sqlx::query(
            "SELECT job_id, source, dest, temp, source_dev, source_ino, size, mtime_ns \
             FROM source_moves WHERE job_id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await
        .ctx("reading moves in progress")?;
        Ok(row
            .as_ref()
            .map(decode_move)
            .transpose()?
            .map(|(_, plan)| plan))
    }

    /// Every recorded move not settled yet (left by a crash), oldest job first. Only those of
    /// this node's jobs and of the shared folders' jobs it ended (the ones it moves): another
    /// node's move is its own to settle when it starts again.
    pub async fn pending_moves(&self) -> Result<Vec<(JobId, MovePlan)>, StoreError> {
        let sql = format!(
            "SELECT m.job_id, m.source, m.dest, m.temp, m.source_dev, m.source_ino, m.size, \
             m.mtime_ns FROM source_moves AS m JOIN jobs ON jobs.id = m.job_id \
             WHERE jobs.node = $1 OR (jobs.node IS NULL AND {}) ORDER BY m.job_id",
            ENDED_HERE.replace("$2", "$1")
        );
        let rows = sqlx::query(&sql)
            .bind(self.node().as_str())
            .fetch_all(self.pool())
            .await
            .ctx("reading moves in progress")?;
        rows.iter().map(decode_move).collect()
    }

    /// Forgets a move that was undone (nothing of it is left; it is planned again).
    pub async fn clear_move(&self, id: JobId) -> Result<(), StoreError> {
        let context = format!("forgetting the undone move of job {id}'s source");
        let mut tx = self.begin(&context).await?;
        forget_move(&mut tx, id, &context).await?;
        tx.commit().await.ctx(context)
    }

    /// A move carried out: its record goes and the job is marked disposed, in one commit.
    pub async fn finish_move(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        let context = format!("recording the move of job {id}'s source as done");
        let mut tx = self.begin(&context).await?;
        forget_move(&mut tx, id, &context).await?;
        mark(&mut tx, id, note, &context).await?;
        tx.commit().await.ctx(context)
    }
}

/// The guarded `disposed` UPDATE and, when it changed the job and there is a note, its
/// events row (the state is unchanged: from and to are the job's state, read under the
/// UPDATE's row lock; the row's node is the connection's).
async fn mark(
    conn: &mut sqlx::PgConnection,
    id: JobId,
    note: Option<&str>,
    context: &str,
) -> Result<(), StoreError> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET disposed = 1 WHERE id = $1 AND disposed = 0 RETURNING state",
    )
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await
    .ctx(context)?;
    if let (Some(state), Some(note)) = (state, note) {
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
             VALUES ($1, $2, $2, $3, $4, $5)",
        )
        .bind(id.0)
        .bind(state)
        .bind(now_ms())
        .bind(format!("source: {note}"))
        .bind(AGENT)
        .execute(&mut *conn)
        .await
        .ctx(context)?;
    }
    Ok(())
}

/// Deletes the record of job `id`'s source move, inside the caller's transaction.
async fn forget_move(
    conn: &mut sqlx::PgConnection,
    id: JobId,
    context: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM source_moves WHERE job_id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .ctx(context)?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::media::FileId;
    use crate::store::pg::{PgStore, testdb};

    /// A job row written directly (the enqueue is another file's), in `state`, owned by `node`
    /// (`None`: a shared folder's); a done job has a result in `/out`. Its trigger writes the
    /// creation event.
    pub(in crate::store::pg) async fn insert_job(
        store: &PgStore,
        path: &[u8],
        state: &str,
        node: Option<&str>,
    ) -> JobId {
        let done = state == "done";
        let name = path.rsplit(|&b| b == b'/').next().unwrap();
        let out = done.then(|| [b"/out/".as_slice(), name].concat());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (source_path, source_root, output_dir, repair, size, mtime_ns, \
             state, created_at, updated_at, node, output_path, output_sha256) \
             VALUES ($1, $2, $3, 'sr', 10, 1, $4, 1000, 1000, $5, $6, $7) RETURNING id",
        )
        .bind(path)
        .bind(b"/in".as_slice())
        .bind(b"/out".as_slice())
        .bind(state)
        .bind(node)
        .bind(out)
        .bind(done.then_some("ab".repeat(32)))
        .fetch_one(store.pool())
        .await
        .unwrap();
        JobId(id)
    }

    /// Two nodes on one fresh database.
    pub(in crate::store::pg) async fn two_nodes() -> Option<(PgStore, PgStore, tempfile::TempDir)> {
        let url = testdb::fresh().await?;
        let dir = tempfile::tempdir().unwrap();
        let a = PgStore::open(&url, "node-a".parse().unwrap(), dir.path());
        let a = a.await.unwrap();
        let b = PgStore::open(&url, "node-b".parse().unwrap(), dir.path());
        Some((a, b.await.unwrap(), dir))
    }

    /// The job's events after its creation: (from, to, detail, agent, node).
    type Row5 = (
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    async fn notes(store: &PgStore, id: JobId) -> Vec<Row5> {
        sqlx::query_as(
            "SELECT from_state, to_state, detail, agent, node FROM events \
             WHERE job_id = $1 AND from_state IS NOT NULL ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(store.pool())
        .await
        .unwrap()
    }

    fn plan(n: u8) -> MovePlan {
        MovePlan {
            source: PathBuf::from(format!("/in/{n}.jpg")),
            dest: PathBuf::from(format!("/done/{n}.jpg")),
            temp: PathBuf::from(format!("/done/.hili-tmp-{n}")),
            // Above i64::MAX: stored as the bits, read back whole.
            source_id: FileId {
                dev: u64::MAX - 1,
                ino: u64::from(n),
            },
            size: 12_345,
            mtime_ns: -7,
        }
    }

    #[tokio::test]
    async fn undisposed_lists_finished_jobs_this_node_can_reach() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let roots = [PathBuf::from("/in")];
        let mine = insert_job(&a, b"/in/1.jpg", "done", Some("node-a")).await;
        let shared = insert_job(&a, b"/in/2.jpg", "failed", None).await;
        let theirs = insert_job(&b, b"/in/3.jpg", "held", Some("node-b")).await;
        insert_job(&a, b"/in/4.jpg", "queued", Some("node-a")).await;
        // A shared folder's job node b ended (its creation row here stands for that move).
        let shared_b = insert_job(&b, b"/in/5.jpg", "done", None).await;
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        // Each shared job is disposed of by the node that ended it, never by two.
        assert_eq!(ids(a.undisposed(&roots, 10).await.unwrap()), [mine, shared]);
        assert_eq!(
            ids(b.undisposed(&roots, 10).await.unwrap()),
            [theirs, shared_b]
        );
        assert_eq!(ids(a.undisposed(&roots, 1).await.unwrap()), [mine]);
        assert!(a.undisposed(&[], 10).await.unwrap().is_empty());
        let other = [PathBuf::from("/elsewhere"), PathBuf::from("/x")];
        assert!(a.undisposed(&other, 10).await.unwrap().is_empty());
        a.mark_disposed(mine, None).await.unwrap();
        assert_eq!(ids(a.undisposed(&roots, 10).await.unwrap()), [shared]);
    }

    #[tokio::test]
    async fn a_later_job_counts_only_where_it_may_be_the_same_file() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let p = Path::new("/in/1.jpg");
        let first = insert_job(&a, b"/in/1.jpg", "done", Some("node-a")).await;
        insert_job(&a, b"/in/other.jpg", "queued", Some("node-a")).await;
        let on_b = insert_job(&b, b"/in/1.jpg", "queued", Some("node-b")).await;
        assert_eq!(a.later_job_at(first, p).await.unwrap(), None);
        // A shared folder's job may name the same file.
        let shared = insert_job(&b, b"/in/1.jpg", "queued", None).await;
        assert_eq!(a.later_job_at(first, p).await.unwrap(), Some(shared));
        assert_eq!(b.later_job_at(on_b, p).await.unwrap(), Some(shared));
        a.mark_disposed(shared, None).await.unwrap();
        assert_eq!(a.later_job_at(first, p).await.unwrap(), None);
        let again = insert_job(&a, b"/in/1.jpg", "queued", Some("node-a")).await;
        assert_eq!(a.later_job_at(first, p).await.unwrap(), Some(again));
        assert_eq!(a.later_job_at(again, p).await.unwrap(), None);
    }

    #[tokio::test]
    async fn marking_disposed_writes_one_note_even_when_two_nodes_race() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let id = insert_job(&a, b"/in/1.jpg", "held", None).await;
        let (ra, rb) = tokio::join!(
            a.mark_disposed(id, Some("deleted /in/1.jpg")),
            b.mark_disposed(id, Some("deleted /in/1.jpg"))
        );
        ra.unwrap();
        rb.unwrap();
        let rows = notes(&a, id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (from, to, detail, agent, node) = &rows[0];
        assert_eq!((from.as_deref(), to.as_str()), (Some("held"), "held"));
        assert_eq!(detail.as_deref(), Some("source: deleted /in/1.jpg"));
        assert_eq!(agent.as_deref(), Some(AGENT));
        assert!(matches!(node.as_deref(), Some("node-a" | "node-b")));
        // Without a note: marked, nothing written.
        let quiet = insert_job(&a, b"/in/2.jpg", "done", None).await;
        a.mark_disposed(quiet, None).await.unwrap();
        assert!(notes(&a, quiet).await.is_empty());
        assert!(
            a.undisposed(&[PathBuf::from("/in")], 9)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_recorded_move_is_read_back_then_finished_or_cleared() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let mine = insert_job(&a, b"/in/1.jpg", "done", Some("node-a")).await;
        let shared = insert_job(&a, b"/in/2.jpg", "failed", None).await;
        assert_eq!(a.pending_move(mine).await.unwrap(), None);
        a.record_move(mine, &plan(1)).await.unwrap();
        a.record_move(shared, &plan(2)).await.unwrap();
        assert_eq!(a.pending_move(mine).await.unwrap(), Some(plan(1)));
        let all = a.pending_moves().await.unwrap();
        assert_eq!(all, [(mine, plan(1)), (shared, plan(2))]);
        // Node b cannot reach node a's files, and the shared folder's job is node a's to move
        // (it ended it): nothing is b's to settle.
        assert_eq!(b.pending_moves().await.unwrap(), []);
        // A second record (another node moving the same source) is refused.
        let err = b.record_move(shared, &plan(3)).await.unwrap_err();
        assert!(err.to_string().contains("another node"), "{err}");
        assert_eq!(a.pending_move(shared).await.unwrap(), Some(plan(2)));

        a.clear_move(shared).await.unwrap();
        assert_eq!(a.pending_move(shared).await.unwrap(), None);
        // Cleared: the source is undisposed again, for node a (which ended the job).
        assert_eq!(
            a.undisposed(&[PathBuf::from("/in")], 9)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect::<Vec<_>>(),
            [mine, shared]
        );

        a.finish_move(mine, Some("moved /in/1.jpg to /done/1.jpg"))
            .await
            .unwrap();
        assert!(a.pending_moves().await.unwrap().is_empty());
        let rows = notes(&a, mine).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].2.as_deref(),
            Some("source: moved /in/1.jpg to /done/1.jpg")
        );
        assert_eq!(rows[0].4.as_deref(), Some("node-a"));
        let left = a.undisposed(&[PathBuf::from("/in")], 9).await.unwrap();
        assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), [shared]);
    }
}
