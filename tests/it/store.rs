//! Integration tests: store. Each test runs on both backends (`NAME::sqlite`: a real SQLite
//! file in a temp dir; `NAME::postgres`: a fresh database on the PostgreSQL test server, see
//! `helpers::backend`), except those about SQLite's file and commit machinery, which say so.
//! Each test is bounded by its work.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::backend::{Backend, both_backends};
use hili::repair::{Repair, Rgb};
use hili::store::{
    DueLimits, EnqueueOutcome, Job, JobId, NewJob, Paid, PgStore, State, Store, StoreError,
    UploadIntent, Uploaded,
};

fn job(name: &str) -> NewJob {
    NewJob {
        source_path: PathBuf::from("/photos/in").join(name),
        source_root: PathBuf::from("/photos/in"),
        output_dir: PathBuf::from("/photos/out"),
        repair: Repair::Sr,
        rgb: None,
        size: 1234,
        mtime_ns: 1_700_000_000_000_000_000,
        file_id: None,
        force: false,
    }
}

async fn add(store: &Store, name: &str) -> JobId {
    match store.enqueue(job(name)).await.unwrap() {
        EnqueueOutcome::Queued(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn hash(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// uploading → processing with a bare answer (first poll due at once), as the upload stage
/// records it.
async fn record_uploaded(store: &Store, id: JobId, mdf: &str, url: &str) -> Result<(), StoreError> {
    let answer = Uploaded {
        mdf,
        img_url: url,
        first_poll_at: None,
        sent_sha256: None,
    };
    store.queue_uploaded(id, &answer)?.await
}

/// Takes a fresh job through upload to processing.
async fn to_processing(store: &Store, id: JobId, mdf: &str) {
    store.begin_upload(id, 10).await.unwrap();
    record_uploaded(store, id, mdf, "https://x/y.jpg")
        .await
        .unwrap();
}

/// What the scheduler would pick up at `now_ms`, stage by stage (up to 100 of each).
async fn due(store: &Store, now_ms: i64) -> hili::store::DueWork {
    let all = DueLimits {
        polls: 100,
        downloads: 100,
        uploads: 100,
    };
    store.due_work(now_ms, all, &[]).await.unwrap()
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

fn paid_ids(work: &[Paid]) -> Vec<JobId> {
    work.iter().map(|w| w.job.id).collect()
}

both_backends!(open_existing_refuses_a_missing_file_and_reads_a_live_one);
/// A queue that is not there is refused, not created, and a second handle reads what a live
/// one wrote. SQLite: `open_existing` on a missing file. PostgreSQL, the nearest meaning (a
/// node only ever opens the shared queue it is given, there is no `open_existing`): a
/// database the server does not have is refused as unreachable, naming it, and opening it
/// again finds it still missing.
async fn open_existing_refuses_a_missing_file_and_reads_a_live_one(backend: Backend) {
    let Some(queue) = backend.place().await else {
        return;
    };
    match backend {
        Backend::Sqlite => {
            let path = queue.sqlite_path().unwrap();
            let err = Store::open_existing(path).await.unwrap_err();
            assert!(matches!(err, StoreError::Missing { .. }));
            let msg = err.to_string();
            assert!(msg.contains("hili.db") && msg.contains("hili add"), "{msg}");
            assert!(!path.exists(), "open_existing must not create the file");
        }
        Backend::Postgres => {
            let mut missing = url::Url::parse(queue.url().unwrap()).unwrap();
            let name = format!("{}_missing", missing.path().trim_start_matches('/'));
            missing.set_path(&name);
            for _ in 0..2 {
                let node = "a".parse().unwrap();
                let err = PgStore::open(missing.as_str(), node, queue.dir.path())
                    .await
                    .unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, StoreError::Unreachable { .. }), "{msg}");
                assert!(msg.contains(&name) && msg.contains("PostgreSQL"), "{msg}");
            }
        }
    }

    let writer = queue.open().await;
    let id = add(&writer, "a.jpg").await;
    let reader = match queue.sqlite_path() {
        Some(path) => Store::open_existing(path).await.unwrap(),
        None => queue.other().await,
    };
    assert_eq!(
        reader.get(id).await.unwrap().unwrap().state(),
        State::Queued
    );
}

both_backends!(enqueue_is_idempotent_per_file_version_and_settings);
async fn enqueue_is_idempotent_per_file_version_and_settings(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let id = add(&store, "a.jpg").await;
    assert_eq!(
        store.enqueue(job("a.jpg")).await.unwrap(),
        EnqueueOutcome::AlreadyKnown(id, State::Queued)
    );
    // A changed file, or other settings, is a new job.
    let mut touched = job("a.jpg");
    touched.mtime_ns += 1;
    assert!(matches!(
        store.enqueue(touched).await.unwrap(),
        EnqueueOutcome::Queued(_)
    ));
    let mut bg = job("a.jpg");
    bg.repair = Repair::Bg;
    bg.rgb = Some(Rgb(255, 255, 255));
    let bg_id = store.enqueue(bg.clone()).await.unwrap().id();
    bg.rgb = Some(Rgb(0, 0, 255));
    assert_ne!(store.enqueue(bg).await.unwrap().id(), bg_id);
    // Force on a still-queued job only marks it.
    let mut forced = job("a.jpg");
    forced.force = true;
    assert_eq!(
        store.enqueue(forced.clone()).await.unwrap(),
        EnqueueOutcome::AlreadyKnown(id, State::Queued)
    );
    assert!(store.get(id).await.unwrap().unwrap().force);
    // Once done, a plain enqueue is known, a forced one is a new job.
    store
        .finish(id, State::Queued, Path::new("/o/a.jpg"), &hash('a'))
        .await
        .unwrap();
    assert_eq!(
        store.enqueue(job("a.jpg")).await.unwrap(),
        EnqueueOutcome::AlreadyKnown(id, State::Done)
    );
    let again = store.enqueue(forced).await.unwrap();
    assert!(matches!(again, EnqueueOutcome::Queued(n) if n != id));
    // Bad colour settings are refused before touching the database.
    let mut bad = job("b.jpg");
    bad.rgb = Some(Rgb(1, 2, 3));
    assert!(matches!(
        store.enqueue(bad).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.all_jobs(None).await.unwrap().len(), 5);
}

both_backends!(enqueue_many_ten_thousand_in_one_go);
async fn enqueue_many_ten_thousand_in_one_go(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let batch: Vec<NewJob> = (0..10_000).map(|i| job(&format!("{i:05}.jpg"))).collect();
    let t = Instant::now();
    let out = store.enqueue_many(batch.clone()).await.unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "10k enqueues took {took:?}");
    assert!(out.iter().all(|o| matches!(o, EnqueueOutcome::Queued(_))));
    let again = store.enqueue_many(batch).await.unwrap();
    assert!(
        again
            .iter()
            .all(|o| matches!(o, EnqueueOutcome::AlreadyKnown(_, State::Queued)))
    );
    assert_eq!(store.counts().await.unwrap()[&State::Queued], 10_000);
    let three = DueLimits {
        uploads: 3,
        ..DueLimits::default()
    };
    let first = store.due_work(i64::MAX, three, &[]).await.unwrap().uploads;
    assert_eq!(ids(&first), vec![out[0].id(), out[1].id(), out[2].id()]);
    eprintln!("enqueue_many(10_000) took {took:?}");
}

both_backends!(paths_that_are_not_utf8_round_trip);
async fn paths_that_are_not_utf8_round_trip(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let mut j = job("x");
    j.source_path = PathBuf::from(OsStr::from_bytes(b"/in/caf\xe9-\xff.jpg"));
    let id = store.enqueue(j.clone()).await.unwrap().id();
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(got.source_path, j.source_path);
    assert_eq!(
        store.enqueue(j).await.unwrap(),
        EnqueueOutcome::AlreadyKnown(id, State::Queued)
    );
}

both_backends!(each_transition_writes_exactly_one_event_and_its_columns);
async fn each_transition_writes_exactly_one_event_and_its_columns(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let id = add(&store, "a.jpg").await;
    store.begin_upload(id, 42).await.unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state(), j.attempts, j.credits_before, j.credit_spent),
        (State::Uploading, 1, Some(42), false)
    );
    record_uploaded(&store, id, "mdf1", "https://x/1.jpg")
        .await
        .unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.mdf(), j.credit_spent, j.charges),
        (Some("mdf1"), true, 1)
    );
    assert!(j.processing_since_ms.is_some());
    store.set_next_poll(id, 5_000).await.unwrap();
    assert!(due(&store, 4_999).await.polls.is_empty());
    assert_eq!(paid_ids(&due(&store, 5_000).await.polls), vec![id]);
    store.begin_download(id).await.unwrap();
    store
        .finish(id, State::Downloading, Path::new("/o/a.sr.jpg"), &hash('b'))
        .await
        .unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.output_path.as_deref(), Some(Path::new("/o/a.sr.jpg")));

    let ev = store.events(id).await.unwrap();
    let pairs: Vec<(Option<State>, State)> = ev.iter().map(|e| (e.from, e.to)).collect();
    use State::*;
    assert_eq!(
        pairs,
        vec![
            (None, Queued),
            (Some(Queued), Uploading),
            (Some(Uploading), Processing),
            (Some(Processing), Downloading),
            (Some(Downloading), Done)
        ]
    );
    assert_eq!(store.credits_spent().await.unwrap(), 1);
}

