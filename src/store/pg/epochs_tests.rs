//! Tests of the credit epochs on the shared queue (`epochs.rs`): rolls raced by two nodes, the
//! answers counted by the jobs' epoch, the credits charged, and what the fleet's barrier asks.
//! Job rows are written with SQL here: the tests need jobs in given states and epochs, with
//! given events, whatever the transitions do.

use super::*;
use crate::store::pg::{test_store, testdb};

async fn store_on(url: &str, node: &str, dir: &tempfile::TempDir) -> PgStore {
    PgStore::open(url, node.parse().expect("node name"), dir.path())
        .await
        .expect("open")
}

/// Two nodes on one fresh database (`None`: no test server).
async fn two_nodes() -> Option<(PgStore, PgStore, tempfile::TempDir)> {
    let url = testdb::fresh().await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let a = store_on(&url, "node-a", &dir).await;
    let b = store_on(&url, "node-b", &dir).await;
    Some((a, b, dir))
}

/// A job in `state` under `epoch`, leased by `lease` (its creation event comes from the
/// trigger).
async fn job(store: &PgStore, state: &str, epoch: Option<EpochId>, lease: Option<&str>) -> JobId {
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (source_path, source_root, output_dir, repair, size, mtime_ns, state, \
         created_at, updated_at, epoch, lease_node, lease_until, processing_since) \
         VALUES ('\\x2f612e6a7067', '\\x2f', '\\x2f6f7574', 'sr', 10, 1, $1, $2, $2, $3, $4, $5, \
         CASE WHEN $1 IN ('processing', 'downloading') THEN $2 END) RETURNING id",
    )
    .bind(state)
    .bind(now)
    .bind(epoch.map(|e| e.0))
    .bind(lease)
    .bind(lease.map(|_| now + 10_000))
    .fetch_one(store.pool())
    .await
    .expect("insert job");
    JobId(id)
}

/// An events row of `id` going `from` → `to` at `at`.
async fn event(store: &PgStore, id: JobId, from: &str, to: &str, at: i64) {
    sqlx::query("INSERT INTO events (job_id, from_state, to_state, at) VALUES ($1, $2, $3, $4)")
        .bind(id.0)
        .bind(from)
        .bind(to)
        .bind(at)
        .execute(store.pool())
        .await
        .expect("insert event");
}

/// Sets columns of job `id` (`changes`: an SQL SET list).
async fn set(store: &PgStore, id: JobId, changes: &str) {
    store
        .execute(&format!("UPDATE jobs SET {changes} WHERE id = {id}"))
        .await
        .expect("update job");
}

/// A job of `epoch` whose upload was answered: intent and answer events, now processing.
async fn answered(store: &PgStore, epoch: EpochId) -> JobId {
    let id = job(store, "processing", Some(epoch), None).await;
    event(store, id, "queued", "uploading", now_ms()).await;
    event(store, id, "uploading", "processing", now_ms()).await;
    id
}

fn closing(end: u64, lost: u64, verdict: Verdict) -> Closing {
    Closing {
        end_credits: end,
        lost,
        verdict,
        spent_elsewhere: 0,
    }
}

async fn opened_by(store: &PgStore, id: EpochId) -> Option<String> {
    sqlx::query_scalar("SELECT opened_by FROM credit_epochs WHERE id = $1")
        .bind(id.0)
        .fetch_one(store.pool())
        .await
        .expect("read opened_by")
}

type Rolled = Result<EpochId, StoreError>;

/// Both nodes roll at once: they start while a third connection holds the epochs' lock, so
/// both are past their reads of nothing and waiting when it is let go.
async fn race(a: &PgStore, b: &PgStore, closing: Option<(EpochId, Closing)>) -> (Rolled, Rolled) {
    let mut held = a.begin("holding the epoch lock").await.unwrap();
    sqlx::query(EPOCH_LOCK).execute(&mut *held).await.unwrap();
    let roll = |s: &PgStore| {
        let s = s.clone();
        tokio::spawn(async move { s.roll_epoch(closing, 97).await })
    };
    let (ta, tb) = (roll(a), roll(b));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !ta.is_finished() && !tb.is_finished(),
        "a roll went ahead of the lock"
    );
    held.commit().await.unwrap();
    (ta.await.unwrap(), tb.await.unwrap())
}

