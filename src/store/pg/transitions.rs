//! Every state change of a job on the shared queue, as thin wrappers over the state machine's
//! table (`state::EDGES`), with the same meaning, events rows and errors as the SQLite queue's
//! methods of the same names: each takes one named edge with `PgStore::take`
//! (`transitions_write.rs`), one guarded UPDATE plus its events row in one transaction, or a
//! `Conflict` and nothing written. On top of the SQLite behaviour, an upload's intent takes the
//! job's lease for this node and is admitted only into an open credit epoch, and every move to
//! a final state or back to queued gives the lease up.

use std::path::Path;

use sqlx::Row;

use super::PgStore;
use super::transitions_write::Extras;
use crate::store::error::SqlContext;
use crate::store::jobs::path_bytes;
use crate::store::sql::{Set, Val, hash_val, text};
use crate::store::{JobId, State, StoreError, UploadIntent, Uploaded, now_ms};

/// The columns an upload's answer sets (edges `uploaded`, `adopt_answer[_held]`); the PG twin
/// of the SQLite side's private `answer_values`.
fn answer_values(id: JobId, answer: &Uploaded<'_>) -> Result<Vec<(&'static str, Val)>, StoreError> {
    let sent = match answer.sent_sha256 {
        Some(sha) => Some(("content_sha256", hash_val(id, sha, "sent hash")?)),
        None => None,
    };
    let mut given = vec![
        ("mdf", text(answer.mdf)),
        ("img_url", text(answer.img_url)),
        ("processing_since", Val::Int(Some(now_ms()))),
        ("next_poll_at", Val::Int(answer.first_poll_at)),
    ];
    given.extend(sent);
    Ok(given)
}

