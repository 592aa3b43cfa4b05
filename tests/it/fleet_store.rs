//! Integration tests: the shared queue's fleet promises, at the store. Two nodes, "a" and "b"
//! (two `PgStore`s with pools of their own, as two workstations), on one fresh database of the
//! PostgreSQL test server (`helpers::backend`); skipped without `HILI_TEST_DATABASE_URL`.
//! Nothing here has a SQLite meaning: SQLite's queue has one machine.

use std::path::PathBuf;

use crate::helpers::backend::{Backend, FIRST, Queue, SECOND};
use hili::store::{EnqueueOutcome, JobId, NewJob, PgStore, State, Store, StoreError, UploadIntent};

/// Both nodes on one new shared queue, as the store each daemon holds and as `PgStore` (for
/// heartbeats and the node list); `None`: no test server.
async fn two_nodes() -> Option<(Queue, [(PgStore, Store); 2])> {
    let queue = Backend::Postgres.place().await?;
    let mut nodes = Vec::new();
    for name in [FIRST, SECOND] {
        let pg = queue.pg(name).await.expect("open the shared queue");
        nodes.push((pg.clone(), Store::new(pg)));
    }
    let [a, b] = <[_; 2]>::try_from(nodes).expect("two nodes");
    Some((queue, [a, b]))
}

/// A photo at `path` on `node`'s own disk (its own inbox and output folder).
fn photo_on(node: &str, name: &str) -> NewJob {
    let inbox = PathBuf::from(format!("/scans/{node}/in"));
    NewJob {
        source_path: inbox.join(name),
        source_root: inbox,
        output_dir: PathBuf::from(format!("/scans/{node}/out")),
        repair: hili::repair::Repair::Sr,
        rgb: None,
        size: 4321,
        mtime_ns: 1_700_000_000_000_000_000,
        file_id: None,
        force: false,
    }
}