both_backends!(illegal_and_stale_transitions_change_nothing);
async fn illegal_and_stale_transitions_change_nothing(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let id = add(&store, "a.jpg").await;
    let err = store.fail(id, State::Processing, "x").await.unwrap_err();
    assert!(matches!(err, StoreError::Illegal(_)), "{err}");
    // Legal pair, wrong current state: a conflict naming both.
    let err = store.begin_download(id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { job, expected: State::Processing, found: State::Queued } if job == id),
        "{err}"
    );
    assert!(matches!(
        store.begin_upload(JobId(999), 1).await,
        Err(StoreError::NotFound(JobId(999)))
    ));
    assert_eq!(store.events(id).await.unwrap().len(), 1);
    assert_eq!(store.get(id).await.unwrap().unwrap().state(), State::Queued);
}

both_backends!(racing_callers_exactly_one_wins);
async fn racing_callers_exactly_one_wins(backend: Backend) {
    let Some((queue, store)) = backend.fresh().await else {
        return;
    };
    // A second handle stands in for another process (SQLite: on the same file) or another
    // node (PostgreSQL: on the same database).
    let other = queue.other().await;
    for round in 0..5 {
        let id = add(&store, &format!("{round}.jpg")).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move { s.begin_upload(id, 7).await }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict {
                    found: State::Uploading,
                    ..
                }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1);
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.attempts, 1);
        assert_eq!(store.events(id).await.unwrap().len(), 2);
    }
}

