//! The guarded write's SQL and refusals, and its races: two nodes on one database moving the
//! same job, intents for twin photos at once, an intent meeting an epoch being closed.

use super::fixtures::{epoch, events, job, lease, read, sha, two_stores, until_waiting};
use super::*;
use crate::store::UploadIntent;

fn intent(sha: &str, epoch: Option<EpochId>) -> UploadIntent<'_> {
    UploadIntent {
        credits_before: 50,
        epoch,
        content_sha256: Some(sha),
        exclusive: true,
    }
}

/// Many tries, so that the two intents really overlap on the server in some of them.
const ROUNDS: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_one_intent_exactly_one_wins() {
    let Some((a, b, _dir)) = two_stores().await else {
        return;
    };
    let e = epoch(&a).await;
    for round in 0..ROUNDS {
        let h = sha(round);
        let id = job(&a, Some(&h), None).await;
        let up = intent(&h, Some(e));
        let (ra, rb) = tokio::join!(a.begin_upload_with(id, &up), b.begin_upload_with(id, &up));
        let winner = match (&ra, &rb) {
            (Ok(()), Err(StoreError::Conflict { found, .. })) => {
                assert_eq!(*found, State::Uploading);
                "node-a"
            }
            (Err(StoreError::Conflict { found, .. }), Ok(())) => {
                assert_eq!(*found, State::Uploading);
                "node-b"
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        let job = read(&a, id).await;
        assert_eq!(job.state(), State::Uploading);
        assert_eq!(job.attempts, 1, "round {round}: one attempt counted");
        assert_eq!(events(&a, id).await.len(), 2, "round {round}");
        assert_eq!(lease(&a, id).await.0.as_deref(), Some(winner));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_intents_from_two_nodes_at_once_one_is_busy() {
    let Some((a, b, _dir)) = two_stores().await else {
        return;
    };
    for round in 0..ROUNDS {
        let h = sha(1000 + round);
        let (ja, jb) = (job(&a, Some(&h), None).await, job(&b, Some(&h), None).await);
        // Every other round, both wait on the identity's lock first and are let go at once.
        let held = match round % 2 {
            0 => {
                let mut conn = a.pool().acquire().await.expect("conn");
                sqlx::query(&TWIN_LOCK.replace("pg_advisory_xact_lock", "pg_advisory_lock"))
                    .bind(&h)
                    .bind(ja.0)
                    .execute(&mut *conn)
                    .await
                    .expect("lock");
                Some(conn)
            }
            _ => None,
        };
        let up = intent(&h, None);
        let race =
            async { tokio::join!(a.begin_upload_with(ja, &up), b.begin_upload_with(jb, &up)) };
        let release = async {
            if let Some(mut conn) = held {
                until_waiting(&a, 2).await;
                sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut *conn)
                    .await
                    .expect("unlock");
            }
        };
        let ((ra, rb), ()) = tokio::join!(race, release);
        let busy = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::TwinBusy { .. }));
        assert!(
            (ra.is_ok() && busy(&rb)) || (busy(&ra) && rb.is_ok()),
            "round {round}: {ra:?} {rb:?}"
        );
        let (loser, won) = if ra.is_ok() { (jb, ja) } else { (ja, jb) };
        assert_eq!(read(&a, loser).await.state(), State::Queued);
        assert_eq!(events(&a, loser).await.len(), 1, "the loser wrote nothing");
        assert_eq!(read(&a, won).await.state(), State::Uploading);
    }
}

#[tokio::test]
async fn an_intent_waits_for_an_epoch_being_closed_then_is_refused() {
    let Some((a, b, _dir)) = two_stores().await else {
        return;
    };
    let e = epoch(&a).await;
    let h = sha(7);
    let id = job(&a, Some(&h), None).await;
    // Another node is closing the epoch and has not committed yet.
    let mut closer = b.begin("test").await.expect("begin");
    sqlx::query("UPDATE credit_epochs SET closed_at = 1 WHERE id = $1")
        .bind(e.0)
        .execute(&mut *closer)
        .await
        .expect("closing");
    let intent = tokio::spawn({
        let (a, h) = (a.clone(), h.clone());
        async move { a.begin_upload_with(id, &intent(&h, Some(e))).await }
    });
    until_waiting(&a, 1).await;
    assert!(!intent.is_finished(), "the intent waits for the closer");
    closer.commit().await.expect("commit");
    let r = intent.await.expect("task");
    match r {
        Err(StoreError::Invalid { detail }) => assert!(
            detail.contains(&format!("credit epoch {e} is closed")),
            "{detail}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(read(&a, id).await.state(), State::Queued);
    assert_eq!(events(&a, id).await.len(), 1);
}

#[test]
fn parameters_are_numbered_in_bind_order() {
    let sets = [
        Set::Bind("reason", Val::Text(Some("r".into()))),
        Set::Raw("mdf = NULL"),
        Set::Bind("not_before", Val::Int(Some(7))),
    ];
    let extras = Extras {
        twin: Some("ab"),
        no_mdf: true,
        ..Extras::default()
    };
    let (sql, binds) =
        update_sql(JobId(9), State::Queued, State::Uploading, &sets, &extras).unwrap();
    assert_eq!(
        &sql[..sql.find(" AND NOT EXISTS").unwrap()],
        "UPDATE jobs SET state = $1, updated_at = $2, reason = $3, mdf = NULL, \
         not_before = $4 WHERE id = $5 AND state = $6"
    );
    assert!(sql.contains("t.content_sha256 = $7 "), "{sql}");
    assert!(sql.ends_with(" AND mdf IS NULL"), "{sql}");
    assert_eq!(binds.len(), 7);
    assert!(matches!(&binds[6], Val::Text(Some(s)) if s == "ab"));
    assert!(matches!(binds[4], Val::Int(Some(9))));
}

#[test]
fn a_refusal_says_why() {
    let id = JobId(3);
    let r = |found: Option<&str>, twin| refusal(id, State::Queued, found.map(Into::into), twin);
    assert!(matches!(r(None, true), StoreError::NotFound(JobId(3))));
    assert!(matches!(
        r(Some("queued"), true),
        StoreError::TwinBusy { .. }
    ));
    assert!(matches!(
        r(Some("uploading"), true),
        StoreError::Conflict {
            found: State::Uploading,
            ..
        }
    ));
    assert!(matches!(
        r(Some("queued"), false),
        StoreError::Conflict {
            found: State::Queued,
            ..
        }
    ));
    assert!(matches!(
        r(Some("bogus"), false),
        StoreError::Corrupt { .. }
    ));
}