async fn add(store: &Store, job: NewJob) -> JobId {
    match store.enqueue(job).await.unwrap() {
        EnqueueOutcome::Queued(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The same photo copied onto two workstations and hashed by both at the same moment: the
/// shared queue lets exactly one node commit to the upload (one credit), the other is told
/// its twin is busy and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_photo_on_two_nodes_is_uploaded_by_exactly_one() {
    let Some((_queue, [(_, a), (_, b)])) = two_nodes().await else {
        return;
    };
    for round in 0..5u8 {
        let name = format!("{round}.jpg");
        let on_a = add(&a, photo_on(FIRST, &name)).await;
        let on_b = add(&b, photo_on(SECOND, &name)).await;
        assert_ne!(on_a, on_b, "two files, two jobs");
        let sha: String = std::iter::repeat_n(char::from(b'a' + round), 64).collect();
        let race = |store: &Store, id: JobId| {
            let (store, sha) = (store.clone(), sha.clone());
            tokio::spawn(async move {
                let intent = UploadIntent {
                    epoch: None,
                    credits_before: 50,
                    content_sha256: Some(&sha),
                    exclusive: true,
                };
                store.begin_upload_with(id, &intent).await
            })
        };
        let (ra, rb) = (race(&a, on_a), race(&b, on_b));
        let results = [(on_a, ra.await.unwrap()), (on_b, rb.await.unwrap())];
        let mut uploading = Vec::new();
        for (id, result) in results {
            match result {
                Ok(()) => uploading.push(id),
                Err(StoreError::TwinBusy { job }) => {
                    assert_eq!(job, id, "round {round}: TwinBusy names the refused job");
                    let j = a.get(id).await.unwrap().unwrap();
                    assert_eq!((j.state(), j.content_sha256), (State::Queued, None));
                    assert_eq!(a.events(id).await.unwrap().len(), 1, "round {round}");
                }
                Err(e) => panic!("round {round}, job {id}: unexpected {e}"),
            }
        }
        assert_eq!(uploading.len(), 1, "round {round}: exactly one uploads");
        let winner = b.get(uploading[0]).await.unwrap().unwrap();
        assert_eq!(winner.state(), State::Uploading, "round {round}");
    }
}

/// Both nodes' workers pick the same queued job at once: exactly one intent is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_upload_intents_from_two_nodes_exactly_one_wins() {
    let Some((_queue, [(_, a), (_, b)])) = two_nodes().await else {
        return;
    };
    let sha: String = std::iter::repeat_n('c', 64).collect();
    for round in 0..5 {
        let id = add(&a, photo_on(FIRST, &format!("{round}.jpg"))).await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let sha = sha.clone();
                tokio::spawn(async move {
                    let intent = UploadIntent {
                        epoch: None,
                        credits_before: 7,
                        content_sha256: Some(&sha),
                        exclusive: false,
                    };
                    store.begin_upload_with(id, &intent).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict {
                    found: State::Uploading,
                    ..
                }) => {}
                Err(e) => panic!("round {round}: unexpected {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        let j = b.get(id).await.unwrap().unwrap();
        assert_eq!(
            (j.state(), j.attempts),
            (State::Uploading, 1),
            "round {round}"
        );
        assert_eq!(b.events(id).await.unwrap().len(), 2, "round {round}");
    }
}

/// Heartbeats count the live nodes (each node's share of the request rate follows it); a node
/// that leaves stops counting at once, and both stay listed.
#[tokio::test]
async fn heartbeats_count_live_nodes_and_a_node_that_leaves_stops_counting() {
    let Some((_queue, [(a, _), (b, _)])) = two_nodes().await else {
        return;
    };
    assert_eq!(
        a.heartbeat().await.unwrap(),
        1,
        "only a has said it is alive"
    );
    assert_eq!(b.heartbeat().await.unwrap(), 2);
    assert_eq!(a.heartbeat().await.unwrap(), 2);
    let nodes = a.nodes().await.unwrap();
    let seen: Vec<(&str, bool)> = nodes.iter().map(|n| (n.name.as_str(), n.live)).collect();
    assert_eq!(seen, vec![(FIRST, true), (SECOND, true)]);

    b.leave().await.unwrap();
    assert_eq!(a.heartbeat().await.unwrap(), 1, "b left");
    let nodes = b.nodes().await.unwrap();
    let seen: Vec<(&str, bool)> = nodes.iter().map(|n| (n.name.as_str(), n.live)).collect();
    assert_eq!(seen, vec![(FIRST, true), (SECOND, false)]);
    assert!(nodes[1].stopped_at_ms.is_some());
    // Coming back counts again.
    assert_eq!(b.heartbeat().await.unwrap(), 2);
}

/// An upload's answer is ordered before every write the store accepts after it
/// (`JobStore::queue_uploaded`): while the answer cannot commit yet — its row held by another
/// session, as a slow server would — the next upload's intent waits for it, so a crash never
/// leaves a newer intent without the older answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_answer_commits_before_the_next_intent() {
    use sqlx::Connection;
    let Some((queue, [(_, a), _])) = two_nodes().await else {
        return;
    };
    let first = add(&a, photo_on(FIRST, "1.jpg")).await;
    let next = add(&a, photo_on(FIRST, "2.jpg")).await;
    a.begin_upload(first, 10).await.unwrap();
    let url = queue.url().expect("a PostgreSQL queue");
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(first.0)
        .execute(&mut *tx)
        .await
        .unwrap();

    let answer = hili::store::Uploaded {
        mdf: "m1",
        img_url: "https://x/1.jpg",
        first_poll_at: None,
        sent_sha256: None,
    };
    let committing = a.queue_uploaded(first, &answer).unwrap();
    let intent = {
        let a = a.clone();
        tokio::spawn(async move { a.begin_upload(next, 9).await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let state = |id: JobId| {
        let b = a.clone();
        async move { b.get(id).await.unwrap().unwrap().state() }
    };
    let seen = (state(first).await, state(next).await);
    tx.rollback().await.unwrap();
    committing.await.unwrap();
    intent.await.unwrap().unwrap();
    assert_eq!(
        seen,
        (State::Uploading, State::Queued),
        "the next intent was committed while the answer before it was not"
    );
    let answered = a.events(first).await.unwrap().last().unwrap().id;
    let began = a.events(next).await.unwrap().last().unwrap().id;
    assert!(answered < began, "answer event {answered}, intent {began}");
}