both_backends!(retry_rules);
async fn retry_rules(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    // failed -> queued, attempts reset.
    let a = add(&store, "a.jpg").await;
    store.begin_upload(a, 5).await.unwrap();
    store.fail(a, State::Uploading, "errno 9005").await.unwrap();
    assert_eq!(store.retry(a, false).await.unwrap(), State::Queued);
    let j = store.get(a).await.unwrap().unwrap();
    assert_eq!((j.attempts, j.credit_spent, j.reason), (0, false, None));
    // held with mdf -> downloading; with --reupload -> queued without mdf.
    let b = add(&store, "b.jpg").await;
    to_processing(&store, b, "mdfb").await;
    store
        .hold(b, State::Processing, "9002 at status", false)
        .await
        .unwrap();
    assert_eq!(store.retry(b, false).await.unwrap(), State::Downloading);
    store
        .hold(b, State::Downloading, "expired", false)
        .await
        .unwrap();
    assert_eq!(store.retry(b, true).await.unwrap(), State::Queued);
    let j = store.get(b).await.unwrap().unwrap();
    assert_eq!(
        (
            j.mdf().map(str::to_string),
            j.img_url().map(str::to_string),
            j.credit_spent,
            j.charges
        ),
        (None, None, true, 1)
    );
    // held without mdf (answer lost, charged): nothing to fetch, so a plain retry is refused
    // (it would spend a credit); only --reupload queues it.
    let c = add(&store, "c.jpg").await;
    store.begin_upload(c, 5).await.unwrap();
    store
        .hold(c, State::Uploading, "no answer; credits dropped", true)
        .await
        .unwrap();
    assert_eq!(store.credits_spent().await.unwrap(), 2);
    let err = store.retry(c, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRetryable {
                state: State::Held,
                ..
            }
        ) && err.to_string().contains("--reupload")
            && err.to_string().contains("another credit"),
        "{err}"
    );
    assert_eq!(store.get(c).await.unwrap().unwrap().state(), State::Held);
    assert_eq!(store.retry(c, true).await.unwrap(), State::Queued);
    // done: only with --reupload, and the output is forgotten.
    let d = add(&store, "d.jpg").await;
    store
        .finish(d, State::Queued, Path::new("/o/d.jpg"), &hash('d'))
        .await
        .unwrap();
    let err = store.retry(d, false).await.unwrap_err();
    assert!(err.to_string().contains("--reupload"), "{err}");
    assert_eq!(store.retry(d, true).await.unwrap(), State::Queued);
    assert_eq!(store.get(d).await.unwrap().unwrap().output_path, None);
    // in progress: nothing to retry.
    assert!(matches!(
        store.retry(d, false).await,
        Err(StoreError::NotRetryable {
            state: State::Queued,
            ..
        })
    ));
    assert!(matches!(
        store.retry(JobId(404), false).await,
        Err(StoreError::NotFound(_))
    ));
}

