//! Jobs, epochs and second stores for the tests of the transitions.

use std::time::Duration;

use crate::store::PgStore;
use crate::store::jobs::{JOB_COLUMNS, decode_event, decode_job};
use crate::store::pg::testdb;
use crate::store::{EpochId, Event, Job, JobId};

/// A SHA-256 as the store keeps it, different for each `n`.
pub(crate) fn sha(n: u32) -> String {
    format!("{n:064x}")
}

/// A queued job with this content hash and colour.
pub(crate) async fn job(store: &PgStore, sha: Option<&str>, rgb: Option<&str>) -> JobId {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (source_path, source_root, output_dir, repair, rgb, size, \
         mtime_ns, content_sha256, state, created_at, updated_at) VALUES \
         ('\\x2f696e2f612e6a7067', '\\x2f696e', '\\x2f6f7574', 'sr', $1, 10, 1, $2, \
         'queued', 0, 0) RETURNING id",
    )
    .bind(rgb)
    .bind(sha)
    .fetch_one(store.pool())
    .await
    .expect("insert job");
    JobId(id)
}

pub(crate) async fn read(store: &PgStore, id: JobId) -> Job {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id.0)
        .fetch_one(store.pool())
        .await
        .expect("read job");
    decode_job(&row).expect("decode job")
}

pub(crate) async fn events(store: &PgStore, id: JobId) -> Vec<Event> {
    let rows = sqlx::query(
        "SELECT id, job_id, from_state, to_state, at, detail FROM events \
         WHERE job_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(store.pool())
    .await
    .expect("read events");
    rows.iter()
        .map(|r| decode_event(r).expect("decode event"))
        .collect()
}

/// The node holding the job's lease, and until when.
pub(crate) async fn lease(store: &PgStore, id: JobId) -> (Option<String>, Option<i64>) {
    sqlx::query_as("SELECT lease_node, lease_until FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_one(store.pool())
        .await
        .expect("read lease")
}

/// A new open credit epoch.
pub(crate) async fn epoch(store: &PgStore) -> EpochId {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO credit_epochs (opened_at, start_credits, after_event) \
         VALUES (0, 100, 0) RETURNING id",
    )
    .fetch_one(store.pool())
    .await
    .expect("insert epoch");
    EpochId(id)
}

/// Two nodes on one fresh database (`None`: no test server).
pub(crate) async fn two_stores() -> Option<(PgStore, PgStore, tempfile::TempDir)> {
    let url = testdb::fresh().await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |node: &str| {
        let node = node.parse().expect("node name");
        PgStore::open(&url, node, dir.path())
    };
    let a = open("node-a").await.expect("open a");
    let b = open("node-b").await.expect("open b");
    Some((a, b, dir))
}

/// Returns once `n` sessions of this database wait for a lock (bounded: 10 s).
pub(crate) async fn until_waiting(store: &PgStore, n: i64) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .expect("read activity");
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("after 10 s, fewer than {n} sessions of the test database wait for a lock");
}
