//! Tests of enqueue on the shared queue (`enqueue.rs`, `enqueue_notes.rs`): the dedupe rules,
//! `force`, hili's own results, invalid files, two nodes adding the same files at once, the
//! watcher's look-ups and the notes of a job.

use super::PgStore;
use crate::repair::Repair;
use crate::store::jobs::path_bytes;
use crate::store::pg::{test_store, testdb};
use crate::store::{AGENT, EnqueueOutcome, JobId, Known, NewJob, State, StoreError};
use std::path::Path;

/// Each job's (id, state, node, force), by id.
async fn jobs(store: &PgStore) -> Vec<(i64, String, Option<String>, i64)> {
    sqlx::query_as("SELECT id, state, node, force FROM jobs ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// Job `id`'s events: (from, to, detail, agent, node), oldest first.
async fn events(store: &PgStore, id: JobId) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT from_state, to_state, detail, agent, node FROM events \
         WHERE job_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(store.pool())
    .await
    .unwrap()
}
type EventRow = (
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn sample(dir: &Path, name: &str) -> NewJob {
    NewJob::sample(&dir.join("in"), name, &dir.join("out"))
}

#[tokio::test]
async fn a_file_version_is_queued_once_by_the_node_that_found_it() {
    let Some((store, dir)) = test_store("node-a").await else {
        return;
    };
    let a = sample(dir.path(), "a.jpg");
    assert!(store.enqueue_many(Vec::new()).await.unwrap().is_empty());
    let [EnqueueOutcome::Queued(id)] = store.enqueue_many(vec![a.clone()]).await.unwrap()[..]
    else {
        panic!("not queued");
    };
    assert_eq!(
        jobs(&store).await,
        [(id.0, "queued".into(), Some("node-a".into()), 0)]
    );
    let created = (None, "queued".into(), Some("enqueued".into()));
    let row = |(f, t, d, _, _): EventRow| (f, t, d);
    let ev = events(&store, id).await;
    assert_eq!(ev.iter().cloned().map(row).collect::<Vec<_>>(), [created]);
    assert_eq!(ev[0].3.as_deref(), Some(AGENT));
    assert_eq!(ev[0].4.as_deref(), Some("node-a"));

    // Again: known. Forced while queued: only marked, no second job, no second event.
    let again = store.enqueue_many(vec![a.clone()]).await.unwrap();
    assert_eq!(again, [EnqueueOutcome::AlreadyKnown(id, State::Queued)]);
    let forced = NewJob {
        force: true,
        ..a.clone()
    };
    let again = store.enqueue_many(vec![forced.clone()]).await.unwrap();
    assert_eq!(again, [EnqueueOutcome::AlreadyKnown(id, State::Queued)]);
    assert_eq!(jobs(&store).await[0].3, 1);
    assert_eq!(jobs(&store).await.len(), 1);
    assert_eq!(events(&store, id).await.len(), 1);

    // Another repair type is new work for `hili add`, not for a watch folder.
    let colour = NewJob {
        repair: Repair::Colour,
        ..a.clone()
    };
    let [EnqueueOutcome::Queued(second)] = store.enqueue_many(vec![colour]).await.unwrap()[..]
    else {
        panic!("another repair type was not queued");
    };
    let repair = NewJob {
        repair: Repair::Repair,
        ..a.clone()
    };
    let watched = store
        .enqueue_many_as(vec![repair], Known::AnySettings)
        .await
        .unwrap();
    assert_eq!(
        watched,
        [EnqueueOutcome::AlreadyKnown(second, State::Queued)]
    );

    // Done, with its result written in the input folder: the result is not a photo.
    let out = dir.path().join("in").join("a_hili.jpg");
    sqlx::query("UPDATE jobs SET state = 'done', output_path = $1 WHERE id = $2")
        .bind(path_bytes(&out))
        .bind(id.0)
        .execute(store.pool())
        .await
        .unwrap();
    let fed_back = store
        .enqueue_many(vec![sample(dir.path(), "a_hili.jpg")])
        .await
        .unwrap();
    assert_eq!(fed_back, [EnqueueOutcome::OwnResult(id)]);

    // Forced again once done: a new job (the old one's history is kept).
    let [EnqueueOutcome::Queued(third)] = store.enqueue_many(vec![forced]).await.unwrap()[..]
    else {
        panic!("a forced done file was not queued again");
    };
    assert!(third.0 > second.0);
    let ev = events(&store, third).await;
    assert_eq!(ev[0].2.as_deref(), Some("enqueued (force)"));
    assert_eq!(jobs(&store).await.len(), 3);
}

#[tokio::test]
async fn invalid_files_are_recorded_failed_once_with_their_reason() {
    let Some((store, dir)) = test_store("node-a").await else {
        return;
    };
    let bad = sample(dir.path(), "notes.txt");
    let reason = "not an image: notes.txt".to_string();
    let forced = NewJob {
        force: true,
        ..bad.clone()
    };
    let [EnqueueOutcome::Failed(id)] = store
        .enqueue_invalid(vec![(forced, reason.clone())])
        .await
        .unwrap()[..]
    else {
        panic!("not recorded failed");
    };
    // Never forced: the row is not marked so.
    assert_eq!(
        jobs(&store).await,
        [(id.0, "failed".into(), Some("node-a".into()), 0)]
    );
    let stored: Option<String> = sqlx::query_scalar("SELECT reason FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(reason.as_str()));
    let ev = events(&store, id).await;
    let moves: Vec<_> = ev.iter().map(|e| (e.0.clone(), e.1.clone())).collect();
    assert_eq!(
        moves,
        [
            (None, "queued".to_string()),
            (Some("queued".into()), "failed".into())
        ]
    );
    assert_eq!(ev[1].2.as_deref(), Some(reason.as_str()));
    assert_eq!(ev[1].3.as_deref(), Some(AGENT));

    let again = store.enqueue_invalid(vec![(bad, reason)]).await.unwrap();
    assert_eq!(again, [EnqueueOutcome::AlreadyKnown(id, State::Failed)]);
    assert_eq!(events(&store, id).await.len(), 2);

    // A bg job without its colour is refused before anything is written.
    let no_colour = NewJob {
        repair: Repair::Bg,
        ..sample(dir.path(), "id.jpg")
    };
    let refused = store.enqueue_invalid(vec![(no_colour.clone(), "x".into())]);
    assert!(matches!(refused.await, Err(StoreError::Invalid { .. })));
    let refused = store.enqueue_many(vec![no_colour]).await;
    assert!(matches!(refused, Err(StoreError::Invalid { .. })));
    assert_eq!(jobs(&store).await.len(), 1);
}

#[tokio::test]
async fn two_nodes_adding_the_same_files_at_once_make_one_job_of_each() {
    let Some(url) = testdb::fresh().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |node: &str| PgStore::open(&url, node.parse().unwrap(), dir.path());
    let (a, b) = (open("node-a").await.unwrap(), open("node-b").await.unwrap());
    // A shared folder (the same path on both nodes, on the NAS): its files are one set.
    for s in [&a, &b] {
        s.share_roots(vec![dir.path().to_path_buf()]);
    }
    let files: Vec<NewJob> = (0..300)
        .map(|i| sample(dir.path(), &format!("{i:03}.jpg")))
        .collect();
    let reversed: Vec<NewJob> = files.iter().rev().cloned().collect();
    for round in 0..3 {
        // Each round adds new versions of the files, in opposite orders on the two nodes
        // (the locks are taken in one order, so neither can deadlock the other).
        let bump = |v: &[NewJob]| -> Vec<NewJob> {
            v.iter()
                .map(|j| NewJob {
                    mtime_ns: round,
                    ..j.clone()
                })
                .collect()
        };
        let (ra, rb) = tokio::join!(
            a.enqueue_many(bump(&files)),
            b.enqueue_many_as(bump(&reversed), Known::AnySettings)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let queued = |r: &[EnqueueOutcome]| {
            r.iter()
                .filter(|o| matches!(o, EnqueueOutcome::Queued(_)))
                .count()
        };
        assert_eq!(queued(&ra) + queued(&rb), files.len(), "round {round}");
        // Each file: queued by one node, known to the other as that very job.
        for (i, o) in ra.iter().enumerate() {
            let other = rb[files.len() - 1 - i];
            assert_eq!(o.id(), other.id(), "round {round}, file {i}");
            assert_ne!(
                matches!(o, EnqueueOutcome::Queued(_)),
                matches!(other, EnqueueOutcome::Queued(_))
            );
        }
    }
    let all = jobs(&a).await;
    assert_eq!(all.len(), 3 * files.len());
    assert!(
        all.iter().all(|j| j.2.is_none()),
        "a shared folder's jobs are any node's"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_watcher_sees_what_a_folder_queued_and_where_results_are() {
    let Some((store, dir)) = test_store("node-a").await else {
        return;
    };
    let root = dir.path().join("in");
    let old = sample(dir.path(), "a.jpg");
    let new = NewJob {
        size: 20,
        mtime_ns: 2,
        ..old.clone()
    };
    let elsewhere = NewJob::sample(&dir.path().join("other"), "b.jpg", &root);
    let outcomes = store.enqueue_many(vec![old, new, elsewhere]).await.unwrap();
    let ids: Vec<JobId> = outcomes.iter().map(|o| o.id()).collect();
    let known = store.known_versions(&root).await.unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(
        known[&root.join("a.jpg")],
        (20, 2),
        "the newest version wins"
    );
    assert!(
        store
            .known_versions(&dir.path().join("none"))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.result_paths().await.unwrap().is_empty());
    assert_eq!(
        store
            .result_with_hash(&"ab".repeat(32), ids[0])
            .await
            .unwrap(),
        None
    );
    let out = dir.path().join("out").join("a_hili.jpg");
    sqlx::query("UPDATE jobs SET output_path = $1, output_sha256 = $2 WHERE id = $3")
        .bind(path_bytes(&out))
        .bind("ab".repeat(32))
        .bind(ids[1].0)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.result_paths().await.unwrap(), [out.clone()].into());
    // Any case of the hash; never the job itself.
    let found = store
        .result_with_hash(&"AB".repeat(32), ids[0])
        .await
        .unwrap();
    assert_eq!(found, Some((ids[1], Some(out))));
    assert_eq!(
        store
            .result_with_hash(&"ab".repeat(32), ids[1])
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_note_is_written_once_even_by_two_nodes_at_once() {
    let Some(url) = testdb::fresh().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |node: &str| PgStore::open(&url, node.parse().unwrap(), dir.path());
    let (a, b) = (open("node-a").await.unwrap(), open("node-b").await.unwrap());
    let [EnqueueOutcome::Queued(id)] = a
        .enqueue_many(vec![sample(dir.path(), "a.jpg")])
        .await
        .unwrap()[..]
    else {
        panic!("not queued");
    };
    let [EnqueueOutcome::Queued(other)] = a
        .enqueue_many(vec![sample(dir.path(), "b.jpg")])
        .await
        .unwrap()[..]
    else {
        panic!("not queued");
    };
    for round in 0..20 {
        let note = format!("metadata: not copied ({round})");
        let (ra, rb) = tokio::join!(a.note(id, &note), b.note(id, &note));
        ra.unwrap();
        rb.unwrap();
    }
    a.note_input(id, "converted BMP").await.unwrap();
    b.note_input(id, "converted BMP").await.unwrap();
    a.note_input(id, "first page of 3").await.unwrap();
    a.execute(&format!(
        "UPDATE jobs SET state = 'held' WHERE id = {}",
        other.0
    ))
    .await
    .unwrap();
    b.note(other, "held: twin").await.unwrap();
    // A job that does not exist: nothing, and no error.
    a.note(JobId(999), "nobody").await.unwrap();

    let notes = a.job_notes().await.unwrap();
    let mut expected: Vec<String> = (0..20)
        .map(|r| format!("metadata: not copied ({r})"))
        .collect();
    expected.extend([
        "input: converted BMP".into(),
        "input: first page of 3".into(),
    ]);
    assert_eq!(notes[&id], expected);
    assert_eq!(notes[&other], ["held: twin"]);
    assert_eq!(notes.len(), 2);
    let last = events(&b, other).await.pop().unwrap();
    assert_eq!((last.0.as_deref(), last.1.as_str()), (Some("held"), "held"));
    assert_eq!(last.3.as_deref(), Some(AGENT));
    assert_eq!(last.4.as_deref(), Some("node-b"));

    let inputs = b.input_notes().await.unwrap();
    assert_eq!(inputs, [(id, "first page of 3".to_string())].into());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_same_path_on_two_nodes_is_two_photos_unless_the_folder_is_shared() {
    let Some(url) = testdb::fresh().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |node: &str| PgStore::open(&url, node.parse().unwrap(), dir.path());
    let (a, b) = (open("node-a").await.unwrap(), open("node-b").await.unwrap());
    let file = sample(dir.path(), "a.jpg");
    let ra = a.enqueue_many(vec![file.clone()]).await.unwrap()[0];
    let rb = b.enqueue_many(vec![file.clone()]).await.unwrap()[0];
    assert!(matches!(ra, EnqueueOutcome::Queued(_)), "{ra:?}");
    assert!(
        matches!(rb, EnqueueOutcome::Queued(_)),
        "each workstation's own file: {rb:?}"
    );
    assert_ne!(ra.id(), rb.id());
    let owners: Vec<Option<String>> = sqlx::query_scalar("SELECT node FROM jobs ORDER BY id")
        .fetch_all(a.pool())
        .await
        .unwrap();
    assert_eq!(owners, vec![Some("node-a".into()), Some("node-b".into())]);
    // Shared: one job, any node's.
    for s in [&a, &b] {
        s.share_roots(vec![dir.path().to_path_buf()]);
    }
    let other = sample(dir.path(), "b.jpg");
    let ra = a.enqueue_many(vec![other.clone()]).await.unwrap()[0];
    let rb = b.enqueue_many(vec![other]).await.unwrap()[0];
    assert!(matches!(ra, EnqueueOutcome::Queued(_)), "{ra:?}");
    assert!(matches!(rb, EnqueueOutcome::AlreadyKnown(..)), "{rb:?}");
    let owner: Option<String> = sqlx::query_scalar("SELECT node FROM jobs WHERE id = $1")
        .bind(ra.id().0)
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(owner, None);
}