both_backends!(the_content_hash_comes_with_the_intent_and_twins_are_found_by_identity);
async fn the_content_hash_comes_with_the_intent_and_twins_are_found_by_identity(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let a = add(&store, "a.jpg").await;
    let b = add(&store, "b.jpg").await;
    let c = add(&store, "c.jpg").await;
    let mut colour = job("c-colour.jpg");
    colour.repair = Repair::Colour;
    let other_repair = store.enqueue(colour).await.unwrap().id();
    let with_hash = |sha| UploadIntent {
        epoch: None,
        credits_before: 10,
        content_sha256: Some(sha),
        exclusive: false,
    };
    // A malformed hash is refused and nothing is written.
    assert!(matches!(
        store.begin_upload_with(a, &with_hash("abc")).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.get(a).await.unwrap().unwrap().state(), State::Queued);

    let upper = hash('E');
    for id in [a, b, other_repair] {
        store
            .begin_upload_with(id, &with_hash(&upper))
            .await
            .unwrap();
    }
    let ident = store.get(a).await.unwrap().unwrap().identity().unwrap();
    assert_eq!(ident.content_sha256, hash('e'), "stored lowercase");
    // c has no hash yet, so it is nobody's twin; another repair type is another identity.
    assert_eq!(
        ids(&store.identity_twins(&ident, a).await.unwrap()),
        vec![b]
    );
    assert_eq!(
        ids(&store.identity_twins(&ident, b).await.unwrap()),
        vec![a]
    );
    assert!(store.get(c).await.unwrap().unwrap().identity().is_none());
    // Twins are found in any state, so a finished one can lend its output.
    record_uploaded(&store, a, "m", "https://x/a.jpg")
        .await
        .unwrap();
    store.begin_download(a).await.unwrap();
    store
        .finish(a, State::Downloading, Path::new("/o/a.jpg"), &hash('f'))
        .await
        .unwrap();
    let twins = store.identity_twins(&ident, b).await.unwrap();
    assert_eq!(
        (
            twins[0].id,
            twins[0].state(),
            twins[0].output_path.as_deref()
        ),
        (a, State::Done, Some(Path::new("/o/a.jpg")))
    );
}

both_backends!(queue_views_credits_and_integrity_survive_reopen);
/// Reopening: SQLite opens the file again (and checks its integrity); PostgreSQL, the nearest
/// meaning, closes the node's pool and opens the same database again as the same node
/// (integrity is the server's own business there).
async fn queue_views_credits_and_integrity_survive_reopen(backend: Backend) {
    let Some((queue, store)) = backend.fresh().await else {
        return;
    };
    let a = add(&store, "a.jpg").await;
    let b = add(&store, "b.jpg").await;
    store.defer(a, State::Queued, 10_000).await.unwrap();
    assert_eq!(ids(&due(&store, 9_999).await.uploads), vec![b]);
    assert_eq!(ids(&due(&store, 10_000).await.uploads), vec![a, b]);
    store.begin_upload(b, 3).await.unwrap();
    store
        .requeue(b, State::Uploading, "HTTP 503, not charged", 20_000)
        .await
        .unwrap();
    assert_eq!(
        store.get(b).await.unwrap().unwrap().reason.as_deref(),
        Some("HTTP 503, not charged")
    );
    assert_eq!(store.oldest_queued().await.unwrap().unwrap().id, a);
    // The intent keeps the count its epoch opened with, but it is not a new reading: the
    // credits seen are only what the service said (recorded when an epoch opens).
    assert_eq!(store.get(b).await.unwrap().unwrap().credits_before, Some(3));
    assert_eq!(store.latest_credits().await.unwrap(), None);
    store.record_credits(98).await.unwrap();
    store.record_credits(97).await.unwrap();
    assert_eq!(store.latest_credits().await.unwrap().unwrap().1, 97);
    store.fail(a, State::Queued, "not an image").await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts[&State::Queued],
            counts[&State::Failed],
            counts[&State::Held]
        ),
        (1, 1, 0)
    );
    assert_eq!(ids(&store.jobs_in(State::Failed).await.unwrap()), vec![a]);
    store.close().await;

    let store = queue.open().await;
    assert_eq!(store.get(a).await.unwrap().unwrap().state(), State::Failed);
    assert_eq!(store.events(b).await.unwrap().len(), 3);
    if let Some(path) = queue.sqlite_path() {
        assert_eq!(crate::helpers::integrity(path).await, Ok(()));
    }
}