#[tokio::test]
async fn two_nodes_racing_to_roll_one_epoch_one_wins() {
    let Some((a, b, _dir)) = two_nodes().await else {
        return;
    };
    // Both see no epoch and open the first at once: one does.
    let (ra, rb) = race(&a, &b, None).await;
    let first = match (ra, rb) {
        (Ok(e), Err(StoreError::Invalid { detail }))
        | (Err(StoreError::Invalid { detail }), Ok(e)) => {
            assert!(
                detail.contains(&format!("epoch {e} was opened by another node")),
                "{detail}"
            );
            e
        }
        other => panic!("expected one opening to win: {other:?}"),
    };
    // Both close it at once and open the next: one does, the other is told and wrote nothing.
    let c = closing(97, 0, Verdict::None);
    let (ra, rb) = race(&a, &b, Some((first, c))).await;
    let (next, winner, detail) = match (ra, rb) {
        (Ok(e), Err(StoreError::Invalid { detail })) => (e, "node-a", detail),
        (Err(StoreError::Invalid { detail }), Ok(e)) => (e, "node-b", detail),
        other => panic!("expected one roll to win: {other:?}"),
    };
    assert!(
        detail.contains(&format!(
            "credit epoch {first} was already closed by another node"
        )) && detail.contains(&format!("epoch {next} is open now")),
        "{detail}"
    );
    assert_eq!(a.open_epoch().await.unwrap().map(|e| e.id), Some(next));
    assert_eq!(opened_by(&a, next).await.as_deref(), Some(winner));
    let epochs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credit_epochs")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(epochs, 2, "the losers wrote no epoch");
    let closed = a.epoch(first).await.unwrap().unwrap();
    assert_eq!(closed.closing, Some(c));
    // One observation per successful roll.
    assert_eq!(a.latest_credits().await.unwrap().map(|(_, n)| n), Some(97));
}

#[tokio::test]
async fn answers_are_counted_by_the_jobs_epoch() {
    let Some((s, _dir)) = test_store("node-a").await else {
        return;
    };
    // A job answered before the first epoch, to be uploaded again in it.
    let again = job(&s, "processing", None, None).await;
    event(&s, again, "queued", "uploading", 1).await;
    event(&s, again, "uploading", "processing", 2).await;
    let e1 = s.roll_epoch(None, 100).await.unwrap();
    let a1 = answered(&s, e1).await;
    let _a2 = answered(&s, e1).await;
    let flying = job(&s, "uploading", Some(e1), Some("node-a")).await;
    // Its second upload, in e1: only this answer counts there.
    set(&s, again, &format!("epoch = {e1}")).await;
    event(&s, again, "processing", "failed", now_ms()).await;
    event(&s, again, "failed", "queued", now_ms()).await;
    event(&s, again, "queued", "uploading", now_ms()).await;
    event(&s, again, "uploading", "processing", now_ms()).await;
    // An answer of a job with no epoch is no epoch's.
    let loose = job(&s, "processing", None, None).await;
    event(&s, loose, "uploading", "processing", now_ms()).await;
    let open = s.open_epoch().await.unwrap().unwrap();
    assert_eq!((open.id, open.start_credits, open.answered), (e1, 100, 3));
    assert_eq!(open.closing, None);
    assert_eq!(s.uploading_in(e1).await.unwrap(), vec![flying]);

    let c = closing(96, 1, Verdict::Ambiguous);
    let e2 = s.roll_epoch(Some((e1, c)), 96).await.unwrap();
    // The lost upload's answer arrives late, after e2 opened: its id is past e2's start, but
    // it is e1's answer, and e1's books were closed with 3.
    set(&s, flying, "state = 'processing'").await;
    event(&s, flying, "uploading", "processing", now_ms()).await;
    // And a job of e1 uploaded again in e2: e1 keeps its count, e2 counts the new answer.
    set(&s, a1, &format!("epoch = {e2}")).await;
    event(&s, a1, "queued", "uploading", now_ms()).await;
    event(&s, a1, "uploading", "processing", now_ms()).await;
    let closed = s.epoch(e1).await.unwrap().unwrap();
    assert_eq!((closed.answered, closed.closing), (3, Some(c)));
    let next = s.epoch(e2).await.unwrap().unwrap();
    assert_eq!((next.start_credits, next.answered), (96, 1));
    assert!(s.uploading_in(e1).await.unwrap().is_empty());
    assert_eq!(s.epoch(EpochId(e2.0 + 1)).await.unwrap(), None);
}

