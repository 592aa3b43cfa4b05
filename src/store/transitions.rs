//! Every state change of a job, as thin wrappers over the state machine's table
//! (`state::EDGES`): each takes one named edge with [`SqliteStore::take`], which is ONE guarded
//! `UPDATE … WHERE id=? AND state=?from` plus its `events` row in one `BEGIN IMMEDIATE`
//! transaction (`write.rs`); if the job is no longer in `from`, nothing is written and the
//! caller gets `Conflict` (so racing workers cannot both win). Fail points `before:from->to` /
//! `after:from->to` bracket the COMMIT for crash tests.

use std::path::Path;

use super::jobs::path_bytes;
use super::sql::{Set, Val, hash_val, text};
use super::state::IllegalTransition;
use super::write::{Extras, QueuedWrite};
use super::{JobId, Photo, SqliteStore, State, StoreError, check, now_ms};

/// The columns an upload's answer sets (edges `uploaded`, `adopt_answer[_held]`).
fn answer_values(id: JobId, answer: &Uploaded<'_>) -> Result<Vec<(&'static str, Val)>, StoreError> {
    let mut given = vec![
        ("mdf", text(answer.mdf)),
        ("img_url", text(answer.img_url)),
        ("processing_since", Val::Int(Some(now_ms()))),
        ("next_poll_at", Val::Int(answer.first_poll_at)),
    ];
    if let Some(sha) = answer.sent_sha256 {
        given.push(("content_sha256", hash_val(id, sha, "sent hash")?));
    }
    Ok(given)
}

/// The columns edge `fetch_twin` sets: the twin's photo at the service.
pub(crate) fn twin_photo(photo: &Photo, processed_at_ms: i64) -> Vec<(&'static str, Val)> {
    vec![
        ("mdf", text(&photo.mdf)),
        ("img_url", Val::Text(photo.img_url.clone())),
        ("processing_since", Val::Int(Some(processed_at_ms))),
    ]
}

/// The upload guard: no OTHER job with the same identity (hash bound, repair and colour of the
/// row being updated) is in flight, or held after a charge. Answered from `jobs_identity`.
const NO_BUSY_TWIN: &str = "NOT EXISTS (SELECT 1 FROM jobs AS t \
     WHERE t.content_sha256 = ? AND t.repair = jobs.repair AND t.rgb IS jobs.rgb \
     AND t.id != jobs.id AND (t.state IN ('uploading', 'processing', 'downloading') \
     OR (t.state = 'held' AND t.credit_spent = 1)))";

/// What the pipeline knows when it commits to an upload; see [`SqliteStore::begin_upload_with`].
#[derive(Debug, Clone, Copy)]
pub struct UploadIntent<'a> {
    /// The credits left when its epoch opened; a lost answer is reconciled against it.
    pub credits_before: u64,
    /// The credit epoch the upload is counted in (`None`: none, as for tests and benches that
    /// drive the store alone).
    pub epoch: Option<super::EpochId>,
    /// The content hash, recorded with the intent.
    pub content_sha256: Option<&'a str>,
    /// Refuse (with [`StoreError::TwinBusy`]) while an identical photo is in flight or held
    /// after a charge. False for `--force` jobs, which re-process anyway.
    pub exclusive: bool,
}

/// An upload's answer; see [`SqliteStore::queue_uploaded`].
#[derive(Debug, Clone, Copy)]
pub struct Uploaded<'a> {
    pub mdf: &'a str,
    pub img_url: &'a str,
    /// When the first status poll is due; `None` means at once.
    pub first_poll_at: Option<i64>,
    /// The hash of the bytes really sent, when it differs from the recorded content hash.
    pub sent_sha256: Option<&'a str>,
}

