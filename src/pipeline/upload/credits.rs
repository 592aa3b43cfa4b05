//! Step 3 of an upload, the credit: a send slot (at most `upload_concurrency` uploads between
//! here and their recorded answer), no pause in force, room for the result, the run's budget,
//! a place in the open credit epoch (whose opening reading says credits are left, and against
//! which a lost answer is reconciled), and the output folder marked as this queue's before a
//! credit is spent on it.

use std::time::Duration;

use tokio::sync::SemaphorePermit;

use crate::api::error::ApiError;
use crate::media;
use crate::store::{Job, State};

use crate::pipeline::control::Pause;
use crate::pipeline::epochs::{Entry, Ticket};
use crate::pipeline::gate::Priority;
use crate::pipeline::{Ctx, PipelineError, blocking, now_ms};

/// What step 3 hands to the send: the slot, and the upload's place in the open credit epoch.
pub(super) struct Go<'a> {
    pub slot: SemaphorePermit<'a>,
    pub ticket: Ticket<'a>,
}

/// Everything that must hold before a credit is committed to this job; `None` leaves it queued
/// (paused, stopping, no room, no credits, budget reached: each says why where it is decided).
pub(super) async fn reserve<'a>(ctx: &'a Ctx, job: &Job) -> Result<Option<Go<'a>>, PipelineError> {
    // The checks of step 1 and 2 ran while an earlier upload was in flight. A pause or a stop
    // that began while this job waited leaves it queued, untouched.
    let Ok(slot) = ctx.send_slots.acquire().await else {
        return Ok(None);
    };
    if ctx.shutdown.is_cancelled() || ctx.control.paused().is_some() {
        return Ok(None);
    }
    // No credit on a result with nowhere to go: the output folder must have room for it.
    // Asked here, as late as it costs nothing, so a disk that filled meanwhile is seen.
    if let Some(why) = super::check::no_room(job).await? {
        ctx.control
            .pause(Pause::NoRoom(why), crate::pipeline::control::ROOM_RECHECK);
        return Ok(None);
    }
    if !crate::pipeline::control::reserve_credit(ctx).await? {
        return Ok(None);
    }
    let Some(ticket) = admit(ctx, job).await? else {
        ctx.control.settle(false);
        return Ok(None);
    };
    // The output directory is marked as this queue's before a credit is spent on it, so a
    // lost database is noticed at the next start instead of re-uploading everything.
    mark_output_dir(ctx, job).await;
    Ok(Some(Go { slot, ticket }))
}

/// A place for this upload in the open credit epoch, opening one first when it must (see
/// `pipeline::epochs`): with nothing in flight, one reading of the credits closes the last
/// epoch and opens the next. `None` means "do not upload now": stopping, the account has no
/// credits or rejected the token (uploads are paused), or the service could not be asked (this
/// job waits a little).
async fn admit<'a>(ctx: &'a Ctx, job: &Job) -> Result<Option<Ticket<'a>>, PipelineError> {
    loop {
        let entry = tokio::select! {
            e = ctx.epochs.enter() => e?,
            _ = ctx.shutdown.cancelled() => return Ok(None),
        };
        let turn = match entry {
            Entry::Go(ticket) => return Ok(Some(ticket)),
            Entry::Settle(turn) => turn,
        };
        let Some(now) = credits_for_upload(ctx, job).await? else {
            return Ok(None);
        };
        crate::pipeline::recover::close_epoch(ctx, &turn, now).await?;
        drop(turn);
        if now == 0 {
            ctx.control
                .pause(Pause::NoCredits, ctx.settings.credits_recheck);
            return Ok(None);
        }
        if matches!(ctx.control.paused(), Some((Pause::NoCredits, _))) {
            ctx.control.resume();
        }
    }
}

/// Reads the credits left to open an epoch. `None`: the token was rejected (uploads are
/// paused), or the service could not be asked (this job waits a little).
async fn credits_for_upload(ctx: &Ctx, job: &Job) -> Result<Option<u64>, PipelineError> {
    ctx.gate.acquire(Priority::Low).await;
    match ctx.api.credits().await {
        Ok(n) => Ok(Some(n)),
        Err(e) if ctx.control.pause_if_refused(&e) => Ok(None),
        Err(e) => {
            let failures = ctx.control.note_failure(job.id);
            // Something answers the credits endpoint, but never as the API does (an HTML page,
            // a proxy's text): a base URL that is not the API, which waiting will not fix.
            if matches!(e, ApiError::BadBody { .. }) && failures > ctx.settings.max_attempts {
                ctx.control.clear_failures(job.id);
                let why = format!(
                    "the credits endpoint answered {failures} times in a row with something \
                     that is not the API's answer ({e}); check api.base_url"
                );
                ctx.control.pause(
                    Pause::Misconfigured(why),
                    crate::pipeline::control::MISCONFIGURED_RECHECK,
                );
                return Ok(None);
            }
            let wait = ctx.retry_wait(failures, Duration::from_secs(60), job.id);
            tracing::warn!(job = %job.id, "could not read the credits left before the upload, again in {wait:?}: {e}");
            let at = now_ms() + wait.as_millis() as i64;
            ctx.store.defer(job.id, State::Queued, at).await?;
            Ok(None)
        }
    }
}

/// Writes the `.hili-queue` marker into the job's output directory if it has none. Best
/// effort: an output directory that cannot be written now is reported by the download (which
/// retries); the marker only protects against a lost database. Each directory is looked at
/// once per run: a backlog shares a handful of output folders.
async fn mark_output_dir(ctx: &Ctx, job: &Job) {
    if ctx.is_marked(&job.output_dir) {
        return;
    }
    let queue_id = match ctx.queue_id().await {
        Ok(q) => q.to_string(),
        Err(e) => {
            tracing::warn!(job = %job.id, "could not read the queue id for the output marker: {e}");
            return;
        }
    };
    let dir = job.output_dir.clone();
    match blocking(move || media::ensure_marker(&dir, &queue_id)).await {
        Ok(Ok(_)) => ctx.set_marked(&job.output_dir),
        Ok(Err(e)) => tracing::warn!(
            job = %job.id,
            "could not write {}: {e}",
            media::marker_path(&job.output_dir).display()
        ),
        Err(_) => {}
    }
}
