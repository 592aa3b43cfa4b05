//! Every state change of a job. Each is ONE guarded `UPDATE … WHERE id=? AND state=?from` plus
//! its `events` row in one `BEGIN IMMEDIATE` transaction; if the job is no longer in `from`,
//! nothing is written and the caller gets `Conflict` (so racing workers cannot both win).
//! Fail points `before:from->to` / `after:from->to` bracket the COMMIT for crash tests.

use std::fmt::Write as _;
use std::path::Path;

use super::error::SqlContext;
use super::jobs::path_bytes;
use super::{JobId, State, Store, StoreError, check, now_ms};
use crate::failpoint;

/// A value bound into an UPDATE.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

/// One `SET` item: `col = ?` with a bound value, or a fixed expression like `mdf = NULL`.
#[derive(Debug, Clone)]
pub(crate) enum Set {
    Bind(&'static str, Val),
    Raw(&'static str),
}

/// Columns that only mean something while a result exists at the vendor or on disk; cleared
/// whenever a job goes back to queued (a queued job never has an mdf).
pub(crate) const CLEAR_RESULT: [Set; 6] = [
    Set::Raw("mdf = NULL"),
    Set::Raw("img_url = NULL"),
    Set::Raw("processing_since = NULL"),
    Set::Raw("next_poll_at = NULL"),
    Set::Raw("output_path = NULL"),
    Set::Raw("output_sha256 = NULL"),
];

const CHARGE: [Set; 2] = [
    Set::Raw("credit_spent = 1"),
    Set::Raw("charges = charges + 1"),
];

fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

impl Store {
    /// queued → uploading: the upload intent, persisted BEFORE the request is sent.
    pub async fn begin_upload(&self, id: JobId, credits_before: u64) -> Result<(), StoreError> {
        let credits = i64::try_from(credits_before).unwrap_or(i64::MAX);
        let sets = [
            Set::Bind("credits_before", Val::Int(Some(credits))),
            Set::Raw("attempts = attempts + 1"),
            Set::Raw("reason = NULL"),
        ];
        let detail = format!("credits_before={credits_before}");
        self.transition(id, State::Queued, State::Uploading, &sets, Some(detail))
            .await
    }

    /// uploading → processing: the vendor answered with an mdf; one credit is charged.
    pub async fn record_uploaded(
        &self,
        id: JobId,
        mdf: &str,
        img_url: &str,
    ) -> Result<(), StoreError> {
        let mut sets = vec![
            Set::Bind("mdf", text(mdf)),
            Set::Bind("img_url", text(img_url)),
            Set::Bind("processing_since", Val::Int(Some(now_ms()))),
            Set::Raw("next_poll_at = NULL"),
        ];
        sets.extend(CHARGE);
        let detail = format!("mdf={mdf}");
        self.transition(id, State::Uploading, State::Processing, &sets, Some(detail))
            .await
    }

    /// `from` → queued (uploading: not charged; downloading: expired and re-uploading;
    /// failed/held/done: retries). Clears mdf and result columns; no upload before
    /// `not_before_ms`.
    pub async fn requeue(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        not_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut sets = vec![
            Set::Bind("reason", text(reason)),
            Set::Bind("not_before", Val::Int(Some(not_before_ms))),
        ];
        sets.extend(CLEAR_RESULT);
        self.transition(id, from, State::Queued, &sets, Some(reason.to_string()))
            .await
    }

    /// `from` → failed. `credit_spent` says the vendor charged for this failure; it is only
    /// counted as a new charge when `from` is uploading (later states were already counted).
    pub async fn fail(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        credit_spent: bool,
    ) -> Result<(), StoreError> {
        self.stop(id, from, State::Failed, reason, credit_spent)
            .await
    }

    /// `from` → held: needs a person. `credit_spent` as for [`Store::fail`]: pass true for an
    /// upload reconciled as charged with its answer lost.
    pub async fn hold(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        credit_spent: bool,
    ) -> Result<(), StoreError> {
        self.stop(id, from, State::Held, reason, credit_spent).await
    }

    async fn stop(
        &self,
        id: JobId,
        from: State,
        to: State,
        reason: &str,
        credit_spent: bool,
    ) -> Result<(), StoreError> {
        let mut sets = vec![
            Set::Bind("reason", text(reason)),
            Set::Raw("next_poll_at = NULL"),
        ];
        if credit_spent && from == State::Uploading {
            sets.extend(CHARGE);
        }
        self.transition(id, from, to, &sets, Some(reason.to_string()))
            .await
    }

    /// processing → downloading: the vendor says the result is ready.
    pub async fn begin_download(&self, id: JobId) -> Result<(), StoreError> {
        let sets = [Set::Raw("next_poll_at = NULL")];
        self.transition(id, State::Processing, State::Downloading, &sets, None)
            .await
    }

    /// `from` → done with the output durably written (downloading), or copied from an
    /// identical done job without uploading (queued).
    pub async fn finish(
        &self,
        id: JobId,
        from: State,
        output_path: &Path,
        output_sha256: &str,
    ) -> Result<(), StoreError> {
        let sets = [
            Set::Bind("output_path", Val::Blob(Some(path_bytes(output_path)))),
            Set::Bind("output_sha256", text(output_sha256)),
            Set::Raw("reason = NULL"),
            Set::Raw("next_poll_at = NULL"),
        ];
        let detail = format!("output {}", output_path.display());
        self.transition(id, from, State::Done, &sets, Some(detail))
            .await
    }

    /// Applies one legal transition; see the module doc.
    /// Updates columns of a job that must still be in `state`, without a transition (no
    /// event): scheduling, backoff, hashes.
    pub(crate) async fn update_in(
        &self,
        id: JobId,
        state: State,
        sets: &[Set],
        context: &str,
    ) -> Result<(), StoreError> {
        self.guarded(id, state, state, sets, None, context).await
    }

    /// Records a job's content hash (64 hex digits, stored lowercase) while it is in `state`.
    pub(crate) async fn set_hash(
        &self,
        id: JobId,
        state: State,
        sha256: &str,
        what: &str,
    ) -> Result<(), StoreError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid {
                detail: format!("job {id}: {what} {sha256:?} is not 64 hex digits"),
            });
        }
        let sets = [Set::Bind(
            "content_sha256",
            Val::Text(Some(sha256.to_ascii_lowercase())),
        )];
        self.update_in(
            id,
            state,
            &sets,
            &format!("recording the {what} of job {id}"),
        )
        .await
    }

    pub(crate) async fn transition(
        &self,
        id: JobId,
        from: State,
        to: State,
        sets: &[Set],
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        check(from, to)?;
        let context = format!("moving job {id} from {from} to {to}");
        self.guarded(id, from, to, sets, Some(detail), &context)
            .await
    }

    /// The guarded UPDATE. `event: None` updates columns without a state change or event.
    pub(crate) async fn guarded(
        &self,
        id: JobId,
        from: State,
        to: State,
        sets: &[Set],
        event: Option<Option<String>>,
        context: &str,
    ) -> Result<(), StoreError> {
        let mut sql = String::from("UPDATE jobs SET state = ?, updated_at = ?");
        for s in sets {
            match s {
                Set::Bind(col, _) => write!(sql, ", {col} = ?"),
                Set::Raw(expr) => write!(sql, ", {expr}"),
            }
            .map_err(|e| StoreError::Invalid {
                detail: e.to_string(),
            })?;
        }
        sql.push_str(" WHERE id = ? AND state = ?");

        let now = now_ms();
        let mut tx = self.begin_write(context).await?;
        let mut q = sqlx::query(&sql).bind(to.as_str()).bind(now);
        for s in sets {
            if let Set::Bind(_, v) = s {
                q = match v.clone() {
                    Val::Int(i) => q.bind(i),
                    Val::Text(t) => q.bind(t),
                    Val::Blob(b) => q.bind(b),
                };
            }
        }
        let updated = q
            .bind(id.0)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await
            .ctx(context)?
            .rows_affected();
        if updated == 0 {
            let found: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx(context)?;
            tx.rollback().await.ctx(context)?;
            return Err(match found {
                None => StoreError::NotFound(id),
                Some(s) => StoreError::Conflict {
                    job: id,
                    expected: from,
                    found: s.parse().map_err(|e: super::state::UnknownState| {
                        StoreError::Corrupt {
                            job: id,
                            detail: e.to_string(),
                        }
                    })?,
                },
            });
        }
        let Some(detail) = event else {
            return tx.commit().await.ctx(context);
        };
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id.0)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now)
        .bind(detail)
        .execute(&mut *tx)
        .await
        .ctx(context)?;
        failpoint::hit_transition("before", from.as_str(), to.as_str());
        tx.commit().await.ctx(context)?;
        failpoint::hit_transition("after", from.as_str(), to.as_str());
        Ok(())
    }
}
