//! User retries (`hili retry [--reupload]`) and the column updates that are not transitions
//! (poll scheduling, upload backoff of a queued job).

use super::sql::{Set, Val};
use super::{JobId, SqliteStore, State, StoreError};

impl SqliteStore {
    /// Retries a failed, held or (with `reupload`) done job; returns its new state.
    ///
    /// - failed → queued;
    /// - held with an mdf and `!reupload` → downloading (fetch the paid result again);
    /// - held with `reupload`, or held without an mdf → queued, mdf cleared;
    /// - done with `reupload` → queued, mdf and output cleared.
    ///
    /// Going to queued from a job whose credit was spent will spend another one: the caller
    /// warns about that (see `Job::credit_spent`). Other states → `NotRetryable`.
    pub async fn retry(&self, id: JobId, reupload: bool) -> Result<State, StoreError> {
        let job = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
        let from = job.state();
        let to = match from {
            State::Failed => State::Queued,
            State::Held if job.mdf().is_some() && !reupload => State::Downloading,
            // Charged with its answer lost: there is nothing to fetch, and only `--reupload`
            // may spend (another) credit on it.
            State::Held if !reupload && self.held_after_a_lost_answer(id).await? => {
                return Err(StoreError::NotRetryable {
                    job: id,
                    state: from,
                    hint: "its upload was charged but the answer was lost, so there is no \
                           result to fetch; `hili retry --reupload` uploads it again and spends \
                           another credit (about ¥5)",
                });
            }
            State::Held => State::Queued,
            State::Done | State::Skipped if reupload => State::Queued,
            State::Skipped => {
                return Err(StoreError::NotRetryable {
                    job: id,
                    state: from,
                    hint: "it was not processed on purpose (see its reason); \
                           `hili retry --reupload` processes it anyway and spends a credit",
                });
            }
            State::Done => {
                return Err(StoreError::NotRetryable {
                    job: id,
                    state: from,
                    hint: "it is already done; use `hili retry --reupload` to process it again (spends a credit)",
                });
            }
            State::Queued | State::Uploading | State::Processing | State::Downloading => {
                return Err(StoreError::NotRetryable {
                    job: id,
                    state: from,
                    hint: "it is still in progress; nothing to retry (see `hili jobs`)",
                });
            }
        };
        // The columns each way resets are the edges' (see `state::EDGES`).
        let edge = match (from, to) {
            (State::Skipped, _) => "retry_skipped",
            (_, State::Queued) => "retry",
            _ => "retry_fetch",
        };
        let detail = if reupload {
            "retry --reupload"
        } else {
            "retry"
        };
        self.take_now(edge, id, from, Vec::new(), detail.to_string())
            .await?;
        Ok(to)
    }

    /// Whether a held job was held straight from `uploading`: its upload was (probably) charged
    /// and the answer lost. A hold of a twin, or after processing, is not that.
    async fn held_after_a_lost_answer(&self, id: JobId) -> Result<bool, StoreError> {
        let events = self.events(id).await?;
        Ok(events
            .last()
            .is_some_and(|e| e.to == State::Held && e.from == Some(State::Uploading)))
    }

    /// Schedules the next status poll of a processing job. Not a transition: no event.
    pub async fn set_next_poll(&self, id: JobId, at_ms: i64) -> Result<(), StoreError> {
        let sets = [Set::Bind("next_poll_at", Val::Int(Some(at_ms)))];
        let context = format!("scheduling the next poll of job {id}");
        self.update_in(id, State::Processing, &sets, &context).await
    }
}
