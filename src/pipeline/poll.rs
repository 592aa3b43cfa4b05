//! The poll stage: asks the service about photos in `processing` and moves each finished one to
//! `downloading`. Polls have priority over uploads at the API gate; when to ask is learned
//! (`poll_clock`).

use std::time::Duration;

use crate::api::client::JobStatus;
use crate::api::error::ApiError;
use crate::store::{Job, Paid, State};

use super::backoff::retry_delay;
use super::gate::Priority;
use super::{Ctx, PipelineError, now_ms};

pub async fn run(ctx: &Ctx, work: Paid) -> Result<(), PipelineError> {
    let Paid { job, photo } = work;
    let (id, mdf) = (job.id, photo.mdf.as_str());
    ctx.gate.acquire(Priority::High).await;
    match ctx.api.status(mdf).await {
        Ok(JobStatus::Done) => {
            ctx.control.clear_failures(id);
            ctx.poll_clock.ready(id, due_elapsed(&job), elapsed(&job));
            ctx.store.begin_download(id).await?;
        }
        Ok(JobStatus::Processing) => {
            let interval = ctx.settings.poll_interval;
            let wait = ctx.poll_clock.still_processing(id, elapsed(&job), interval);
            ctx.store
                .set_next_poll(id, now_ms() + wait.as_millis() as i64)
                .await?;
        }
        // The service forgets a photo when its result expires (one hour after processing):
        // handled like an expired download.
        Err(ApiError::NotFound { .. }) => {
            ctx.poll_clock.forget(id);
            ctx.store.begin_download(id).await?;
            return super::download::expired(ctx, &job).await;
        }
        Err(e) => {
            ctx.control.pause_if_refused(&e);
            // An outage is waited out (the result stays for an hour, and expiry is handled);
            // answers that keep arriving malformed are not, or the job would poll forever.
            if matches!(e, ApiError::BadBody { .. } | ApiError::UnknownErrno { .. }) {
                let n = ctx.control.note_failure(id);
                if n > ctx.settings.max_attempts {
                    let reason = format!(
                        "the service's status answers for photo {mdf} were malformed {n} times ({e}); \
                         the result may still be there: `hili retry {}` fetches it",
                        id.0
                    );
                    tracing::warn!(job = %id, "{reason}");
                    ctx.control.clear_failures(id);
                    ctx.poll_clock.forget(id);
                    ctx.store
                        .hold(id, State::Processing, &reason, false)
                        .await?;
                    return Ok(());
                }
            }
            let wait = retry_delay(2, ctx.settings.poll_interval, Duration::from_secs(60), id);
            tracing::info!(job = %id, "status check failed, again in {wait:?}: {e}");
            ctx.store
                .set_next_poll(id, now_ms() + wait.as_millis() as i64)
                .await?;
        }
    }
    Ok(())
}

/// How long after its upload this call was due (when it was made is [`elapsed`]).
pub(super) fn due_elapsed(job: &Job) -> Duration {
    let actual = elapsed(job);
    match (job.next_poll_at_ms, job.processing_since_ms) {
        (Some(due), Some(since)) => Duration::from_millis((due - since).max(0) as u64).min(actual),
        _ => actual,
    }
}

/// How long the photo has been at the service (since its upload was answered).
pub(super) fn elapsed(job: &Job) -> Duration {
    let since = job.processing_since_ms.unwrap_or_else(now_ms);
    Duration::from_millis((now_ms() - since).max(0) as u64)
}
