//! The upload stage: everything between `queued` and `processing`, as its steps —
//!
//! 1. [`check`]: the file is still what was queued, is a photo the service takes (no credit is
//!    spent on input bound to fail), and its content hash;
//! 2. [`skip`]: no upload when a later job took the file over, it is hili's own result, or the
//!    same photo is done, in flight or held (dedupe by identity, the SOURCE's content);
//!    then [`prepare`]: a source the service does not take as it is (TIFF, WebP, BMP, over
//!    6000 px) is converted into a copy in the state directory, which the send uploads and
//!    removes once its answer is handled;
//! 3. [`credits`]: a send slot, room for the result, credits on the account, the budget;
//! 4. to 6. [`send`]: the intent persisted as `uploading` with the credits seen, the request,
//!    and its answer recorded before anything else happens; a lost answer is reconciled by the
//!    credit count, never by a blind re-upload.

mod check;
mod credits;
mod prepare;
mod send;
mod skip;

pub(crate) use check::too_large;

use crate::store::Job;

use super::{Ctx, PipelineError};

/// How long a job waits before looking again when an identical photo is in flight.
const TWIN_WAIT_MS: i64 = 1000;
/// Errno 9006 ("upload failed") this many times in a row for one file fails its job.
const REFUSALS_BEFORE_FAILING: u32 = 3;

/// Takes one queued job as far as it can go now.
pub async fn run(ctx: &Ctx, job: Job) -> Result<(), PipelineError> {
    // 1. Check (the file changed since it was queued is first offered to a later job for it).
    let seen = check::inspect(ctx, &job).await?;
    if seen.changed && skip::superseded(ctx, &job).await? {
        return Ok(());
    }
    let Some(check::Checked { sha, plan }) = check::hash_or_fail(ctx, &job, seen.checked).await?
    else {
        return Ok(());
    };
    // The hash is recorded with the upload intent (one commit); until then it lives here.
    let job = Job {
        content_sha256: Some(sha.clone()),
        ..job
    };
    // 2. Skip what needs no upload.
    if !job.force
        && (skip::renamed(ctx, &job).await?
            || skip::own_result(ctx, &job, &sha).await?
            || skip::dedupe(ctx, &job).await?)
    {
        return Ok(());
    }
    // The copy to send, when the source is not sent as it is; the identity stays the source's.
    let converted = match plan {
        None => None,
        Some(plan) => match prepare::convert(ctx, &job, &sha, plan).await? {
            Some(c) => Some(c),
            None => return Ok(()),
        },
    };
    // 3. Credit.
    let Some(go) = credits::reserve(ctx, &job).await? else {
        prepare::discard(&job, converted).await;
        return Ok(());
    };
    // 4.-6. Intent, request, answer. The copy goes whatever happened: a later attempt (or the
    // restart after a crash) rebuilds it identically.
    let sent = send::send(ctx, &job, &sha, converted.as_ref(), go).await;
    prepare::discard(&job, converted).await;
    sent
}
