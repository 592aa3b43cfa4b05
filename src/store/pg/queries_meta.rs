//! Facts about the shared queue as a whole (the PostgreSQL side of `store/meta.rs`,
//! `store/tally.rs`, `store/runs.rs` and the outcome count of `store/schedule.rs`): its id,
//! where its jobs read and write, what a run did, why uploads are paused and when the last
//! run started.
//!
//! The pause note and the start of the last run are each NODE's own: every node runs its own
//! `hili run`, and `hili status` / `hili report --last-run` on a node speak of that run. So
//! their `meta` keys carry the node's name (`pause_note:scan-1`, `pause_note_at:scan-1`,
//! `run_started_at:scan-1`). The queue id (`queue_id`) is the queue's, shared by every node.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;

use super::PgStore;
use super::queries::count_states;
use crate::store::error::SqlContext;
use crate::store::jobs::bytes_path;
use crate::store::{JobFolders, RunTally, State, StoreError, now_ms};

/// The `meta` keys (before the node's suffix) of the pause note, its instant, and the start of
/// the node's latest run; the same names as on SQLite.
const PAUSE_NOTE: &str = "pause_note";
const PAUSE_NOTE_AT: &str = "pause_note_at";
const RUN_STARTED: &str = "run_started_at";

/// The distinct folders of job rows read one at a time. A folder already seen is skipped by
/// its bytes (cheaper than comparing paths component by component); NUL cannot occur in a
/// path, so it separates the three.
#[derive(Default)]
struct FolderSet {
    seen: HashSet<Vec<u8>>,
    folders: BTreeSet<JobFolders>,
}

impl FolderSet {
    fn add(&mut self, output_dir: Vec<u8>, source_root: Vec<u8>, source: &[u8]) {
        let source_dir = Path::new(OsStr::from_bytes(source))
            .parent()
            .unwrap_or(Path::new(""));
        let key = [&output_dir, &source_root, source_dir.as_os_str().as_bytes()].join(&0u8);
        if self.seen.insert(key) {
            self.folders.insert(JobFolders {
                output_dir: bytes_path(output_dir),
                source_root: bytes_path(source_root),
                source_dir: source_dir.to_path_buf(),
            });
        }
    }
}

impl PgStore {
    /// `key` as this node's own `meta` key (see the module documentation).
    fn node_key(&self, key: &str) -> String {
        format!("{key}:{}", self.node())
    }

