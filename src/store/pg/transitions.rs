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
use crate::store::{JobId, Photo, State, StoreError, UploadIntent, Uploaded, now_ms};

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
    /// instant, in ONE transaction: its credit epoch (which must be open) and
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
        // The answers this node received are on the books before its next intent (the order
        // `JobStore::queue_uploaded` promises): a crash never leaves a newer intent without an
        // older answer.
        self.answers.drain().await;
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
    /// See [`SqliteStore::fetch_twin`](crate::store::SqliteStore::fetch_twin).
    pub async fn fetch_twin(
        &self,
        id: JobId,
        twin: JobId,
        photo: &Photo,
        processed_at_ms: i64,
    ) -> Result<(), StoreError> {
        let extras = Extras::default();
        self.take(
            "fetch_twin",
            id,
            State::Queued,
            crate::store::transitions::twin_photo(photo, processed_at_ms),
            Some(format!(
                "fetching the result of job {twin} (the same photo) again: no credit"
            )),
            &extras,
        )
        .await
    }

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
mod tests;
