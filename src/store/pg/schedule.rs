//! What is due next on the shared queue, claimed for this node in the same statement: paid
//! jobs (polls and downloads) whose lease is free, this node's own or expired (a dead node's),
//! and queued jobs this node can read (its own, or a shared folder's). Each is taken with
//! `FOR UPDATE SKIP LOCKED`, so nodes looking at once never wait on each other or take the
//! same job, and leased to this node (`lease_node`, `lease_until`), which its heartbeat renews
//! while it works the job. The guarded transitions stay the authority: a lease only keeps
//! other nodes from spending requests on a job this node already works.

use sqlx::Row;

use super::PgStore;
use super::fleet::lease_ms;
use crate::store::error::SqlContext;
use crate::store::jobs::decode_job;
use std::collections::BTreeMap;

use crate::store::{DueLimits, DueWork, JobId, State, StoreError, now_ms};

/// The claim; `$6` is this node, `$8` a lease's length. Polls most overdue first (a NULL
/// `next_poll_at`, "at once", first, as on SQLite), downloads oldest result first, uploads in
/// queue order. Another node's expired lease on paid work is taken over only while this node is
/// *steady*: its own heartbeat fresh and unbroken for a lease. After an outage every lease has
/// run out; the nodes coming back renew their own first (their heartbeats) instead of taking
/// each other's work, which its node may have done from memory meanwhile (`pipeline/outage.rs`).
const CLAIM: &str = "\
WITH me AS (SELECT COALESCE(bool_or(heartbeat_at > $1 - $8 AND beating_since <= $1 - $8), \
      false) AS steady FROM nodes WHERE name = $6 AND stopped_at IS NULL), \
  p AS (SELECT id FROM jobs WHERE state = 'processing' \
      AND (next_poll_at IS NULL OR next_poll_at <= $1) AND NOT (id = ANY($5)) \
      AND (lease_node IS NULL OR lease_node = $6 \
           OR (lease_until < $1 AND (SELECT steady FROM me))) \
      ORDER BY next_poll_at NULLS FIRST, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
  d AS (SELECT id FROM jobs WHERE state = 'downloading' AND not_before <= $1 \
      AND NOT (id = ANY($5)) \
      AND (lease_node IS NULL OR lease_node = $6 \
           OR (lease_until < $1 AND (SELECT steady FROM me))) \
      ORDER BY COALESCE(processing_since, 0), id LIMIT $3 FOR UPDATE SKIP LOCKED), \
  u AS (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= $1 \
      AND NOT (id = ANY($5)) AND (node = $6 OR node IS NULL) \
      AND (lease_node IS NULL OR lease_node = $6 OR lease_until < $1) \
      ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
UPDATE jobs SET lease_node = $6, lease_until = $7 \
  WHERE id IN (SELECT id FROM p UNION ALL SELECT id FROM d UNION ALL SELECT id FROM u) \
  RETURNING CASE state WHEN 'processing' THEN 0 WHEN 'downloading' THEN 1 ELSE 2 END \
  AS stage, jobs.*";

/// The earliest instant something may fall due for this node: a poll or download, a queued
/// job of its own, or another node's lease running out (that node may have died).
const NEXT_DUE: &str = "\
SELECT MIN(t) FROM ( \
  SELECT MIN(COALESCE(next_poll_at, 0)) AS t FROM jobs WHERE state = 'processing' \
    AND (lease_node IS NULL OR lease_node = $1 OR lease_until < $2) \
  UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'downloading' \
    AND (lease_node IS NULL OR lease_node = $1 OR lease_until < $2) \
  UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'queued' \
    AND (node = $1 OR node IS NULL) \
  UNION ALL SELECT MIN(lease_until) FROM jobs \
    WHERE state IN ('processing', 'downloading') AND lease_node != $1) AS due";

/// The jobs [`PgStore::counts_here`] counts: `$1` is this node, `$2` now.
const HERE: &str = "\
SELECT state, COUNT(*) FROM jobs WHERE \
  (state = 'queued' AND (node = $1 OR node IS NULL)) \
  OR (state = 'uploading' AND lease_node = $1) \
  OR (state IN ('processing', 'downloading') \
      AND (lease_node IS NULL OR lease_node = $1 OR lease_until < $2)) \
  GROUP BY state";

impl PgStore {
    /// The jobs this node may work on, by state: the queued jobs it can read (its own and the
    /// shared folders'), its uploads, and paid work it holds or whose lease is free (a dead or
    /// departed node's). Another live node's work is not this node's to wait for.
    pub async fn counts_here(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        let context = "counting this node's jobs on the shared queue";
        let rows: Vec<(String, i64)> = sqlx::query_as(HERE)
            .bind(self.node().as_str())
            .bind(now_ms())
            .fetch_all(self.pool())
            .await
            .ctx(context)?;
        let mut out = BTreeMap::new();
        for (state, n) in rows {
            if let Ok(state) = state.parse::<State>() {
                out.insert(state, n.max(0) as u64);
            }
        }
        Ok(out)
    }

    /// See [`JobStore::due_work`](crate::store::JobStore::due_work); the jobs returned are
    /// leased to this node (see the module documentation).
    pub async fn due_work(
        &self,
        now_ms: i64,
        limits: DueLimits,
        skip: &[JobId],
    ) -> Result<DueWork, StoreError> {
        let context = "finding due work on the shared queue";
        let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let skip: Vec<i64> = skip.iter().map(|id| id.0).collect();
        let mut tx = self.begin(context).await?;
        let rows = sqlx::query(CLAIM)
            .bind(now_ms)
            .bind(limit(limits.polls))
            .bind(limit(limits.downloads))
            .bind(limit(limits.uploads))
            .bind(&skip)
            .bind(self.node().as_str())
            .bind(now_ms.saturating_add(lease_ms()))
            .bind(lease_ms())
            .fetch_all(&mut *tx)
            .await
            .ctx(context)?;
        let next_due: Option<i64> = sqlx::query_scalar(NEXT_DUE)
            .bind(self.node().as_str())
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .ctx(context)?;
        tx.commit().await.ctx(context)?;
        let mut work = DueWork {
            next_due_ms: next_due,
            ..DueWork::default()
        };
        for row in &rows {
            let stage: i32 = row.try_get("stage").ctx(context)?;
            work.take(i64::from(stage), decode_job(row)?)?;
        }
        // UPDATE … RETURNING keeps no order: restore each stage's.
        work.sort();
        Ok(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pg::{PgStore, testdb};

    /// Inserts a job row directly (the enqueue operation is tested on its own).
    async fn job(store: &PgStore, state: &str, node: Option<&str>, extra: &str) -> i64 {
        let sql = format!(
            "INSERT INTO jobs (source_path, source_root, output_dir, repair, size, mtime_ns, \
             state, created_at, updated_at, node, mdf, img_url{}) VALUES ('\\x61', '\\x2f', \
             '\\x6f', 'sr', 1, 1, $1, 0, 0, $2, {}, {}{}) RETURNING id",
            if extra.is_empty() {
                ""
            } else {
                ", lease_node, lease_until"
            },
            if state == "queued" { "NULL" } else { "'m'" },
            if state == "queued" { "NULL" } else { "'u'" },
            extra,
        );
        sqlx::query_scalar(&sql)
            .bind(state)
            .bind(node)
            .fetch_one(store.pool())
            .await
            .expect("insert job")
    }

    /// A node's heartbeat row as of `now` = 1000: `steady` (unbroken for longer than a lease)
    /// or just back (its heartbeats resumed at 1000).
    async fn beat(store: &PgStore, name: &str, steady: bool) {
        sqlx::query(
            "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, beating_since) \
             VALUES ($1, 'h', 1, 'v', 0, 1000, $2)",
        )
        .bind(name)
        .bind(if steady { -1_000_000i64 } else { 1000 })
        .execute(store.pool())
        .await
        .expect("insert node");
    }

    fn all() -> DueLimits {
        DueLimits {
            polls: 10,
            downloads: 10,
            uploads: 10,
        }
    }

    #[tokio::test]
    async fn each_node_takes_its_own_queue_shared_jobs_once_and_a_dead_nodes_paid_work() {
        let Some(url) = testdb::fresh().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let a = PgStore::open(&url, "a".parse().unwrap(), dir.path())
            .await
            .unwrap();
        let b = PgStore::open(&url, "b".parse().unwrap(), dir.path())
            .await
            .unwrap();
        beat(&a, "a", true).await;
        beat(&a, "b", true).await;
        let a_own = job(&a, "queued", Some("a"), "").await;
        let b_own = job(&a, "queued", Some("b"), "").await;
        let shared = job(&a, "queued", None, "").await;
        // A paid job leased by a node that stopped renewing (dead) and one by a live node.
        let dead = job(&a, "processing", Some("c"), ", 'c', 5").await;
        let live = job(&a, "processing", Some("c"), ", 'c', 9999999999999").await;

        let wa = a.due_work(1000, all(), &[]).await.unwrap();
        let ids = |w: &DueWork| {
            let mut v: Vec<i64> = w.uploads.iter().map(|j| j.id.0).collect();
            v.extend(w.polls.iter().map(|p| p.job.id.0));
            v
        };
        assert_eq!(ids(&wa), vec![a_own, shared, dead]);
        // b sees its own job; the shared one and the dead node's poll are leased to a now.
        let wb = b.due_work(1000, all(), &[]).await.unwrap();
        assert_eq!(ids(&wb), vec![b_own]);
        assert!(!ids(&wb).contains(&live));
        // The next due instant includes the live node's lease running out.
        assert_eq!(wb.next_due_ms, Some(0));
    }

    #[tokio::test]
    async fn a_node_back_from_an_outage_leaves_expired_leases_alone_until_it_is_steady() {
        let Some(url) = testdb::fresh().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let b = PgStore::open(&url, "b".parse().unwrap(), dir.path())
            .await
            .unwrap();
        let c = PgStore::open(&url, "c".parse().unwrap(), dir.path())
            .await
            .unwrap();
        // After an outage: c's lease ran out, and b's heartbeats only just resumed.
        let polled = job(&b, "processing", Some("c"), ", 'c', 5").await;
        let fetched = job(&b, "downloading", Some("c"), ", 'c', 5").await;
        beat(&b, "b", false).await;
        let paid = |w: &DueWork| w.polls.len() + w.downloads.len();
        assert_eq!(paid(&b.due_work(1000, all(), &[]).await.unwrap()), 0);
        // c itself takes its own work back at once, steady or not.
        beat(&c, "c", false).await;
        let wc = c.due_work(1000, all(), &[]).await.unwrap();
        assert_eq!(wc.polls[0].job.id.0, polled);
        assert_eq!(wc.downloads[0].job.id.0, fetched);
        // A lease later, c silent all along: b takes over.
        sqlx::query("UPDATE jobs SET lease_until = 5")
            .execute(b.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE nodes SET beating_since = -1000000 WHERE name = 'b'")
            .execute(b.pool())
            .await
            .unwrap();
        assert_eq!(paid(&b.due_work(1000, all(), &[]).await.unwrap()), 2);
    }
}