    /// How many jobs reached each final state (done, failed, held, skipped) since `since_ms`,
    /// on any node. Notes (rows whose state does not change) are no outcome.
    pub async fn outcomes_since(&self, since_ms: i64) -> Result<BTreeMap<State, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT to_state, COUNT(DISTINCT job_id) FROM events \
             WHERE at >= $1 AND to_state IN ('done', 'failed', 'held', 'skipped') \
             AND from_state IS DISTINCT FROM to_state GROUP BY to_state",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await
        .ctx("counting this run's outcomes")?;
        let mut out = BTreeMap::new();
        count_states(&rows, &mut out, |_| {}, "reading this run's outcomes")?;
        Ok(out)
    }

    /// The newest event's id (0 for an empty table): a run takes it as its starting mark.
    /// On PostgreSQL ids are handed out when a row is inserted, not when it commits, so an
    /// event another node was committing at this very moment may carry a lower id and be
    /// left out of [`PgStore::run_tally`]: it belongs to the moment the run began.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(self.pool())
            .await
            .ctx("reading the newest event")?;
        Ok(id.unwrap_or(0))
    }

    /// This run so far: the jobs that reached each final state in events after `after_event`,
    /// and the jobs still queued or in flight (every node's). One statement, so both come from
    /// the same snapshot: a job that ends is never counted twice, nor lost. Notes are no
    /// outcome.
    pub async fn run_tally(&self, after_event: i64) -> Result<RunTally, StoreError> {
        let rows = sqlx::query(
            "SELECT to_state, COUNT(DISTINCT job_id) FROM events \
             WHERE id > $1 AND to_state IN ('done', 'failed', 'held', 'skipped') \
             AND from_state IS DISTINCT FROM to_state GROUP BY to_state \
             UNION ALL SELECT 'active', COUNT(*) FROM jobs \
             WHERE state IN ('queued', 'uploading', 'processing', 'downloading')",
        )
        .bind(after_event)
        .fetch_all(self.pool())
        .await
        .ctx("counting this run's jobs")?;
        let mut tally = RunTally::default();
        let mut active = 0;
        count_states(
            &rows,
            &mut tally.ended,
            |n| active = n,
            "reading this run's jobs",
        )?;
        tally.active = active;
        Ok(tally)
    }

    /// This queue's random id (32 hex digits), made with the schema and shared by its nodes.
    pub async fn queue_id(&self) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'queue_id'")
            .fetch_one(self.pool())
            .await
            .ctx("reading the queue id")
    }

    /// Every distinct output directory jobs were queued with (by any node).
    pub async fn output_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT DISTINCT output_dir FROM jobs")
            .fetch_all(self.pool())
            .await
            .ctx("listing output directories")?;
        Ok(rows.into_iter().map(bytes_path).collect())
    }

    /// The distinct [`JobFolders`] of the jobs in `states` (every node's). Rows are streamed
    /// and only their three paths read, so a queue of 100,000 jobs in a few hundred folders
    /// costs a few hundred entries of memory.
    pub async fn job_folders(&self, states: &[State]) -> Result<BTreeSet<JobFolders>, StoreError> {
        let names: Vec<String> = states.iter().map(|s| s.as_str().to_string()).collect();
        let context = "listing the jobs' folders";
        let mut rows = sqlx::query_as::<_, (Vec<u8>, Vec<u8>, Vec<u8>)>(
            "SELECT output_dir, source_root, source_path FROM jobs WHERE state = ANY($1)",
        )
        .bind(names)
        .fetch(self.pool());
        let mut set = FolderSet::default();
        while let Some((output_dir, source_root, source)) = rows.try_next().await.ctx(context)? {
            set.add(output_dir, source_root, &source);
        }
        Ok(set.folders)
    }

    /// Records why this node's uploads are paused now (`None`: they are not), so `hili status`
    /// in another process can say it. One statement, so the note and its instant change
    /// together.
    pub async fn set_pause_note(&self, note: Option<&str>) -> Result<(), StoreError> {
        let context = "recording why uploads are paused";
        let (key, at_key) = (self.node_key(PAUSE_NOTE), self.node_key(PAUSE_NOTE_AT));
        let q = match note {
            Some(text) => sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $3), ($2, $4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(at_key)
            .bind(text)
            .bind(now_ms().to_string()),
            None => sqlx::query("DELETE FROM meta WHERE key IN ($1, $2)")
                .bind(key)
                .bind(at_key),
        };
        q.execute(self.pool()).await.ctx(context)?;
        Ok(())
    }

    /// Why this node's uploads were paused by its running `hili run`, and since when (unix ms).
    pub async fn pause_note(&self) -> Result<Option<(i64, String)>, StoreError> {
        let context = "reading why uploads are paused";
        let (key, at_key) = (self.node_key(PAUSE_NOTE), self.node_key(PAUSE_NOTE_AT));
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE key IN ($1, $2)")
                .bind(&key)
                .bind(&at_key)
                .fetch_all(self.pool())
                .await
                .ctx(context)?;
        let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1.clone());
        Ok(get(&key).map(|text| {
            let at = get(&at_key).and_then(|a| a.parse().ok()).unwrap_or(0);
            (at, text)
        }))
    }

    /// Records that this node's run starts now (before its scan of watch folders), so `hili
    /// report --last-run` can list the jobs it touched. Returns the instant recorded.
    pub async fn mark_run_started(&self) -> Result<i64, StoreError> {
        let at = now_ms();
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(self.node_key(RUN_STARTED))
        .bind(at.to_string())
        .execute(self.pool())
        .await
        .ctx("recording the start of this run")?;
        Ok(at)
    }

    /// When this node's latest run started (unix ms); `None` when it recorded none here.
    pub async fn last_run_started(&self) -> Result<Option<i64>, StoreError> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(self.node_key(RUN_STARTED))
            .fetch_optional(self.pool())
            .await
            .ctx("reading when the last run started")?;
        Ok(value.and_then(|v| v.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobId;
    use crate::store::pg::queries::insert_job;
    use crate::store::pg::{test_store, testdb};

    /// Writes an events row for `job` (as a transition would, without moving the job).
    async fn event(store: &PgStore, job: JobId, from: &str, to: &str, at: i64) {
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(job.0)
        .bind(from)
        .bind(to)
        .bind(at)
        .execute(store.pool())
        .await
        .expect("insert an event");
    }

    /// Two nodes on one fresh database (`None`: no test server).
    async fn two_nodes() -> Option<(PgStore, PgStore, tempfile::TempDir)> {
        let url = testdb::fresh().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |name: &str| PgStore::open(&url, name.parse().expect("node"), dir.path());
        let (a, b) = (
            open("scan-1").await.expect("open"),
            open("scan-2").await.expect("open"),
        );
        Some((a, b, dir))
    }

    #[tokio::test]
    async fn a_run_counts_the_jobs_that_ended_after_its_mark_and_those_still_active() {
        let Some((store, _dir)) = test_store("node-a").await else {
            return;
        };
        assert_eq!(store.last_event_id().await.unwrap(), 0);
        let before = insert_job(&store, "old.jpg", "state = 'done'").await;
        event(&store, before, "downloading", "done", 50).await;
        let mark = store.last_event_id().await.unwrap();
        assert!(mark > 0);

        let a = insert_job(&store, "a.jpg", "state = 'done'").await;
        let b = insert_job(&store, "b.jpg", "state = 'failed'").await;
        insert_job(&store, "c.jpg", "").await;
        insert_job(&store, "d.jpg", "state = 'processing', mdf = 'm'").await;
        event(&store, a, "downloading", "done", 100).await;
        // A note (no change of state) is no outcome; a job ending twice counts once.
        event(&store, a, "done", "done", 101).await;
        event(&store, b, "queued", "failed", 102).await;
        event(&store, b, "failed", "queued", 103).await;
        event(&store, b, "queued", "failed", 104).await;

        let tally = store.run_tally(mark).await.unwrap();
        let ended: BTreeMap<State, u64> = [(State::Done, 1), (State::Failed, 1)].into();
        assert_eq!(tally.ended, ended);
        assert_eq!(tally.active, 2);
        assert_eq!(store.outcomes_since(100).await.unwrap(), ended);
        let with_old: BTreeMap<State, u64> = [(State::Done, 2), (State::Failed, 1)].into();
        assert_eq!(store.outcomes_since(0).await.unwrap(), with_old);
        assert!(store.outcomes_since(105).await.unwrap().is_empty());
        let tally = store
            .run_tally(store.last_event_id().await.unwrap())
            .await
            .unwrap();
        assert!(tally.ended.is_empty());
    }

    #[tokio::test]
    async fn folders_and_output_dirs_are_listed_once_each() {
        let Some((store, _dir)) = test_store("node-a").await else {
            return;
        };
        assert!(store.output_dirs().await.unwrap().is_empty());
        insert_job(&store, "x/a.jpg", "").await;
        insert_job(&store, "x/b.jpg", "state = 'downloading', mdf = 'm'").await;
        insert_job(&store, "y/c.jpg", "state = 'done'").await;
        insert_job(&store, "z/d.jpg", "output_dir = '\\x2f6f32'::bytea").await;
        let mut dirs = store.output_dirs().await.unwrap();
        dirs.sort();
        assert_eq!(dirs, [PathBuf::from("/o2"), PathBuf::from("/out")]);

        let folders = store
            .job_folders(&[State::Queued, State::Downloading])
            .await
            .unwrap();
        let got: Vec<_> = folders
            .iter()
            .map(|f| {
                (
                    f.output_dir.clone(),
                    f.source_root.clone(),
                    f.source_dir.clone(),
                )
            })
            .collect();
        let folder = |out: &str, dir: &str| (out.into(), "/in".into(), dir.into());
        assert_eq!(got, [folder("/o2", "/in/z"), folder("/out", "/in/x")]);
        assert!(store.job_folders(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_queue_id_is_shared_and_pause_notes_and_run_marks_are_each_nodes_own() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let id = a.queue_id().await.unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(b.queue_id().await.unwrap(), id);

        assert_eq!(a.pause_note().await.unwrap(), None);
        let t0 = now_ms();
        a.set_pause_note(Some("no credits left")).await.unwrap();
        let (at, text) = a.pause_note().await.unwrap().expect("a's note");
        assert_eq!(text, "no credits left");
        assert!(at >= t0 && at <= now_ms());
        assert_eq!(b.pause_note().await.unwrap(), None);
        b.set_pause_note(Some("budget spent")).await.unwrap();
        a.set_pause_note(Some("vendor down")).await.unwrap();
        assert_eq!(a.pause_note().await.unwrap().expect("a").1, "vendor down");
        a.set_pause_note(None).await.unwrap();
        assert_eq!(a.pause_note().await.unwrap(), None);
        assert_eq!(b.pause_note().await.unwrap().expect("b").1, "budget spent");

        assert_eq!(a.last_run_started().await.unwrap(), None);
        let first = a.mark_run_started().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = a.mark_run_started().await.unwrap();
        assert!(second > first);
        assert_eq!(a.last_run_started().await.unwrap(), Some(second));
        assert_eq!(b.last_run_started().await.unwrap(), None);
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM meta ORDER BY key")
            .fetch_all(a.pool())
            .await
            .unwrap();
        assert_eq!(
            keys,
            [
                "agent",
                "pause_note:scan-2",
                "pause_note_at:scan-2",
                "queue_id",
                "run_started_at:scan-1"
            ]
        );
    }
}
