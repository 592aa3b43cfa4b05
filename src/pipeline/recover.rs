//! Start-up recovery and the reconciliation of lost upload answers. A job found in `uploading`
//! may or may not have been charged: the credit count decides. Unchanged since the intent was
//! recorded → nothing was charged, upload again. Lower → it was charged and the result is
//! unknown: hold it for a person rather than pay twice. Unreachable → keep asking; never
//! re-upload blindly. Temp files left by a crash in output directories are removed, and so are
//! converted copies of sources.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::media;
use crate::store::{JobId, State};

use super::gate::Priority;
use super::{Ctx, PipelineError, blocking, now_ms};

/// Runs before any stage starts: reconciles interrupted uploads, cleans temp files. With
/// `give_up` (`run --once`), an upload that cannot be reconciled after `max_attempts` tries to
/// read the credits is left in `uploading` for the next start instead of waiting forever.
pub async fn startup(ctx: &Ctx, give_up: bool) -> Result<(), PipelineError> {
    // Moves of sources a crash interrupted: completed or undone (see `media::mover`).
    super::dispose::recover_moves(ctx).await?;

    // Only the folders jobs that may still write an output would write into (one entry per
    // folder, not per job: a queue can hold 100,000 photos).
    let folders = ctx
        .store
        .job_folders(&[State::Queued, State::Downloading])
        .await?;
    let removed = blocking(move || {
        let dirs: BTreeSet<_> = folders
            .iter()
            .map(|f| super::download::output_dir_in(&f.output_dir, &f.source_root, &f.source_dir))
            .collect();
        let mut n = 0;
        for d in dirs {
            if d.is_dir() {
                n += media::remove_stale_temps(&d).unwrap_or(0);
            }
        }
        n
    })
    .await?;
    if removed > 0 {
        tracing::info!("removed {removed} partial output file(s) left by an interrupted run");
    }
    clear_converted(ctx).await?;
    // Results recorded done whose manifest line a crash cut off are listed again.
    super::manifest::refresh_all(ctx).await?;

    for job in ctx.store.jobs_in(State::Uploading).await? {
        tracing::warn!(
            job = %job.id,
            "{} was being uploaded when hili stopped; reconciling by the credit count",
            job.source_path.display()
        );
        let tries = give_up.then_some(ctx.settings.max_attempts);
        match reconcile(ctx, job.id, job.credits_before, tries).await {
            Ok(true) => ctx.control.settle(true),
            Ok(false) => {}
            Err(PipelineError::Unreconciled) => tracing::warn!(
                job = %job.id,
                "left in uploading: the credits could not be read to reconcile it; the next \
                 start tries again (it is never uploaded again blindly)"
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Converted copies a crash left (see `upload/prepare.rs`): nothing is in flight at start, and
/// each is rebuilt identically when its job is uploaded.
async fn clear_converted(ctx: &Ctx) -> Result<(), PipelineError> {
    let dir = ctx.store.converted_dir();
    let d = dir.clone();
    match blocking(move || media::clear_converted(&d)).await? {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} converted cop(ies) left by an interrupted run"),
        Err(e) => tracing::warn!(
            "could not clear {}: {e}; converted copies are rebuilt anyway",
            dir.display()
        ),
    }
    Ok(())
}

/// Decides the fate of a job in `uploading` whose answer was lost. Returns whether a credit was
/// (probably) spent. Returns `Err(Shutdown)`, leaving the job in `uploading`, when stopped
/// before the service could be asked: the next start reconciles it.
///
/// `tries`: give up after that many failed reads with `Err(Unreconciled)`, leaving the job in
/// `uploading`; `None` keeps asking until stopped.
pub async fn reconcile(
    ctx: &Ctx,
    id: JobId,
    credits_before: Option<u64>,
    tries: Option<u32>,
) -> Result<bool, PipelineError> {
    let mut failures = 0;
    let now = loop {
        ctx.gate.acquire(Priority::High).await;
        match ctx.api.credits().await {
            Ok(n) => break n,
            Err(e) => {
                failures += 1;
                if tries.is_some_and(|t| failures >= t) {
                    tracing::warn!(job = %id, "cannot read the credits to reconcile a lost upload answer ({failures} tries): {e}");
                    return Err(PipelineError::Unreconciled);
                }
                ctx.control.pause_if_refused(&e);
                let wait = ctx.retry_wait(failures, Duration::from_secs(60), id);
                tracing::warn!(job = %id, "cannot read the credits to reconcile a lost upload answer, again in {wait:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown.cancelled() => return Err(PipelineError::Shutdown),
                }
            }
        }
    };
    ctx.store.record_credits(now).await?;
    match credits_before {
        Some(before) if before == now => {
            let reason = format!(
                "the upload got no answer; credits unchanged ({now}), so it was not charged: uploading again"
            );
            tracing::info!(job = %id, "{reason}");
            ctx.store
                .requeue(id, State::Uploading, &reason, now_ms())
                .await?;
            Ok(false)
        }
        before => {
            let seen = before.map_or("unknown".to_string(), |b| b.to_string());
            let reason = format!(
                "charged, result unknown: the upload got no answer and the credits went from {seen} \
                 to {now}; the result cannot be fetched without the service's answer. \
                 `hili retry --reupload {id}` uploads it again (spends a credit)"
            );
            tracing::warn!(job = %id, "{reason}");
            ctx.store.hold(id, State::Uploading, &reason, true).await?;
            Ok(true)
        }
    }
}
