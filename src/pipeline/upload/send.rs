//! Steps 4 to 6 of an upload: the intent, durable before a byte is sent (with the hash and the
//! credits seen; refused while an identical photo is in flight), the request, and its answer
//! recorded before anything else happens. A lost answer is reconciled by the credit count of
//! its epoch (`pipeline::epochs`), never by a blind re-upload; an answer that arrives for a job taken for lost is adopted.

use std::time::Duration;

use crate::api::error::{ApiError, ErrorClass};
use crate::media::Converted;
use crate::store::{Job, State, StoreError, UploadIntent, Uploaded};
use crate::{api, failpoint};
use tokio::sync::SemaphorePermit;

use super::credits::Go;
use super::{REFUSALS_BEFORE_FAILING, TWIN_WAIT_MS};
use crate::pipeline::control::Pause;
use crate::pipeline::epochs::Ticket;
use crate::pipeline::gate::Priority;
use crate::pipeline::{Ctx, PipelineError, now_ms, recover};

/// Records the intent, sends the photo and records the answer (or reconciles its loss).
/// `converted`: the copy sent instead of the source (see `prepare`); the job's identity stays
/// the source's content, `sha`.
pub(super) async fn send(
    ctx: &Ctx,
    job: &Job,
    sha: &str,
    converted: Option<&Converted>,
    go: Go<'_>,
) -> Result<(), PipelineError> {
    // The upload is an API call like any other: it takes its permit from the one limiter
    // (after the polls and downloads waiting), before the intent, so a permit's wait never
    // stands between a durable intent and its request.
    ctx.gate.acquire(Priority::Low).await;
    let Go { slot, ticket } = go;
    // An intent that errors may or may not be on the books: the ticket, dropped unended, has
    // the next reading look at the store.
    if !intend(ctx, job, sha, &ticket).await? {
        ticket.not_charged();
        return Ok(());
    }
    failpoint::hit_for("before-upload-request", &job.source_path);
    let file = converted.map_or(&job.source_path, |c| &c.path);
    let answer = ctx.api.upload(file, job.repair, job.rgb).await;
    failpoint::hit("after-upload-response");
    match answer {
        Ok(up) => record_answer(ctx, job, sha, converted, &up, slot, ticket).await,
        Err(e) => on_upload_error(ctx, job, e, ticket).await,
    }
}

/// Step 4, the intent, durable before a byte is sent, with the hash and the credits seen. The
/// store refuses it while an identical photo is in flight (checked atomically with the state
/// change), so racing workers never pay twice for one photo; the job then waits to copy that
/// photo's result. Returns whether to send.
async fn intend(
    ctx: &Ctx,
    job: &Job,
    sha: &str,
    ticket: &Ticket<'_>,
) -> Result<bool, PipelineError> {
    let id = job.id;
    let intent = UploadIntent {
        epoch: Some(ticket.epoch),
        credits_before: ticket.start,
        content_sha256: Some(sha),
        exclusive: !job.force,
    };
    match ctx.store.begin_upload_with(id, &intent).await {
        Ok(()) => Ok(true),
        Err(StoreError::TwinBusy { .. }) => {
            ctx.control.settle(false);
            tracing::info!(job = %id, "an identical photo is in flight; waiting to copy its result");
            ctx.store
                .defer(id, State::Queued, now_ms() + TWIN_WAIT_MS)
                .await?;
            Ok(false)
        }
        Err(e) => {
            ctx.control.settle(false);
            Err(e.into())
        }
    }
}

/// Steps 5 and 6 done: the service answered with an mdf. Records it before anything else
/// happens (adopting it if the job was meanwhile taken for lost) and releases the send slot.
async fn record_answer(
    ctx: &Ctx,
    job: &Job,
    sha: &str,
    converted: Option<&Converted>,
    up: &api::client::Uploaded,
    slot: SemaphorePermit<'_>,
    ticket: Ticket<'_>,
) -> Result<(), PipelineError> {
    let id = job.id;
    let expected = converted.map_or(sha, |c| c.sha256.as_str());
    let changed = !up.sent_sha256.eq_ignore_ascii_case(expected);
    let first_wait = ctx.poll_clock.first_wait(ctx.settings.poll_interval);
    let first_poll = now_ms() + first_wait.as_millis() as i64;
    let recorded = Uploaded {
        mdf: &up.mdf,
        img_url: &up.img_url,
        first_poll_at: Some(first_poll),
        // The result is of the bytes sent, so they are the job's identity: dedupe and
        // `hili status` must not claim the result is of the file as hashed. A converted
        // copy is not the photo: the identity stays the source's content.
        sent_sha256: (changed && converted.is_none()).then_some(up.sent_sha256.as_str()),
    };
    let recorded = ctx.store.queue_uploaded(id, &recorded)?;
    // The answer is queued ahead of anything the next upload writes (its intent commits
    // after it or with it, and its request is sent only then), and the charge is
    // already counted by the service: the next photo may ask for the credits now.
    drop(slot);
    // The ticket ends once the answer is durable: an epoch closes only after it, so the
    // answer is counted in it. If it cannot be recorded, the ticket dropped unended has the
    // next reading count the charge from the store (the job is still `uploading` there).
    match recorded.await {
        Ok(()) => {}
        Err(StoreError::Conflict { found, .. }) => {
            adopt_late_answer(ctx, job, found, &up.mdf, &up.img_url, first_poll).await?
        }
        Err(e) => return Err(e.into()),
    }
    ticket.answered();
    ctx.control.settle(true);
    if changed && converted.is_some() {
        tracing::warn!(
            job = %id,
            "the converted copy of {} changed while it was being uploaded (sent {}); \
             the job keeps the source's identity",
            job.source_path.display(),
            up.sent_sha256
        );
    } else if changed {
        tracing::warn!(
            job = %id,
            "{} changed while it was being uploaded; recorded the hash of the bytes \
             sent ({}), the result is of those",
            job.source_path.display(),
            up.sent_sha256
        );
    }
    tracing::info!(job = %id, mdf = %up.mdf, "uploaded {}", job.source_path.display());
    Ok(())
}