/// Where `hili retry` sends a job, and by which edge; `Err` is the hint of `NotRetryable`.
/// `lost_answer`: the job was held straight from `uploading` (charged, answer lost).
fn retry_target(
    from: State,
    has_mdf: bool,
    lost_answer: bool,
    reupload: bool,
) -> Result<(State, &'static str), &'static str> {
    let to = match from {
        State::Failed => State::Queued,
        State::Held if has_mdf && !reupload => State::Downloading,
        // Charged with its answer lost: nothing to fetch, and only `--reupload` may spend
        // (another) credit on it.
        State::Held if !reupload && lost_answer => {
            return Err(
                "its upload was charged but the answer was lost, so there is no \
                        result to fetch; `hili retry --reupload` uploads it again and spends \
                        another credit (about ¥5)",
            );
        }
        State::Held => State::Queued,
        State::Done | State::Skipped if reupload => State::Queued,
        State::Skipped => {
            return Err("it was not processed on purpose (see its reason); \
                        `hili retry --reupload` processes it anyway and spends a credit");
        }
        State::Done => {
            return Err(
                "it is already done; use `hili retry --reupload` to process it again \
                        (spends a credit)",
            );
        }
        State::Queued | State::Uploading | State::Processing | State::Downloading => {
            return Err("it is still in progress; nothing to retry (see `hili jobs`)");
        }
    };
    // The columns each way resets are the edges' (see `state::EDGES`).
    let edge = match (from, to) {
        (State::Skipped, _) => "retry_skipped",
        (_, State::Queued) => "retry",
        _ => "retry_fetch",
    };
    Ok((to, edge))
}

impl PgStore {
    /// `uploading` → `processing` with the answer (edge `uploaded`), committed now: the vendor
    /// answered with an mdf, so one credit was charged. With it, when the first poll is due
    /// and, if the file changed while it was sent, the hash of the bytes really sent.
    pub async fn uploaded(&self, id: JobId, answer: &Uploaded<'_>) -> Result<(), StoreError> {
        let detail = format!("mdf={}", answer.mdf);
        let given = answer_values(id, answer)?;
        let extras = Extras::default();
        self.take(
            "uploaded",
            id,
            State::Uploading,
            given,
            Some(detail),
            &extras,
        )
        .await
    }

    /// queued → uploading (edge `begin_upload`) with everything the pipeline knows at that
    /// instant, in ONE transaction: its credit epoch (which must be open and not closing) and
    /// the count that opened it, the content hash, this node's lease on the job, and — when
    /// `exclusive` — the guarantee that no identical photo is in flight or held after a
    /// charge. Race-free across nodes: the identity's advisory lock is taken before the check
    /// (see `transitions_write::TWIN_LOCK`), so of two intents for one photo the loser gets
    /// [`StoreError::TwinBusy`] and nothing is written.
    pub async fn begin_upload_with(
        &self,
        id: JobId,
        intent: &UploadIntent<'_>,
    ) -> Result<(), StoreError> {
        let credits = i64::try_from(intent.credits_before).unwrap_or(i64::MAX);
        let mut given = vec![
            ("credits_before", Val::Int(Some(credits))),
            ("epoch", Val::Int(intent.epoch.map(|e| e.0))),
        ];
        let mut sha = None;
        if let Some(s) = intent.content_sha256 {
            let val = hash_val(id, s, "content hash")?;
            if let Val::Text(Some(lower)) = &val {
                sha = Some(lower.clone());
            }
            given.push(("content_sha256", val));
        }
        let extras = Extras {
            twin: sha.as_deref().filter(|_| intent.exclusive),
            epoch: intent.epoch,
            lease: true,
            ..Extras::default()
        };
        let detail = format!("credits_before={}", intent.credits_before);
        self.take(
            "begin_upload",
            id,
            State::Queued,
            given,
            Some(detail),
            &extras,
        )
        .await
    }

    /// An upload's answer that arrived after its job had left `uploading`: recorded, and the
    /// job resumes from it — `found` (queued, held or failed, without an mdf) → processing.
    /// A hold after a lost answer already counted the charge (edge `adopt_answer_held`); the
    /// other states did not (`adopt_answer`). A job that has an mdf meanwhile keeps it: the
    /// write is refused as a `Conflict`.
    pub async fn adopt_answer(
        &self,
        id: JobId,
        found: State,
        answer: &Uploaded<'_>,
    ) -> Result<(), StoreError> {
        let extras = Extras {
            no_mdf: true,
            ..Extras::default()
        };
        let name = match found {
            State::Held => "adopt_answer_held",
            _ => "adopt_answer",
        };
        let detail = format!("late upload answer adopted: mdf={}", answer.mdf);
        let given = answer_values(id, answer)?;
        self.take(name, id, found, given, Some(detail), &extras)
            .await
    }

    /// `from` → queued (edge `requeue`; uploading: not charged; downloading: expired and
    /// re-uploading). Clears mdf and result columns; no upload before `not_before_ms`.
    pub async fn requeue(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        not_before_ms: i64,
    ) -> Result<(), StoreError> {
        let given = vec![
            ("reason", text(reason)),
            ("not_before", Val::Int(Some(not_before_ms))),
        ];
        self.take_now("requeue", id, from, given, reason).await
    }

    /// `from` → failed (edge `fail`). A failed job was never charged: a charged job is held.
    pub async fn fail(&self, id: JobId, from: State, reason: &str) -> Result<(), StoreError> {
        self.take_now("fail", id, from, vec![("reason", text(reason))], reason)
            .await
    }

    /// queued → skipped (edge `skip`): not processed, on purpose, no credit spent.
    pub async fn skip(&self, id: JobId, reason: &str) -> Result<(), StoreError> {
        let given = vec![("reason", text(reason))];
        self.take_now("skip", id, State::Queued, given, reason)
            .await
    }

    /// `from` → held: needs a person. `credit_spent`: an upload reconciled as charged with its
    /// answer lost (edge `hold_charged`, from uploading, counts the charge); else edge `hold`.
    pub async fn hold(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        credit_spent: bool,
    ) -> Result<(), StoreError> {
        let name = match credit_spent && from == State::Uploading {
            true => "hold_charged",
            false => "hold",
        };
        self.take_now(name, id, from, vec![("reason", text(reason))], reason)
            .await
    }

    /// processing → downloading (edge `begin_download`): the vendor says the result is ready.
    pub async fn begin_download(&self, id: JobId) -> Result<(), StoreError> {
        let extras = Extras::default();
        self.take(
            "begin_download",
            id,
            State::Processing,
            Vec::new(),
            None,
            &extras,
        )
        .await
    }

    /// `from` → done (edge `finish`) with the output durably written (downloading), or copied
    /// from an identical done job without uploading (queued).
    pub async fn finish(
        &self,
        id: JobId,
        from: State,
        output_path: &Path,
        output_sha256: &str,
    ) -> Result<(), StoreError> {
        let given = vec![
            ("output_path", Val::Blob(Some(path_bytes(output_path)))),
            ("output_sha256", text(output_sha256)),
        ];
        let detail = format!("output {}", output_path.display());
        self.take_now("finish", id, from, given, &detail).await
    }

    /// Retries a failed, held or (with `reupload`) done or skipped job; returns its new state
    /// (the rules: SQLite's `retry`). Other states → `NotRetryable`.
    pub async fn retry(&self, id: JobId, reupload: bool) -> Result<State, StoreError> {
        let context = format!("reading job {id} to retry it");
        // Whether the newest event is the hold straight from uploading (charged, answer lost).
        let row = sqlx::query(
            "SELECT j.state, j.mdf IS NOT NULL AS has_mdf, COALESCE((SELECT \
             e.to_state = 'held' AND e.from_state IS NOT DISTINCT FROM 'uploading' \
             FROM events e WHERE e.job_id = j.id ORDER BY e.id DESC LIMIT 1), false) AS lost \
             FROM jobs j WHERE j.id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await
        .ctx(&context)?
        .ok_or(StoreError::NotFound(id))?;
        let state: String = row.try_get("state").ctx(&context)?;
        let from = state.parse::<State>().map_err(|e| StoreError::Corrupt {
            job: id,
            detail: e.to_string(),
        })?;
        let has_mdf: bool = row.try_get("has_mdf").ctx(&context)?;
        let lost: bool = row.try_get("lost").ctx(&context)?;
        let (to, edge) = retry_target(from, has_mdf, lost, reupload).map_err(|hint| {
            StoreError::NotRetryable {
                job: id,
                state: from,
                hint,
            }
        })?;
        let detail = if reupload {
            "retry --reupload"
        } else {
            "retry"
        };
        self.take_now(edge, id, from, Vec::new(), detail).await?;
        Ok(to)
    }

    /// Delays the next attempt at a queued or downloading job until `at_ms`. Not a
    /// transition: no event.
    pub async fn defer(&self, id: JobId, state: State, at_ms: i64) -> Result<(), StoreError> {
        if !matches!(state, State::Queued | State::Downloading) {
            return Err(StoreError::Invalid {
                detail: format!("job {id}: only queued or downloading jobs can be deferred"),
            });
        }
        let sets = [Set::Bind("not_before", Val::Int(Some(at_ms)))];
        let context = format!("deferring job {id}");
        self.update_in(id, state, &sets, &context).await
    }

    /// Schedules the next status poll of a processing job. Not a transition: no event.
    pub async fn set_next_poll(&self, id: JobId, at_ms: i64) -> Result<(), StoreError> {
        let sets = [Set::Bind("next_poll_at", Val::Int(Some(at_ms)))];
        let context = format!("scheduling the next poll of job {id}");
        self.update_in(id, State::Processing, &sets, &context).await
    }

    /// Takes the edge `name` with the columns `given`, its events row saying `detail`.
    async fn take_now(
        &self,
        name: &str,
        id: JobId,
        from: State,
        given: Vec<(&'static str, Val)>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let extras = Extras::default();
        self.take(name, id, from, given, Some(detail.to_string()), &extras)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_store;
    use super::super::transitions_write::fixtures::{epoch, events, job, lease, read, sha};
    use super::*;
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
    async fn an_intent_into_a_closing_or_closed_epoch_is_refused() {
        let Some((store, _dir)) = test_store("node-a").await else {
            return;
        };
        for column in ["closing = 1", "closed_at = 1"] {
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
                        "job {id}: credit epoch {e} is closing or closed; the upload waits \
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
}