both_backends!(every_legal_transition_through_the_api_writes_one_event);
async fn every_legal_transition_through_the_api_writes_one_event(backend: Backend) {
    use State::*;
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let id = add(&store, "a.jpg").await;
    let mut seen = std::collections::BTreeSet::new();
    let mut n_events = 1;
    macro_rules! step {
        ($call:expr, $from:expr, $to:expr) => {{
            $call.await.unwrap();
            let ev = store.events(id).await.unwrap();
            n_events += 1;
            assert_eq!(ev.len(), n_events, "{:?} -> {:?}", $from, $to);
            let last = ev.last().unwrap();
            assert_eq!((last.from, last.to), (Some($from), $to));
            assert_eq!(store.get(id).await.unwrap().unwrap().state(), $to);
            seen.insert(($from, $to));
        }};
    }
    step!(store.begin_upload(id, 9), Queued, Uploading);
    step!(store.requeue(id, Uploading, "503", 0), Uploading, Queued);
    step!(store.fail(id, Queued, "not an image",), Queued, Failed);
    step!(store.retry(id, false), Failed, Queued);
    step!(
        store.hold(id, Queued, "same photo as a held job", false),
        Queued,
        Held
    );
    step!(store.retry(id, false), Held, Queued);
    step!(store.begin_upload(id, 9), Queued, Uploading);
    step!(store.fail(id, Uploading, "errno 9005",), Uploading, Failed);
    step!(store.retry(id, false), Failed, Queued);
    step!(store.begin_upload(id, 9), Queued, Uploading);
    step!(
        store.hold(id, Uploading, "answer lost", true),
        Uploading,
        Held
    );
    // Charged with the answer lost: only --reupload queues it again.
    step!(store.retry(id, true), Held, Queued);
    step!(store.begin_upload(id, 8), Queued, Uploading);
    step!(
        record_uploaded(&store, id, "m1", "u1"),
        Uploading,
        Processing
    );
    step!(store.hold(id, Processing, "9002", false), Processing, Held);
    step!(store.retry(id, false), Held, Downloading);
    step!(
        store.hold(id, Downloading, "expired", false),
        Downloading,
        Held
    );
    step!(store.retry(id, false), Held, Downloading);
    step!(
        store.requeue(id, Downloading, "expired, reupload", 0),
        Downloading,
        Queued
    );
    step!(store.begin_upload(id, 7), Queued, Uploading);
    step!(
        record_uploaded(&store, id, "m2", "u2"),
        Uploading,
        Processing
    );
    step!(store.begin_download(id), Processing, Downloading);
    step!(
        store.finish(id, Downloading, Path::new("/o/a"), &hash('a')),
        Downloading,
        Done
    );
    step!(store.retry(id, true), Done, Queued);
    step!(
        store.finish(id, Queued, Path::new("/o/b"), &hash('b')),
        Queued,
        Done
    );
    step!(store.retry(id, true), Done, Queued);
    step!(store.skip(id, "hili's own result"), Queued, Skipped);
    step!(store.retry(id, true), Skipped, Queued);
    // The same photo as a done job whose result file is out of reach: fetched again.
    let twin_photo = hili::store::Photo {
        mdf: "m-twin".into(),
        img_url: Some("u-twin".into()),
    };
    step!(
        store.fetch_twin(id, JobId(999), &twin_photo, 1),
        Queued,
        Downloading
    );
    step!(
        store.requeue(id, Downloading, "expired, reupload", 0),
        Downloading,
        Queued
    );
    // A late upload answer is adopted from whatever state the job was moved to.
    let late = |mdf| Uploaded {
        mdf,
        img_url: "u",
        first_poll_at: None,
        sent_sha256: None,
    };
    step!(
        store.adopt_answer(id, Queued, &late("m3")),
        Queued,
        Processing
    );
    step!(store.hold(id, Processing, "9002", false), Processing, Held);
    step!(store.retry(id, true), Held, Queued);
    step!(store.hold(id, Queued, "twin held", false), Queued, Held);
    step!(store.adopt_answer(id, Held, &late("m4")), Held, Processing);
    step!(store.hold(id, Processing, "9002", false), Processing, Held);
    step!(store.retry(id, true), Held, Queued);
    step!(store.fail(id, Queued, "gave up",), Queued, Failed);
    step!(
        store.adopt_answer(id, Failed, &late("m5")),
        Failed,
        Processing
    );
    let legal = State::ALL
        .iter()
        .flat_map(|&f| State::ALL.iter().map(move |&t| (f, t)))
        .filter(|&(f, t)| hili::store::check(f, t).is_ok())
        .count();
    assert_eq!(seen.len(), legal, "all legal pairs covered: {seen:?}");
    // Five charges: three answered uploads, and the late answers adopted from queued and
    // failed (the hold had already counted its own).
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!((j.charges, j.attempts), (5, 0));
    assert_eq!(store.credits_spent().await.unwrap(), 5);
}

