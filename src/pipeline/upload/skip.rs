//! Step 2 of an upload: is an upload needed at all? Not when the file was superseded by a later
//! job (renamed, saved again), is the same file as an earlier job under a new name, is hili's
//! own result, or is the same photo as another job (dedupe by identity: a done twin's result
//! is copied, a twin in flight is waited for, a held twin holds this one too). Each of these
//! ends or defers the job without spending anything.

use std::path::PathBuf;

use crate::media::{self, Destination};
use crate::store::{Job, State};

use super::TWIN_WAIT_MS;
use crate::pipeline::{Ctx, PipelineError, blocking, now_ms};

/// The job's file is gone or changed since it was queued, and a later job has it (renamed:
/// same device and inode under a new name; saved again: the same path): this job ends
/// `skipped`, "superseded", rather than failing for a file that was processed under its new
/// name. Returns true when it did.
pub(super) async fn superseded(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
    let Some(next) = ctx.store.successor(job).await? else {
        return Ok(false);
    };
    let how = if next.source_path == job.source_path {
        "saved again since".to_string()
    } else {
        format!("now {}", next.source_path.display())
    };
    let reason = format!(
        "superseded by job {}: {} is {how}, and that job processes it",
        next.id,
        job.source_path.display()
    );
    tracing::info!(job = %job.id, "{reason}");
    ctx.store.skip(job.id, &reason).await?;
    Ok(true)
}

/// The job's file is one an earlier job already sent under another name (the file or its
/// folder was renamed while, or after, it was processed): that job's result is the file's,
/// so this one ends `skipped` instead of writing the result a second time. Only when the old
/// name is gone (two names of one file, a hard link, are two photos to their owner).
pub(super) async fn renamed(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
    let Some(earlier) = ctx.store.renamed_from(job).await? else {
        return Ok(false);
    };
    let old = earlier.source_path.clone();
    if blocking(move || std::fs::symlink_metadata(&old).is_ok()).await? {
        return Ok(false);
    }
    let result = match &earlier.output_path {
        Some(p) => format!("its result is {}", p.display()),
        None => "its result is on its way".to_string(),
    };
    let reason = format!(
        "the same file as job {} (renamed from {}); {result}, written once",
        earlier.id,
        earlier.source_path.display()
    );
    tracing::info!(job = %job.id, "{reason}");
    ctx.store.skip(job.id, &reason).await?;
    Ok(true)
}

/// hili never takes its own results for photos: a file whose content is a result in the queue
/// (copied into a watch folder, or a folder added that holds outputs) ends skipped, unpaid.
/// Returns true when the job was skipped.
pub(super) async fn own_result(ctx: &Ctx, job: &Job, sha: &str) -> Result<bool, PipelineError> {
    let Some((other, output)) = ctx.store.result_with_hash(sha, job.id).await? else {
        return Ok(false);
    };
    let id = job.id;
    let written = output.map_or(String::new(), |p| format!(" ({})", p.display()));
    let reason = format!(
        "not uploaded: {} is hili's own result of job {other}{written}, not a photo; \
         `hili retry --reupload {id}` processes it anyway (spends a credit)",
        job.source_path.display()
    );
    tracing::info!(job = %id, "{reason}");
    ctx.store.skip(id, &reason).await?;
    Ok(true)
}

