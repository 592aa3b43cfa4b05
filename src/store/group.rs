//! Group commit for guarded writes. Every write of this process runs on one connection, and
//! with `synchronous=FULL` each COMMIT waits for the disk. When several tasks want to write at
//! once (uploads, polls and downloads of different jobs), the first to get the connection runs
//! every write queued so far in ONE `BEGIN IMMEDIATE … COMMIT`: one wait for the disk instead
//! of one each. Each write is still its own guarded UPDATE with its events row, and no caller
//! hears "done" before the COMMIT that made its write durable has returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::Row;
use tokio::sync::oneshot;

use super::error::SqlContext;
use super::sql::{Val, bind_val};
use super::{Conn, StoreError};

/// What a write's closing `SELECT changes() = 1, state …` reported: `None` when the job does
/// not exist, else whether the UPDATE changed it and the state it is in.
pub(crate) type Report = Option<(bool, String)>;

/// One guarded write waiting for its turn.
struct Pending {
    /// The statements without BEGIN/COMMIT; the last one is the one-row report.
    body: String,
    binds: Vec<Val>,
    context: String,
    reply: oneshot::Sender<Result<Report, StoreError>>,
    /// Run even if its caller gave up waiting; see [`WriteQueue::push`].
    keep: bool,
}

/// The writes waiting for the connection, oldest first.
#[derive(Default)]
pub(crate) struct WriteQueue {
    waiting: Mutex<Vec<Pending>>,
    /// Groups of two or more writes committed together (for tests and diagnostics).
    groups: AtomicU64,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteQueue({} waiting)", self.lock().len())
    }
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // Plain data: a panic elsewhere cannot leave it half-changed.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many groups of two or more writes have been committed together.
    pub(crate) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Queues a write; the receiver answers once it has been committed (or has failed).
    ///
    /// A write whose caller stops waiting (a task cancelled or abandoned at shutdown) is
    /// normally dropped: nobody will act on it. With `keep` it is run anyway, by the next
    /// writer or at [`SqliteStore::close`](super::Store::close): that is for facts the service has
    /// already acted on, such as an upload's answer (the credit is spent; without the mdf on
    /// record the paid result would be lost).
    pub(crate) fn push(
        &self,
        body: String,
        binds: Vec<Val>,
        context: &str,
        keep: bool,
    ) -> oneshot::Receiver<Result<Report, StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.lock().push(Pending {
            body,
            binds,
            context: context.to_string(),
            reply,
            keep,
        });
        rx
    }

    /// The writes to run now: everything queued so far but those nobody wants any more.
    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .filter(|p| p.keep || !p.reply.is_closed())
            .collect()
    }

    /// Called with the connection held: runs everything queued so far, in the background so
    /// that a cancelled caller cannot abandon the others' writes half-way. When the queue is
    /// empty an earlier holder has already run (and answered) this caller's write.
    pub(crate) fn run_queued(self: &Arc<Self>, conn: Conn) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        tokio::spawn(run(self.clone(), conn, batch));
    }

    /// Runs what is still queued (kept writes whose callers were abandoned) and returns once it
    /// is committed: the last thing before the connection closes.
    pub(crate) async fn flush(self: &Arc<Self>, conn: Conn) {
        let batch = self.take();
        if !batch.is_empty() {
            run(self.clone(), conn, batch).await;
        }
    }
}

async fn run(queue: Arc<WriteQueue>, mut conn: Conn, batch: Vec<Pending>) {
    if batch.len() > 1 {
        match commit(&mut conn, &batch).await {
            Ok(outcomes) => {
                queue.groups.fetch_add(1, Ordering::Relaxed);
                for (p, r) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(r);
                }
                return;
            }
            // The connection could not even be rolled back: every write fails alike, and the
            // next user of the connection rolls back first (see `Store::conn`).
            Err(e) if conn.tx_open() => {
                for p in batch {
                    let source = sqlx::Error::Protocol(format!("group commit failed: {e}"));
                    let _ = p.reply.send(Err(source).ctx(&p.context));
                }
                return;
            }
            // Nothing of the group was committed: each write gets its own transaction, so one
            // bad write cannot fail the others.
            Err(e) => tracing::debug!("group commit failed ({e}); writing one by one"),
        }
    }
    for p in batch {
        let r = match commit(&mut conn, std::slice::from_ref(&p)).await {
            // One write, one outcome.
            Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| {
                Err(StoreError::Invalid {
                    detail: format!("{}: the write reported no outcome", p.context),
                })
            }),
            Err(e) => Err(e),
        };
        let _ = p.reply.send(r);
    }
}