/// Crash at the fail points around a transition's COMMIT, in a child process (this test
/// binary re-run on `crash_child`), then check what a restart finds. SQLite only: the fail
/// points sit in SQLite's group commit (`store/write.rs`), and the file is what survives; on
/// PostgreSQL a node that dies mid-transaction is rolled back by the server.
#[tokio::test]
async fn crash_before_commit_loses_the_step_and_after_commit_keeps_it() {
    for (at, expect_state, expect_events) in [
        ("before:queued->uploading", State::Queued, 1),
        ("after:queued->uploading", State::Uploading, 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hili.db");
        let id = {
            let store = Store::open(&db).await.unwrap();
            let id = add(&store, "a.jpg").await;
            store.close().await;
            id
        };
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HILI_CRASH_AT", at)
            .env("HILI_TEST_CRASH_DB", &db)
            .env("HILI_TEST_CRASH_JOB", id.0.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{at}: the child should have aborted");
        let store = Store::open(&db).await.unwrap();
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.state(), expect_state, "{at}");
        assert_eq!(store.events(id).await.unwrap().len(), expect_events, "{at}");
        assert_eq!(crate::helpers::integrity(&db).await, Ok(()));
    }
}

/// Child half of the crash test; does nothing unless started by it.
#[tokio::test]
async fn crash_child() {
    let (Ok(db), Ok(id)) = (
        std::env::var("HILI_TEST_CRASH_DB"),
        std::env::var("HILI_TEST_CRASH_JOB"),
    ) else {
        return;
    };
    let store = Store::open(Path::new(&db)).await.unwrap();
    let id = JobId(id.parse().unwrap());
    store.begin_upload(id, 5).await.unwrap();
    // Not reached when the fail point fires.
    std::process::exit(0);
}

both_backends!(the_upload_intent_is_refused_while_an_identical_photo_is_in_flight);
/// Two workers that hashed the same photo at the same moment: the store lets exactly one of
/// them commit to the upload, atomically with the state change.
async fn the_upload_intent_is_refused_while_an_identical_photo_is_in_flight(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let a = add(&store, "a.jpg").await;
    let b = add(&store, "b.jpg").await;
    let c = add(&store, "c.jpg").await;
    let h = hash('A');
    let intent = |exclusive| UploadIntent {
        epoch: None,
        credits_before: 50,
        content_sha256: Some(&h),
        exclusive,
    };
    store.begin_upload_with(a, &intent(true)).await.unwrap();
    let got = store.get(a).await.unwrap().unwrap();
    assert_eq!(got.content_sha256.as_deref(), Some(hash('a').as_str()));
    assert_eq!(got.credits_before, Some(50));

    let events_before = store.events(b).await.unwrap().len();
    assert!(matches!(
        store.begin_upload_with(b, &intent(true)).await,
        Err(StoreError::TwinBusy { job }) if job == b
    ));
    // Nothing of the refused intent was written.
    let got = store.get(b).await.unwrap().unwrap();
    assert_eq!((got.state(), got.content_sha256), (State::Queued, None));
    assert_eq!(store.events(b).await.unwrap().len(), events_before);

    // Held after a charge blocks too (paying again would double the charge); a twin that
    // failed without a charge does not.
    store
        .hold(a, State::Uploading, "charged, result unknown", true)
        .await
        .unwrap();
    assert!(matches!(
        store.begin_upload_with(b, &intent(true)).await,
        Err(StoreError::TwinBusy { .. })
    ));
    // `--force` re-processes anyway.
    store.begin_upload_with(c, &intent(false)).await.unwrap();

    // Another photo: its first job failed without a charge, so the second may go.
    let f = add(&store, "f.jpg").await;
    let g = add(&store, "g.jpg").await;
    let other = hash('B');
    let other_intent = UploadIntent {
        content_sha256: Some(&other),
        ..intent(true)
    };
    store.begin_upload_with(f, &other_intent).await.unwrap();
    store.fail(f, State::Uploading, "9001").await.unwrap();
    store.begin_upload_with(g, &other_intent).await.unwrap();
    assert_eq!(
        store.get(g).await.unwrap().unwrap().state(),
        State::Uploading
    );
}

both_backends!(due_work_answers_every_stage_in_one_look_and_leaves_out_busy_jobs);
async fn due_work_answers_every_stage_in_one_look_and_leaves_out_busy_jobs(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let q1 = add(&store, "q1.jpg").await;
    let q2 = add(&store, "q2.jpg").await;
    let p = add(&store, "p.jpg").await;
    let d = add(&store, "d.jpg").await;
    to_processing(&store, p, "mp").await;
    to_processing(&store, d, "md").await;
    store.begin_download(d).await.unwrap();
    store.set_next_poll(p, 5_000).await.unwrap();
    store.defer(q2, State::Queued, 7_000).await.unwrap();

    let all = DueLimits {
        polls: 10,
        downloads: 10,
        uploads: 10,
    };
    let due = store.due_work(6_000, all, &[]).await.unwrap();
    assert_eq!(paid_ids(&due.polls), vec![p]);
    assert_eq!(paid_ids(&due.downloads), vec![d]);
    assert_eq!(ids(&due.uploads), vec![q1]);
    assert_eq!(due.next_due_ms, Some(0), "q1 and d are due since 0");

    // Busy jobs are left out; a zero limit skips the stage.
    let due = store.due_work(6_000, all, &[q1, d]).await.unwrap();
    assert_eq!(
        (ids(&due.uploads), paid_ids(&due.downloads)),
        (vec![], vec![])
    );
    let none = DueLimits { polls: 0, ..all };
    assert!(
        store
            .due_work(6_000, none, &[])
            .await
            .unwrap()
            .polls
            .is_empty()
    );
    // Before p's poll and q2's retry are due, only the rest is.
    let due = store.due_work(4_000, all, &[q1, d]).await.unwrap();
    assert!(due.polls.is_empty() && due.uploads.is_empty());
}

both_backends!(job_folders_lists_each_folder_of_the_chosen_states_once);
async fn job_folders_lists_each_folder_of_the_chosen_states_once(backend: Backend) {
    use hili::store::JobFolders;
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let new = |path: &[u8], out: &str| {
        let mut j = job("x");
        j.source_path = PathBuf::from(OsStr::from_bytes(path));
        j.output_dir = PathBuf::from(out);
        j
    };
    let a1 = store
        .enqueue(new(b"/photos/in/a/1.jpg", "/o1"))
        .await
        .unwrap()
        .id();
    store
        .enqueue(new(b"/photos/in/a/2.jpg", "/o1"))
        .await
        .unwrap();
    store
        .enqueue(new(b"/photos/in/b\xff/3.jpg", "/o1"))
        .await
        .unwrap();
    store
        .enqueue(new(b"/photos/in/a/4.jpg", "/o2"))
        .await
        .unwrap();
    let done = store
        .enqueue(new(b"/photos/in/c/5.jpg", "/o1"))
        .await
        .unwrap()
        .id();
    store
        .finish(done, State::Queued, Path::new("/o1/c/5.sr.jpg"), &hash('c'))
        .await
        .unwrap();
    to_processing(&store, a1, "m").await;

    let folder = |out: &str, dir: &[u8]| JobFolders {
        output_dir: PathBuf::from(out),
        source_root: PathBuf::from("/photos/in"),
        source_dir: PathBuf::from(OsStr::from_bytes(dir)),
    };
    let queued = store.job_folders(&[State::Queued]).await.unwrap();
    assert_eq!(
        queued.into_iter().collect::<Vec<_>>(),
        vec![
            folder("/o1", b"/photos/in/a"),
            folder("/o1", b"/photos/in/b\xff"),
            folder("/o2", b"/photos/in/a"),
        ],
        "one entry per folder; done jobs left out"
    );
    let processing = store.job_folders(&[State::Processing]).await.unwrap();
    assert_eq!(processing.len(), 1);
    assert!(store.job_folders(&[]).await.unwrap().is_empty());
}

both_backends!(a_reused_inode_is_not_taken_for_a_renamed_file);
/// A rename keeps a file's device, inode, size, time and content; an inode that a new photo
/// reuses after the old one was deleted keeps none but the inode. Only the first is the same
/// file (superseded / renamed), never the second (it must be processed).
async fn a_reused_inode_is_not_taken_for_a_renamed_file(backend: Backend) {
    let Some((_q, store)) = backend.fresh().await else {
        return;
    };
    let inode = Some(hili::media::FileId { dev: 7, ino: 42 });
    let enqueue = |name: &str, size: u64, mtime_ns: i64| NewJob {
        file_id: inode,
        size,
        mtime_ns,
        ..job(name)
    };
    let a = store.enqueue(enqueue("a.jpg", 100, 1)).await.unwrap().id();
    let intent = UploadIntent {
        epoch: None,
        credits_before: 5,
        content_sha256: Some(&hash('a')),
        exclusive: false,
    };
    store.begin_upload_with(a, &intent).await.unwrap();
    record_uploaded(&store, a, "m", "u").await.unwrap();
    let a_job = store.get(a).await.unwrap().unwrap();

    // A new photo with the reused inode: other size, time and content.
    let b = store.enqueue(enqueue("b.jpg", 200, 2)).await.unwrap().id();
    let mut b_job = store.get(b).await.unwrap().unwrap();
    b_job.content_sha256 = Some(hash('b'));
    assert_eq!(store.renamed_from(&b_job).await.unwrap(), None);
    assert_eq!(store.successor(&a_job).await.unwrap(), None);

    // The same file under a new name.
    let c = store.enqueue(enqueue("c.jpg", 100, 1)).await.unwrap().id();
    let mut c_job = store.get(c).await.unwrap().unwrap();
    c_job.content_sha256 = Some(hash('a'));
    assert_eq!(
        store.renamed_from(&c_job).await.unwrap().map(|j| j.id),
        Some(a)
    );
    assert_eq!(
        store.successor(&a_job).await.unwrap().map(|j| j.id),
        Some(c)
    );
}

both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    processes_opening_a_new_queue_at_once_all_open_it
);
/// SQLite: 8 stores with their own connections open one new file at once (a daemon starting
/// while `hili status` runs: each sees every migration pending). PostgreSQL: 8 nodes open
/// one new database at once (the migrator's lock applies the schema once).
async fn processes_opening_a_new_queue_at_once_all_open_it(backend: Backend) {
    // Each PostgreSQL round leaves a database on the test server: fewer of them.
    let rounds = match backend {
        Backend::Sqlite => 10,
        Backend::Postgres => 3,
    };
    for round in 0..rounds {
        let Some(queue) = backend.place().await else {
            return;
        };
        let queue = std::sync::Arc::new(queue);
        let opens = (0..8).map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.open_as(&format!("n{i}")).await.map(|_| ()) })
        });
        for (i, open) in opens.collect::<Vec<_>>().into_iter().enumerate() {
            let opened = open.await.unwrap();
            assert!(opened.is_ok(), "round {round}, store {i}: {opened:?}");
        }
        let store = queue.open().await;
        assert_eq!(store.job_count().await.unwrap(), 0);
    }
}