/// Dedupe by identity. Returns true when the job needs no upload now: its result was copied
/// from an earlier job, or it waits for a twin that is in flight or held.
pub(super) async fn dedupe(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
    let Some(identity) = job.identity() else {
        return Ok(false);
    };
    let twins = ctx.store.identity_twins(&identity, job.id).await?;
    if let Some(done) = twins.iter().find(|t| t.state() == State::Done)
        && copy_from_twin(ctx, job, done).await?
    {
        return Ok(true);
    }
    // No result file to copy here (another node's disk, or deleted): the service may still
    // keep one of them, the newest first.
    let mut done: Vec<&Job> = twins.iter().filter(|t| t.state() == State::Done).collect();
    done.sort_by_key(|t| std::cmp::Reverse(t.processing_since_ms));
    for twin in done {
        if fetch_again(ctx, job, twin).await? {
            return Ok(true);
        }
    }
    if let Some(held) = twins
        .iter()
        .find(|t| t.state() == State::Held && t.credit_spent)
    {
        let reason = format!(
            "same photo as job {} which is held ({}); resolve that job first, then `hili retry {}`",
            held.id,
            held.reason.as_deref().unwrap_or("needs a person"),
            job.id
        );
        ctx.store
            .hold(job.id, State::Queued, &reason, false)
            .await?;
        return Ok(true);
    }
    if twins.iter().any(|t| t.state().in_flight()) {
        // A twin is being processed: wait for it and copy its result instead of paying twice.
        ctx.store
            .defer(job.id, State::Queued, now_ms() + TWIN_WAIT_MS)
            .await?;
        return Ok(true);
    }
    Ok(false)
}

/// How long after processing a result is still taken to be at the service: its retention is
/// one hour, and the download must start and finish within it.
const TWIN_RESULT_FRESH_MS: i64 = 50 * 60 * 1000;

/// Has `job` fetch the result of `twin` (done, the same photo) from the service again, when
/// it was processed recently enough to still be there: no upload, no credit. Returns whether
/// it did (or another worker moved the job first).
async fn fetch_again(ctx: &Ctx, job: &Job, twin: &Job) -> Result<bool, PipelineError> {
    let (Some(photo), Some(at)) = (twin.stage.photo(), twin.processing_since_ms) else {
        return Ok(false);
    };
    if now_ms() - at > TWIN_RESULT_FRESH_MS {
        return Ok(false);
    }
    match ctx.store.fetch_twin(job.id, twin.id, photo, at).await {
        Ok(()) => {
            tracing::info!(
                job = %job.id,
                "same photo as job {}, whose result file is not reachable here: fetching its \
                 result from the service again, no credit spent",
                twin.id
            );
            Ok(true)
        }
        Err(crate::store::StoreError::Conflict { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Gives `job` the output of `twin`, an earlier job with the same identity that is done: the
/// file is copied durably, no upload, no credit. Returns false when the twin's output is gone
/// or is not that result (the same path on another node's machine is another file).
async fn copy_from_twin(ctx: &Ctx, job: &Job, twin: &Job) -> Result<bool, PipelineError> {
    let (Some(src), Some(sha)) = (twin.output_path.clone(), twin.output_sha256.clone()) else {
        return Ok(false);
    };
    let job2 = job.clone();
    let copied = blocking(move || -> std::io::Result<Option<PathBuf>> {
        let Some(kind) = media::sniff_file(&src)? else {
            return Ok(None);
        };
        let candidate = media::output_path(
            &job2.output_dir,
            &job2.source_root,
            &job2.source_path,
            job2.repair,
            kind,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        match media::unique_destination(&candidate, &sha)? {
            Destination::AlreadyThere(p) => Ok(Some(p)),
            Destination::Free(p) => {
                let (copied, got) = media::copy_atomic(&src, &p)?;
                if got.eq_ignore_ascii_case(&sha) {
                    return Ok(Some(copied));
                }
                // Not the twin's result: leave no file of ours behind.
                std::fs::remove_file(&copied)?;
                Ok(None)
            }
        }
    })
    .await?;
    match copied {
        Ok(Some(path)) => {
            ctx.store
                .finish(
                    job.id,
                    State::Queued,
                    &path,
                    &twin.output_sha256.clone().unwrap_or_default(),
                )
                .await?;
            crate::pipeline::manifest::result_landed(ctx, job).await;
            tracing::info!(job = %job.id, "same photo as job {}: result copied to {}, no credit spent", twin.id, path.display());
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            tracing::warn!(job = %job.id, "could not copy the result of job {}: {e}", twin.id);
            ctx.store
                .defer(job.id, State::Queued, now_ms() + 5000)
                .await?;
            Ok(true)
        }
    }
}