#[tokio::test]
async fn closing_a_closed_epoch_is_refused_and_writes_nothing() {
    let Some((s, _dir)) = test_store("node-a").await else {
        return;
    };
    let e1 = s.roll_epoch(None, 10).await.unwrap();
    let e2 = s
        .roll_epoch(Some((e1, closing(10, 0, Verdict::None))), 10)
        .await
        .unwrap();
    let again = s
        .roll_epoch(Some((e1, closing(9, 0, Verdict::None))), 9)
        .await;
    assert!(
        matches!(&again, Err(StoreError::Invalid { detail }) if detail.contains("already closed")),
        "{again:?}"
    );
    assert_eq!(s.open_epoch().await.unwrap().map(|e| e.id), Some(e2));
    assert_eq!(s.latest_credits().await.unwrap().map(|(_, n)| n), Some(10));
}

#[tokio::test]
async fn charged_since_counts_the_charging_edges_from_the_instant() {
    let Some((s, _dir)) = test_store("node-a").await else {
        return;
    };
    let j = job(&s, "processing", None, None).await;
    event(&s, j, "uploading", "processing", 999).await; // before
    event(&s, j, "uploading", "processing", 1000).await;
    event(&s, j, "queued", "processing", 1500).await; // an adopted answer
    event(&s, j, "failed", "processing", 2000).await;
    event(&s, j, "uploading", "held", 3000).await; // held after a lost answer
    event(&s, j, "held", "processing", 3000).await; // adopted when held: already counted
    event(&s, j, "processing", "downloading", 3000).await;
    event(&s, j, "queued", "uploading", 3000).await;
    assert_eq!(s.charged_since(1000).await.unwrap(), 4);
    assert_eq!(s.charged_since(3001).await.unwrap(), 0);
    assert_eq!(
        charging_pairs(),
        [
            "uploading>processing",
            "queued>processing",
            "failed>processing",
            "uploading>held"
        ]
    );
}

#[tokio::test]
async fn credits_readings_spending_and_paid_results() {
    let Some((s, _dir)) = test_store("node-a").await else {
        return;
    };
    assert_eq!(s.latest_credits().await.unwrap(), None);
    assert_eq!(s.paid_waiting().await.unwrap(), (0, None));
    assert_eq!(s.credits_spent().await.unwrap(), 0);
    assert_eq!(s.credits_spent_elsewhere().await.unwrap(), 0);
    s.record_credits(42).await.unwrap();
    s.record_credits(41).await.unwrap();
    assert_eq!(s.latest_credits().await.unwrap().map(|(_, n)| n), Some(41));

    let e = s.roll_epoch(None, 41).await.unwrap();
    let mut c = closing(30, 0, Verdict::None);
    c.spent_elsewhere = 7;
    s.roll_epoch(Some((e, c)), 30).await.unwrap();
    assert_eq!(s.credits_spent_elsewhere().await.unwrap(), 7);

    let p = job(&s, "processing", None, None).await;
    let d = job(&s, "downloading", None, None).await;
    job(&s, "done", None, None).await;
    set(&s, p, "charges = 2, processing_since = 5000").await;
    set(&s, d, "charges = 1").await;
    assert_eq!(s.paid_waiting().await.unwrap(), (2, Some(5000)));
    assert_eq!(s.credits_spent().await.unwrap(), 3);
}