impl SqliteStore {
    /// queued → uploading (edge `begin_upload`) with everything the pipeline knows at that
    /// instant, in ONE transaction: its credit epoch and the count that opened it (the reading
    /// itself was recorded as a credit observation then, not again here), the content hash,
    /// and — when `exclusive` — the guarantee that no identical photo is in flight or held
    /// after a charge. That check and the state change are atomic under the
    /// write lock, so two workers (or two processes) hashing the same photo at once cannot both
    /// pay for it: the loser gets [`StoreError::TwinBusy`] and nothing is written.
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
        let mut extras = Extras::default();
        if let Some(sha) = intent.content_sha256 {
            given.push(("content_sha256", hash_val(id, sha, "content hash")?));
            if intent.exclusive {
                extras.guard = Some((NO_BUSY_TWIN, vec![hash_val(id, sha, "content hash")?]));
            }
        }
        let detail = format!("credits_before={}", intent.credits_before);
        self.take("begin_upload", id, State::Queued, given, detail, &extras)?
            .committed()
            .await
    }

    /// uploading → processing (edge `uploaded`): the vendor answered with an mdf, so one credit
    /// was charged. In ONE transaction with the answer, what follows from it: when the first
    /// poll is due and, if the file changed while it was sent, the hash of the bytes really
    /// sent (the result is of those, so they are the job's identity).
    ///
    /// Queued now, awaited with [`QueuedWrite::committed`]: every write queued after it (the
    /// next upload's intent, say) commits after it, or with it. The credit is spent, so the
    /// answer reaches the database even if the upload task is abandoned (shutdown grace over)
    /// while the write waits for the connection.
    pub(crate) fn queue_uploaded(
        &self,
        id: JobId,
        answer: &Uploaded<'_>,
    ) -> Result<QueuedWrite<'_>, StoreError> {
        let extras = Extras {
            keep_if_abandoned: true,
            ..Extras::default()
        };
        let detail = format!("mdf={}", answer.mdf);
        self.take(
            "uploaded",
            id,
            State::Uploading,
            answer_values(id, answer)?,
            detail,
            &extras,
        )
    }

    /// An upload's answer that arrived after its job had left `uploading` (another process, or
    /// a person, took the upload for lost and reconciled it): the credit is spent and the
    /// service holds the result, so the answer is recorded and the job resumes from it —
    /// `found` (queued, held or failed, without an mdf) → processing — instead of being
    /// dropped. A hold after a lost answer already counted the charge (edge
    /// `adopt_answer_held`); the other states did not (`adopt_answer`).
    pub async fn adopt_answer(
        &self,
        id: JobId,
        found: State,
        answer: &Uploaded<'_>,
    ) -> Result<(), StoreError> {
        let extras = Extras {
            guard: Some(("mdf IS NULL", Vec::new())),
            keep_if_abandoned: true,
        };
        let name = match found {
            State::Held => "adopt_answer_held",
            _ => "adopt_answer",
        };
        let detail = format!("late upload answer adopted: mdf={}", answer.mdf);
        self.take(name, id, found, answer_values(id, answer)?, detail, &extras)?
            .committed()
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
        self.take_now("requeue", id, from, given, reason.to_string())
            .await
    }

    /// `from` → failed (edge `fail`). A failed job was never charged (no edge counts a charge
    /// on the way to failed): a charged job is held instead.
    pub async fn fail(&self, id: JobId, from: State, reason: &str) -> Result<(), StoreError> {
        let given = vec![("reason", text(reason))];
        self.take_now("fail", id, from, given, reason.to_string())
            .await
    }

    /// queued → skipped (edge `skip`): not processed, on purpose, no credit spent (hili's own
    /// result fed back as a photo, or superseded by another job); `reason` says which.
    pub async fn skip(&self, id: JobId, reason: &str) -> Result<(), StoreError> {
        let given = vec![("reason", text(reason))];
        self.take_now("skip", id, State::Queued, given, reason.to_string())
            .await
    }

    /// `from` → held: needs a person. `credit_spent`: true for an upload reconciled as charged
    /// with its answer lost (edge `hold_charged`, from uploading, counts the charge); else
    /// edge `hold`.
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
        self.take_now(
            name,
            id,
            from,
            vec![("reason", text(reason))],
            reason.to_string(),
        )
        .await
    }

    /// queued → downloading (edge `fetch_twin`): the job is the same photo as `twin`, whose
    /// result the service still keeps (`photo`, processed at `processed_at_ms`) but whose
    /// file cannot be copied here: the download stage fetches it again, no credit.
    pub async fn fetch_twin(
        &self,
        id: JobId,
        twin: JobId,
        photo: &Photo,
        processed_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.take_now(
            "fetch_twin",
            id,
            State::Queued,
            twin_photo(photo, processed_at_ms),
            format!("fetching the result of job {twin} (the same photo) again: no credit"),
        )
        .await
    }

    /// processing → downloading (edge `begin_download`): the vendor says the result is ready.
    pub async fn begin_download(&self, id: JobId) -> Result<(), StoreError> {
        self.take(
            "begin_download",
            id,
            State::Processing,
            Vec::new(),
            None,
            &Extras::default(),
        )?
        .committed()
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
        self.take_now("finish", id, from, given, detail).await
    }

    /// Takes the edge `name` of [`super::state::EDGES`] now and waits for its commit.
    pub(crate) async fn take_now(
        &self,
        name: &str,
        id: JobId,
        from: State,
        given: Vec<(&'static str, Val)>,
        detail: String,
    ) -> Result<(), StoreError> {
        self.take(name, id, from, given, Some(detail), &Extras::default())?
            .committed()
            .await
    }

    /// Queues the edge `name` for job `id`, which must be in `from`: the columns `given` (each
    /// one the edge names) and the edge's fixed changes, in one guarded UPDATE with its events
    /// row. An edge that does not leave `from` is an [`IllegalTransition`], a column it does
    /// not name is refused.
    pub(crate) fn take(
        &self,
        name: &str,
        id: JobId,
        from: State,
        given: Vec<(&'static str, Val)>,
        detail: impl Into<Option<String>>,
        extras: &Extras,
    ) -> Result<QueuedWrite<'_>, StoreError> {
        let edge = super::state::edge(name).ok_or_else(|| StoreError::Invalid {
            detail: format!("no edge {name:?} in the state machine (a bug in hili)"),
        })?;
        if !edge.from.contains(&from) {
            check(from, edge.to)?;
            return Err(IllegalTransition { from, to: edge.to }.into());
        }
        let mut sets = Vec::with_capacity(given.len() + edge.fixed.len());
        for (col, val) in given {
            if !edge.given.contains(&col) {
                return Err(StoreError::Invalid {
                    detail: format!("edge {name} does not set {col} (a bug in hili)"),
                });
            }
            sets.push(Set::Bind(col, val));
        }
        sets.extend(edge.fixed.iter().map(|f| Set::Raw(f)));
        let context = format!("moving job {id} from {from} to {}", edge.to);
        self.queue_guarded(
            id,
            from,
            edge.to,
            &sets,
            Some(detail.into()),
            extras,
            &context,
        )
    }
}
