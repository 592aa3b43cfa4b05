//! The transitions on a real PostgreSQL server: each edge's columns, events and lease, the
//! refusals (stale moves, busy twins, closed epochs) and where `retry` sends a job.

use super::*;
use crate::store::pg::test_store;
use crate::store::pg::transitions_write::fixtures::{epoch, events, job, lease, read, sha};
use crate::store::{Event, JobStore, now_ms};

fn answer(mdf: &str) -> Uploaded<'_> {
    Uploaded {
        mdf,
        img_url: "http://127.0.0.1/r.jpg",
        first_poll_at: Some(5),
        sent_sha256: None,
    }
}

fn intent(sha: Option<&str>, exclusive: bool) -> UploadIntent<'_> {
    UploadIntent {
        credits_before: 40,
        epoch: None,
        content_sha256: sha,
        exclusive,
    }
}

/// The (from, to) of each event after the one written at enqueue.
fn moves(events: &[Event]) -> Vec<(State, State)> {
    events[1..]
        .iter()
        .map(|e| (e.from.expect("a move has a from"), e.to))
        .collect()
}

#[tokio::test]
async fn a_job_lives_its_life_one_event_per_edge_with_the_lease() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let h = sha(1);
    let id = job(&store, None, None).await;
    let e = epoch(&store).await;
    let up = UploadIntent {
        epoch: Some(e),
        ..intent(Some(&h), true)
    };
    store.begin_upload_with(id, &up).await.expect("intent");
    let j = read(&store, id).await;
    assert_eq!(
        (j.state(), j.attempts, j.epoch),
        (State::Uploading, 1, Some(e))
    );
    assert_eq!(
        (j.credits_before, j.content_sha256.as_deref()),
        (Some(40), Some(&*h))
    );
    let (node, until) = lease(&store, id).await;
    assert_eq!(node.as_deref(), Some("node-a"));
    assert!(until.expect("lease_until") > now_ms());

    let sent = sha(2);
    let answered = Uploaded {
        sent_sha256: Some(&sent),
        ..answer("m1")
    };
    store.uploaded(id, &answered).await.expect("uploaded");
    store.set_next_poll(id, 99).await.expect("poll");
    let j = read(&store, id).await;
    assert_eq!((j.mdf(), j.next_poll_at_ms), (Some("m1"), Some(99)));
    assert_eq!((j.credit_spent, j.charges), (true, 1));
    assert_eq!(j.content_sha256.as_deref(), Some(&*sent), "the bytes sent");
    assert_eq!(lease(&store, id).await.0.as_deref(), Some("node-a"));

    store.begin_download(id).await.expect("download");
    store
        .defer(id, State::Downloading, 1234)
        .await
        .expect("defer");
    assert_eq!(read(&store, id).await.not_before_ms, 1234);
    let out = Path::new("/out/a.jpg");
    store
        .finish(id, State::Downloading, out, &h)
        .await
        .expect("finish");
    let j = read(&store, id).await;
    assert_eq!(
        (j.state(), j.output_path.as_deref()),
        (State::Done, Some(out))
    );
    assert_eq!(
        lease(&store, id).await,
        (None, None),
        "a done job has no lease"
    );

    assert_eq!(store.retry(id, true).await.expect("retry"), State::Queued);
    let j = read(&store, id).await;
    assert_eq!(
        (j.mdf(), j.output_path.as_deref(), j.attempts),
        (None, None, 0)
    );
    let evs = events(&store, id).await;
    use State::*;
    assert_eq!(
        moves(&evs),
        [
            (Queued, Uploading),
            (Uploading, Processing),
            (Processing, Downloading),
            (Downloading, Done),
            (Done, Queued)
        ],
        "one event per edge, none for the poll schedule or the deferral"
    );
    assert_eq!(evs[1].detail.as_deref(), Some("credits_before=40"));
    assert_eq!(evs[2].detail.as_deref(), Some("mdf=m1"));
    assert_eq!(evs[5].detail.as_deref(), Some("retry --reupload"));
}

#[tokio::test]
async fn holds_fails_skips_requeues_and_retries_take_their_edges() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    use State::*;
    // Charged with the answer lost: held as charged; a plain retry refuses to spend.
    let lost = job(&store, None, None).await;
    store.begin_upload(lost, 9).await.expect("intent");
    store
        .hold(lost, Uploading, "answer lost", true)
        .await
        .expect("hold");
    let j = read(&store, lost).await;
    assert_eq!(
        (j.state(), j.charges, j.reason.as_deref()),
        (Held, 1, Some("answer lost"))
    );
    assert_eq!(lease(&store, lost).await, (None, None));
    let r = store.retry(lost, false).await;
    assert!(
        matches!(r, Err(StoreError::NotRetryable { state: Held, .. })),
        "{r:?}"
    );
    // Its late answer is adopted without counting the charge twice.
    store
        .adopt_answer(lost, Held, &answer("m9"))
        .await
        .expect("adopt");
    let j = read(&store, lost).await;
    assert_eq!((j.state(), j.charges, j.mdf()), (Processing, 1, Some("m9")));
    // Held with a result: a retry fetches it again.
    store
        .hold(lost, Processing, "expired?", false)
        .await
        .expect("hold");
    assert_eq!(store.retry(lost, false).await.expect("retry"), Downloading);

    let other = job(&store, None, None).await;
    store.begin_upload(other, 9).await.expect("intent");
    store
        .requeue(other, Uploading, "refused", 77)
        .await
        .expect("requeue");
    let j = read(&store, other).await;
    assert_eq!((j.state(), j.not_before_ms), (Queued, 77));
    assert_eq!(
        lease(&store, other).await,
        (None, None),
        "a queued job has no lease"
    );
    store.fail(other, Queued, "bad input").await.expect("fail");
    assert_eq!(store.retry(other, false).await.expect("retry"), Queued);
    store.skip(other, "own result").await.expect("skip");
    let r = store.retry(other, false).await;
    assert!(
        matches!(r, Err(StoreError::NotRetryable { state: Skipped, .. })),
        "{r:?}"
    );
    assert_eq!(store.retry(other, true).await.expect("retry"), Queued);
    assert!(read(&store, other).await.force, "retry_skipped forces it");
    assert_eq!(
        moves(&events(&store, other).await),
        [
            (Queued, Uploading),
            (Uploading, Queued),
            (Queued, Failed),
            (Failed, Queued),
            (Queued, Skipped),
            (Skipped, Queued)
        ]
    );
}