/// The job left `uploading` while its request was in flight (something reconciled it as lost):
/// the answer is a paid result the service still has, so it is recorded and the job resumes
/// from it. Only a job that already has another result (done, or a new upload under way) keeps
/// what it has; the answer is then logged with its mdf so a person can still fetch it.
async fn adopt_late_answer(
    ctx: &Ctx,
    job: &Job,
    found: State,
    mdf: &str,
    img_url: &str,
    first_poll: i64,
) -> Result<(), PipelineError> {
    let id = job.id;
    let answer = Uploaded {
        mdf,
        img_url,
        first_poll_at: Some(first_poll),
        sent_sha256: None,
    };
    let adopted = match found {
        State::Queued | State::Held | State::Failed => {
            ctx.store.adopt_answer(id, found, &answer).await
        }
        other => Err(StoreError::Conflict {
            job: id,
            expected: State::Uploading,
            found: other,
        }),
    };
    match adopted {
        Ok(()) => {
            tracing::warn!(
                job = %id,
                "the upload's answer arrived after the job was taken for lost ({found}); \
                 recorded mdf {mdf} and resuming from it, no second upload"
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(
                job = %id,
                "a paid upload of {} answered (mdf {mdf}, image {img_url}) but the job could not \
                 take it ({e}); the result can be fetched for an hour with that mdf",
                job.source_path.display()
            );
            Ok(())
        }
    }
}

/// Handles a failed upload: not charged (queued again, or failed), or its answer lost —
/// reconciled with every other upload lost in its credit epoch once none is in flight.
async fn on_upload_error(
    ctx: &Ctx,
    job: &Job,
    e: ApiError,
    ticket: Ticket<'_>,
) -> Result<(), PipelineError> {
    let id = job.id;
    let attempts = job.attempts + 1;
    let refused = matches!(e, ApiError::UploadFailed { .. });
    let refusals = ctx.control.note_refusal(id, refused);
    match e.class() {
        // The service refusing the same file again and again is about the file, not an outage.
        ErrorClass::Transient if refused && refusals >= REFUSALS_BEFORE_FAILING => {
            let reason = format!(
                "{}: the service refused its upload {refusals} times in a row, no credit spent: \
                 {e}; check the file (size, format, whether it opens), then `hili retry {id}`",
                job.source_path.display()
            );
            tracing::warn!(job = %id, "{reason}");
            ctx.control.note_refusal(id, false);
            ctx.store.fail(id, State::Uploading, &reason).await?;
        }
        ErrorClass::Transient if attempts >= ctx.settings.max_attempts => {
            let reason = format!(
                "gave up after {attempts} attempts, no credit spent: {e}; run `hili retry {id}` to try again"
            );
            tracing::warn!(job = %id, "{reason}");
            ctx.store.fail(id, State::Uploading, &reason).await?;
        }
        ErrorClass::Transient => {
            let wait = ctx.retry_wait(attempts, Duration::from_secs(300), id);
            tracing::info!(job = %id, "upload failed, not charged; retrying in {wait:?}: {e}");
            let at = now_ms() + wait.as_millis() as i64;
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), at)
                .await?;
        }
        ErrorClass::PermanentForPhoto => {
            let reason = format!("{}: {e}", job.source_path.display());
            tracing::warn!(job = %id, "{reason}");
            ctx.store.fail(id, State::Uploading, &reason).await?;
        }
        ErrorClass::AccountWide => {
            ctx.control
                .pause(Pause::NoCredits, ctx.settings.credits_recheck);
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), now_ms())
                .await?;
        }
        ErrorClass::Misconfigured => {
            ctx.control.pause_if_refused(&e);
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), now_ms())
                .await?;
        }
        ErrorClass::Ambiguous => {
            tracing::warn!(
                job = %id,
                "the upload's answer was lost ({e}); reconciling by the credit count once no \
                 other upload is in flight"
            );
            ticket.lost(id);
            return recover::settle_lost(ctx, id).await;
        }
    }
    ticket.not_charged();
    ctx.control.settle(false);
    Ok(())
}
