//! Start-up recovery and the reconciliation of lost upload answers. A job found in `uploading`
//! may or may not have been charged: the credit count decides, by the arithmetic of its credit
//! epoch (`epochs`): not charged → upload again; charged, or cannot tell → hold it for a
//! person rather than pay twice. Unreachable → keep asking; never re-upload blindly. Temp files left by a crash in output directories are removed, and so are
//! converted copies of sources.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::media;
use crate::store::{JobId, State};

use super::gate::Priority;
use super::{Ctx, PipelineError, blocking};

/// How old a temp file in an output folder must be for a node of a shared queue to take it
/// for debris: a download writes its file in seconds, so none of a live node is this old.
const SHARED_TEMP_AGE: Duration = Duration::from_secs(600);

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
    // On a shared queue other nodes may be writing into the same (NAS) folders right now:
    // this node's temp files carry its name, and only those (and long-abandoned ones) go.
    let age = match ctx.store.node() {
        Some(node) => {
            media::tag_temps(node.as_str());
            SHARED_TEMP_AGE
        }
        None => Duration::ZERO,
    };
    let removed = blocking(move || {
        let dirs: BTreeSet<_> = folders
            .iter()
            .map(|f| super::download::output_dir_in(&f.output_dir, &f.source_root, &f.source_dir))
            .collect();
        let mut n = 0;
        for d in dirs {
            if d.is_dir() {
                n += media::remove_temps_older_than(&d, age).unwrap_or(0);
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

    // Lost uploads whose verdict a crash kept from being carried out, then those that lost
    // their answers in the epoch that was open: nothing is in flight now, so one reading
    // closes it (see `epochs`).
    let moved = super::epochs::finish_closed(&ctx.store).await?;
    account(
        ctx,
        &super::epochs::Settled {
            closed: None,
            moved,
        },
    );
    let lost = ctx.store.jobs_in(State::Uploading).await?;
    if let Some(first) = lost.first() {
        for job in &lost {
            tracing::warn!(
                job = %job.id,
                "{} was being uploaded when hili stopped; reconciling by the credit count",
                job.source_path.display()
            );
        }
        let tries = give_up.then_some(ctx.settings.max_attempts);
        match settle_now(ctx, first.id, tries).await {
            Ok(()) => {}
            Err(PipelineError::Unreconciled) => tracing::warn!(
                "{} upload(s) left in uploading: the credits could not be read to reconcile \
                 them; the next start tries again (they are never uploaded again blindly)",
                lost.len()
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

/// An upload's answer was lost (its ticket ended as lost): once every other upload in flight
/// has ended, one reading of the credits decides the fate of every upload lost meanwhile —
/// unless another task already did. Returns `Err(Shutdown)`, leaving the job in `uploading`,
/// when stopped first: the next start reconciles it.
pub(super) async fn settle_lost(ctx: &Ctx, id: JobId) -> Result<(), PipelineError> {
    let turn = tokio::select! {
        t = ctx.epochs.settle_turn() => t?,
        _ = ctx.shutdown.cancelled() => return Err(PipelineError::Shutdown),
    };
    if !ctx.epochs.has_lost() {
        return Ok(());
    }
    let now = read_credits(ctx, id, None).await?;
    Ok(close_epoch(ctx, &turn, now).await?)
}

/// Closes the open epoch now (at start, with nothing in flight), moving the uploads lost in it.
async fn settle_now(ctx: &Ctx, id: JobId, tries: Option<u32>) -> Result<(), PipelineError> {
    let turn = ctx.epochs.settle_turn().await?;
    let now = read_credits(ctx, id, tries).await?;
    Ok(close_epoch(ctx, &turn, now).await?)
}

/// Closes the open epoch with the reading `now` (taken while `turn` is held) and accounts for
/// what it decided (see [`account`]).
pub(super) async fn close_epoch(
    ctx: &Ctx,
    turn: &super::epochs::SettleTurn<'_>,
    now: u64,
) -> Result<(), crate::store::StoreError> {
    let settled = ctx.epochs.settle(turn, &ctx.store, now).await?;
    account(ctx, &settled);
    Ok(())
}

/// What a closing reading means for the run: the budget reservations of the lost uploads it
/// moved, and credits spent (or added) elsewhere, said once.
fn account(ctx: &Ctx, settled: &super::epochs::Settled) {
    for &(_, charged, mine) in &settled.moved {
        // A lost upload of this run held its budget reservation until now; one found at start
        // had none, and counts only if it was charged.
        if mine || charged {
            ctx.control.settle(charged);
        }
    }
    if let Some((t, d)) = settled.closed {
        if d.spent_elsewhere > 0 {
            tracing::warn!(
                "credits spent elsewhere: the account lost {} credit(s) during credit epoch {} \
                 beyond what hili's uploads explain ({} when it opened, {} answered, {} now) — \
                 another program or a person using the same account? `hili status` counts them",
                d.spent_elsewhere,
                t.epoch,
                t.start,
                t.answered,
                t.now
            );
        }
        if d.added > 0 {
            tracing::info!(
                "the account gained {} credit(s) during credit epoch {}",
                d.added,
                t.epoch
            );
        }
    }
}

/// Reads the credits to reconcile lost answers, asking again until it works or hili stops.
/// `tries`: give up after that many failed reads with `Err(Unreconciled)`.
async fn read_credits(ctx: &Ctx, id: JobId, tries: Option<u32>) -> Result<u64, PipelineError> {
    let mut failures = 0;
    loop {
        ctx.gate.acquire(Priority::High).await;
        match ctx.api.credits().await {
            Ok(n) => return Ok(n),
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
    }
}