#[tokio::test]
async fn a_stale_move_is_a_conflict_and_changes_nothing() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let id = job(&store, None, None).await;
    let before = read(&store, id).await;
    let r = store.begin_download(id).await;
    assert!(
        matches!(
            r,
            Err(StoreError::Conflict {
                expected: State::Processing,
                found: State::Queued,
                ..
            })
        ),
        "{r:?}"
    );
    let r = store.set_next_poll(id, 5).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    let r = store.fail(id, State::Done, "x").await;
    assert!(matches!(r, Err(StoreError::Illegal(_))), "{r:?}");
    let r = store.defer(id, State::Processing, 5).await;
    assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    assert_eq!(read(&store, id).await, before, "nothing changed");
    assert_eq!(events(&store, id).await.len(), 1, "no event written");
    let r = store.skip(JobId(id.0 + 100), "gone").await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");

    // A late answer never replaces a result the job has meanwhile.
    store.begin_upload(id, 1).await.expect("intent");
    store.uploaded(id, &answer("m1")).await.expect("uploaded");
    store
        .hold(id, State::Processing, "lost", false)
        .await
        .expect("hold");
    let r = store.adopt_answer(id, State::Held, &answer("m2")).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    assert_eq!(read(&store, id).await.mdf(), Some("m1"));
}

#[tokio::test]
async fn an_intent_waits_while_a_twin_is_busy_but_not_for_another_colour() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let h = sha(3);
    let first = job(&store, Some(&h), None).await;
    let twin = job(&store, Some(&h), None).await;
    let coloured = job(&store, Some(&h), Some("1,2,3")).await;
    store
        .begin_upload_with(first, &intent(Some(&h), true))
        .await
        .expect("first");
    let r = store.begin_upload_with(twin, &intent(Some(&h), true)).await;
    assert!(matches!(r, Err(StoreError::TwinBusy { .. })), "{r:?}");
    assert_eq!(read(&store, twin).await.state(), State::Queued);
    assert_eq!(events(&store, twin).await.len(), 1);
    store
        .begin_upload_with(coloured, &intent(Some(&h), true))
        .await
        .expect("other colour");
    // Held after a charge still blocks; `--force` (not exclusive) goes anyway.
    store
        .hold(first, State::Uploading, "lost", true)
        .await
        .expect("hold");
    let r = store.begin_upload_with(twin, &intent(Some(&h), true)).await;
    assert!(matches!(r, Err(StoreError::TwinBusy { .. })), "{r:?}");
    store
        .begin_upload_with(twin, &intent(Some(&h), false))
        .await
        .expect("forced");
}

#[tokio::test]
async fn an_intent_into_a_closed_epoch_is_refused() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    for column in ["closed_at = 1", "closed_at = 2, end_credits = 0"] {
        let e = epoch(&store).await;
        store
            .execute(&format!(
                "UPDATE credit_epochs SET {column} WHERE id = {}",
                e.0
            ))
            .await
            .expect("close");
        let id = job(&store, None, None).await;
        let up = UploadIntent {
            epoch: Some(e),
            ..intent(None, true)
        };
        match store.begin_upload_with(id, &up).await {
            Err(StoreError::Invalid { detail }) => assert_eq!(
                detail,
                format!(
                    "job {id}: credit epoch {e} is closed; the upload waits \
                     for the next epoch"
                )
            ),
            other => panic!("{column}: {other:?}"),
        }
        assert_eq!(read(&store, id).await.state(), State::Queued);
        assert_eq!(lease(&store, id).await, (None, None));
    }
}

#[test]
fn retry_goes_where_the_sqlite_queue_sends_it() {
    use State::*;
    let t = |from, mdf, lost, re| retry_target(from, mdf, lost, re).map(|(s, _)| s);
    assert_eq!(t(Failed, false, false, false), Ok(Queued));
    assert_eq!(t(Held, true, false, false), Ok(Downloading));
    assert!(t(Held, false, true, false).is_err());
    assert_eq!(t(Held, false, true, true), Ok(Queued));
    assert_eq!(t(Held, false, false, false), Ok(Queued));
    assert_eq!(
        retry_target(Skipped, false, false, true),
        Ok((Queued, "retry_skipped"))
    );
    assert_eq!(
        retry_target(Held, true, false, false),
        Ok((Downloading, "retry_fetch"))
    );
    for s in [Queued, Uploading, Processing, Downloading, Done, Skipped] {
        assert!(t(s, false, false, false).is_err(), "{s}");
    }
}