fn query<'q>(
    sql: &'q str,
    binds: &[Val],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    binds.iter().fold(sqlx::query(sql), bind_val)
}

fn report(row: &sqlx::sqlite::SqliteRow, context: &str) -> Result<Report, StoreError> {
    let state: Option<String> = row.try_get(1).ctx(context)?;
    match state {
        None => Ok(None),
        Some(s) => Ok(Some((row.try_get::<bool, _>(0).ctx(context)?, s))),
    }
}

/// Every write of `batch` in one transaction, in order, as ONE batch (one trip to SQLite's
/// thread). `Ok` once committed, with each write's outcome; `Err` when none was written (and
/// the transaction was rolled back, unless `tx_open` still says otherwise).
async fn commit(
    conn: &mut Conn,
    batch: &[Pending],
) -> Result<Vec<Result<Report, StoreError>>, StoreError> {
    let mut sql = String::from("BEGIN IMMEDIATE");
    for p in batch {
        sql.push_str("; ");
        sql.push_str(&p.body);
    }
    sql.push_str("; COMMIT");
    let binds: Vec<Val> = batch.iter().flat_map(|p| p.binds.iter().cloned()).collect();
    conn.set_open_tx(true);
    let rows = match query(&sql, &binds).fetch_all(&mut **conn).await {
        Ok(rows) => rows,
        Err(e) => {
            let _ = conn.roll_back().await;
            return Err(e).ctx(match batch {
                [one] => one.context.as_str(),
                _ => "committing a group of queued writes",
            });
        }
    };
    conn.set_open_tx(false);
    // Each write ends in a one-row report, so the rows line up with the writes.
    if rows.len() != batch.len() {
        let detail = format!(
            "a group of {} writes committed but reported {} rows; re-read the jobs",
            batch.len(),
            rows.len()
        );
        return Ok(batch
            .iter()
            .map(|_| {
                Err(StoreError::Invalid {
                    detail: detail.clone(),
                })
            })
            .collect());
    }
    Ok(rows
        .iter()
        .zip(batch)
        .map(|(r, p)| report(r, &p.context))
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::store::JobStore;

    use crate::store::sql::Set;
    use crate::store::{EnqueueOutcome, JobId, NewJob, SqliteStore, State, StoreError, Uploaded};

    async fn store_with(n: usize) -> (tempfile::TempDir, SqliteStore, Vec<JobId>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("open");
        let jobs = (0..n)
            .map(|i| {
                NewJob::sample(
                    std::path::Path::new("/in"),
                    &format!("{i}.jpg"),
                    std::path::Path::new("/out"),
                )
            })
            .collect();
        let ids = store
            .enqueue_many(jobs)
            .await
            .expect("enqueue")
            .into_iter()
            .map(|o| match o {
                EnqueueOutcome::Queued(id) => id,
                other => panic!("not queued: {other:?}"),
            })
            .collect();
        (dir, store, ids)
    }

    /// Holds the writing connection while `n` writes queue behind it, then lets them go.
    async fn queued_while_busy<F, Fut>(
        store: &SqliteStore,
        n: usize,
        write: F,
    ) -> Vec<Result<(), StoreError>>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let busy = store.conn("test").await.expect("conn");
        let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(write(i))).collect();
        // Every write is queued (each task has pushed and waits for the connection).
        while store.writes.lock().len() < n {
            tokio::task::yield_now().await;
        }
        drop(busy);
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }

    #[tokio::test]
    async fn writes_that_queue_together_commit_together_each_with_its_own_outcome() {
        let (_dir, store, ids) = store_with(4).await;
        // Job 3 is already past queued: its write must conflict and write nothing.
        store.begin_upload(ids[3], 9).await.expect("upload");
        let results = queued_while_busy(&store, 4, |i| {
            let (store, id) = (store.clone(), ids[i]);
            async move { store.begin_upload(id, 10 + i as u64).await }
        })
        .await;
        assert_eq!(
            store.writes.groups(),
            1,
            "the four writes shared one commit"
        );
        for (i, r) in results.iter().enumerate().take(3) {
            assert!(r.is_ok(), "write {i}: {r:?}");
            let job = store.get(ids[i]).await.expect("get").expect("job");
            assert_eq!(job.state(), State::Uploading);
            assert_eq!(job.credits_before, Some(10 + i as u64));
            assert_eq!(store.events(ids[i]).await.expect("events").len(), 2);
        }
        assert!(
            matches!(
                results[3],
                Err(StoreError::Conflict {
                    found: State::Uploading,
                    ..
                })
            ),
            "{:?}",
            results[3]
        );
        let job3 = store.get(ids[3]).await.expect("get").expect("job");
        assert_eq!(
            job3.credits_before,
            Some(9),
            "the stale write changed nothing"
        );
        assert_eq!(store.events(ids[3]).await.expect("events").len(), 2);
    }

    #[tokio::test]
    async fn a_failing_write_in_a_group_fails_alone() {
        let (_dir, store, ids) = store_with(3).await;
        // The middle write breaks a constraint (it would give job 2 the id of job 1).
        assert_eq!(ids[0].0, 1, "the first job has id 1");
        let results = queued_while_busy(&store, 3, |i| {
            let (store, id) = (store.clone(), ids[i]);
            async move {
                match i {
                    1 => {
                        let sets = [Set::Raw("id = 1")];
                        store.update_in(id, State::Queued, &sets, "test").await
                    }
                    _ => store.begin_upload(id, 5).await,
                }
            }
        })
        .await;
        assert!(
            matches!(results[1], Err(StoreError::Sql { .. })),
            "{:?}",
            results[1]
        );
        assert_eq!(store.writes.groups(), 0, "the group was rolled back");
        for i in [0, 2] {
            assert!(results[i].is_ok(), "write {i}: {:?}", results[i]);
            let job = store.get(ids[i]).await.expect("get").expect("job");
            assert_eq!(job.state(), State::Uploading, "job {i}");
        }
        let job1 = store.get(ids[1]).await.expect("get").expect("job");
        assert_eq!(job1.state(), State::Queued);
    }

    #[tokio::test]
    async fn a_write_whose_caller_gave_up_before_its_turn_is_not_run() {
        let (_dir, store, ids) = store_with(2).await;
        let busy = store.conn("test").await.expect("conn");
        let write = {
            let (store, id) = (store.clone(), ids[0]);
            tokio::spawn(async move { store.begin_upload(id, 3).await })
        };
        while store.writes.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        write.abort(); // e.g. shut down while waiting for the connection
        let _ = write.await;
        drop(busy);
        // The next write runs the queue, and leaves out the abandoned one.
        store.begin_upload(ids[1], 3).await.expect("a later write");
        let job = store.get(ids[0]).await.expect("get").expect("job");
        assert_eq!(job.state(), State::Queued);
        assert_eq!(store.events(ids[0]).await.expect("events").len(), 1);
        assert!(store.writes.lock().is_empty());
    }

    #[tokio::test]
    async fn an_upload_answer_whose_caller_was_abandoned_is_still_committed_by_close() {
        let (dir, store, ids) = store_with(2).await;
        let (answered, intent) = (ids[0], ids[1]);
        store.begin_upload(answered, 3).await.expect("intent");
        let busy = store.conn("test").await.expect("conn");
        let answer = {
            let store = store.clone();
            tokio::spawn(async move {
                let answer = Uploaded {
                    mdf: "m1",
                    img_url: "https://x/1.jpg",
                    first_poll_at: None,
                    sent_sha256: None,
                };
                store.queue_uploaded(answered, &answer)?.committed().await
            })
        };
        let never_sent = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_upload(intent, 3).await })
        };
        while store.writes.lock().len() < 2 {
            tokio::task::yield_now().await;
        }
        // The shutdown grace is over: both tasks are abandoned while their writes wait.
        answer.abort();
        never_sent.abort();
        let _ = (answer.await, never_sent.await);
        drop(busy);
        store.close().await;

        let store = SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("reopen");
        let job = store.get(answered).await.expect("get").expect("job");
        assert_eq!(
            (job.state(), job.mdf(), job.credit_spent),
            (State::Processing, Some("m1"), true),
            "the paid answer is on record"
        );
        let job = store.get(intent).await.expect("get").expect("job");
        assert_eq!(
            job.state(),
            State::Queued,
            "an abandoned intent is not written"
        );
    }
}
