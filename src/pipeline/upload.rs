//! The upload stage: everything between `queued` and `processing`. In order: the input check
//! (no credit is spent on input bound to fail), the content hash and dedupe by identity (a photo
//! already done is copied, one in flight is waited for), the credit check, the intent persisted
//! as `uploading` with the credits seen, and only then the request. Its answer is recorded
//! before anything else happens; a lost answer is reconciled by the credit count, never by a
//! blind re-upload.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::api::error::{ApiError, ErrorClass};
use crate::failpoint;
use crate::media;
use crate::store::{Job, State, StoreError, UploadIntent, Uploaded};

use super::backoff::retry_delay;
use super::control::Pause;
use super::{Ctx, PipelineError, blocking, now_ms};
use super::{gate::Priority, recover};

/// How long a job waits before looking again when an identical photo is in flight.
const TWIN_WAIT_MS: i64 = 1000;
/// Errno 9006 ("upload failed") this many times in a row for one file fails its job.
const REFUSALS_BEFORE_FAILING: u32 = 3;

/// Takes one queued job as far as it can go now.
pub async fn run(ctx: &Ctx, job: Job) -> Result<(), PipelineError> {
    let id = job.id;

    // 1. The input check (the same rules as the service's, so a photo bound to fail costs
    //    nothing), then 2. identity: the content hashed, streaming, just before it is sent.
    //    One trip to the blocking pool for both.
    let src = job.source_path.clone();
    let limit = ctx.settings.max_upload_bytes;
    // Is the file still the version that was queued? Gone, or another size or time: a later
    // job for it (renamed, saved again) takes over, and this one has nothing left to do.
    // (Asked in the same trip to the blocking pool as the checks.)
    let (recorded_size, recorded_mtime) = (job.size, job.mtime_ns);
    let (changed, checked) = blocking(move || {
        let changed = match std::fs::metadata(&src) {
            Ok(m) => m.len() != recorded_size || media::mtime_ns(&m) != recorded_mtime,
            Err(_) => true,
        };
        (changed, check_and_hash(&src, limit))
    })
    .await?;
    if changed && superseded(ctx, &job).await? {
        return Ok(());
    }
    let sha = match checked {
        Err(reason) => {
            tracing::warn!(job = %id, "{reason}");
            ctx.store.fail(id, State::Queued, &reason, false).await?;
            return Ok(());
        }
        Ok(Err(e)) => {
            let reason = format!(
                "{}: could not be read ({e}); check the file and run `hili retry {id}`",
                job.source_path.display()
            );
            ctx.store.fail(id, State::Queued, &reason, false).await?;
            return Ok(());
        }
        Ok(Ok(sha)) => sha,
    };
    // The hash is recorded with the upload intent (one commit); until then it lives here.
    let job = Job {
        content_sha256: Some(sha.clone()),
        ..job
    };

    if !job.force
        && (renamed(ctx, &job).await?
            || own_result(ctx, &job, &sha).await?
            || dedupe(ctx, &job).await?)
    {
        return Ok(());
    }

    // From here to the recorded answer, at most `upload_concurrency` jobs at once; the checks
    // above ran while an earlier upload was in flight. A pause or a stop that began while this
    // job waited leaves it queued, untouched.
    let Ok(slot) = ctx.send_slots.acquire().await else {
        return Ok(());
    };
    if ctx.shutdown.is_cancelled() || ctx.control.paused().is_some() {
        return Ok(());
    }
    // No credit on a result with nowhere to go: the output folder must have room for it.
    // Asked here, as late as it costs nothing, so a disk that filled meanwhile is seen.
    if let Some(why) = no_room(&job).await? {
        ctx.control
            .pause(Pause::NoRoom(why), super::control::ROOM_RECHECK);
        return Ok(());
    }

    // 3. Credits: never start an upload the account cannot pay for, and remember what we saw
    //    so a lost answer can be reconciled.
    let Some(credits_before) = credits_for_upload(ctx, &job).await? else {
        return Ok(());
    };
    if !ctx.control.reserve(ctx.settings.budget) {
        ctx.control
            .pause(Pause::Budget, Duration::from_secs(365 * 24 * 3600));
        return Ok(());
    }

    // The output directory is marked as this queue's before a credit is spent on it, so a
    // lost database is noticed at the next start instead of re-uploading everything.
    mark_output_dir(ctx, &job).await;

    // 4. The intent, durable before a byte is sent, with the hash and the credits seen. The
    //    store refuses it while an identical photo is in flight (checked atomically with the
    //    state change), so racing workers never pay twice for one photo.
    let intent = UploadIntent {
        credits_before,
        content_sha256: Some(&sha),
        exclusive: !job.force,
    };
    match ctx.store.begin_upload_with(id, &intent).await {
        Ok(()) => {}
        Err(StoreError::TwinBusy { .. }) => {
            ctx.control.settle(false);
            tracing::info!(job = %id, "an identical photo is in flight; waiting to copy its result");
            ctx.store
                .defer(id, State::Queued, now_ms() + TWIN_WAIT_MS)
                .await?;
            return Ok(());
        }
        Err(e) => {
            ctx.control.settle(false);
            return Err(e.into());
        }
    }
    failpoint::hit("before-upload-request");
    run_before_send_hook(&job.source_path);
    let answer = ctx.api.upload(&job.source_path, job.repair, job.rgb).await;
    failpoint::hit("after-upload-response");

    match answer {
        Ok(up) => {
            let changed = !up.sent_sha256.eq_ignore_ascii_case(&sha);
            let first_poll = now_ms() + ctx.settings.poll_interval.as_millis() as i64;
            let recorded = Uploaded {
                mdf: &up.mdf,
                img_url: &up.img_url,
                first_poll_at: Some(first_poll),
                // The result is of the bytes sent, so they are the job's identity: dedupe and
                // `hili status` must not claim the result is of the file as hashed.
                sent_sha256: changed.then_some(up.sent_sha256.as_str()),
            };
            let recorded = ctx.store.queue_uploaded(id, &recorded)?;
            // The answer is queued ahead of anything the next upload writes (its intent commits
            // after it or with it, and its request is sent only then), and the charge is
            // already counted by the service: the next photo may ask for the credits now.
            drop(slot);
            match recorded.committed().await {
                Ok(()) => {}
                Err(StoreError::Conflict { found, .. }) => {
                    adopt_late_answer(ctx, &job, found, &up.mdf, &up.img_url, first_poll).await?
                }
                Err(e) => return Err(e.into()),
            }
            ctx.control.settle(true);
            if changed {
                tracing::warn!(
                    job = %id,
                    "{} changed while it was being uploaded; recorded the hash of the bytes \
                     sent ({}), the result is of those",
                    job.source_path.display(),
                    up.sent_sha256
                );
            }
            tracing::info!(job = %id, mdf = %up.mdf, "uploaded {}", job.source_path.display());
        }
        Err(e) => {
            let charged = on_upload_error(ctx, &job, credits_before, e).await?;
            ctx.control.settle(charged);
        }
    }
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

/// The input check and the content hash: `Err(reason)` for a file that must not be sent,
/// `Ok(Err(_))` for one that could not be read.
fn check_and_hash(src: &Path, limit: u64) -> Result<std::io::Result<String>, String> {
    // What is wrong with the file itself first (it says more), then the size limit.
    media::probe(src)
        .and_then(|p| media::check_size(src, &p))
        .map_err(|e| e.to_string())?;
    if let Some(reason) = too_large(src, limit) {
        return Err(reason);
    }
    Ok(media::sha256_file(src))
}

/// The size limit, checked before any byte is read or sent: `Some(reason)` for a file over
/// `limit` bytes. (A file that cannot be stat'ed is left to the input check, which says why.)
fn too_large(src: &Path, limit: u64) -> Option<String> {
    let size = std::fs::metadata(src).ok()?.len();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    (size > limit).then(|| {
        format!(
            "{}: {:.1} MiB is over the upload limit of {:.1} MiB ([input] max_upload_bytes); not \
             sent, no credit spent: shrink or re-encode the photo, or raise the limit, then \
             `hili retry`",
            src.display(),
            mib(size),
            mib(limit)
        )
    })
}

/// Handles a failed upload; returns whether a credit was (or may have been) spent.
async fn on_upload_error(
    ctx: &Ctx,
    job: &Job,
    credits_before: u64,
    e: ApiError,
) -> Result<bool, PipelineError> {
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
            ctx.store.fail(id, State::Uploading, &reason, false).await?;
        }
        ErrorClass::Transient if attempts >= ctx.settings.max_attempts => {
            let reason = format!(
                "gave up after {attempts} attempts, no credit spent: {e}; run `hili retry {id}` to try again"
            );
            tracing::warn!(job = %id, "{reason}");
            ctx.store.fail(id, State::Uploading, &reason, false).await?;
        }
        ErrorClass::Transient => {
            let wait = retry_delay(
                attempts,
                ctx.settings.retry_base,
                Duration::from_secs(300),
                id,
            );
            tracing::info!(job = %id, "upload failed, not charged; retrying in {wait:?}: {e}");
            let at = now_ms() + wait.as_millis() as i64;
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), at)
                .await?;
        }
        ErrorClass::PermanentForPhoto => {
            let reason = format!("{}: {e}", job.source_path.display());
            tracing::warn!(job = %id, "{reason}");
            ctx.store.fail(id, State::Uploading, &reason, false).await?;
        }
        ErrorClass::AccountWide => {
            ctx.control
                .pause(Pause::NoCredits, ctx.settings.credits_recheck);
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), now_ms())
                .await?;
        }
        ErrorClass::Misconfigured => {
            ctx.control.pause(
                Pause::Misconfigured(e.to_string()),
                super::control::MISCONFIGURED_RECHECK,
            );
            ctx.store
                .requeue(id, State::Uploading, &e.to_string(), now_ms())
                .await?;
        }
        ErrorClass::Ambiguous => {
            tracing::warn!(job = %id, "the upload's answer was lost ({e}); reconciling by the credit count");
            return recover::reconcile(ctx, id, Some(credits_before), None).await;
        }
    }
    Ok(false)
}

/// Reads the credits left before an upload. `None` means "do not upload now": the account
/// has no credits or rejected the token (uploads are paused), or the service could not be
/// asked (this job waits a little).
async fn credits_for_upload(ctx: &Ctx, job: &Job) -> Result<Option<u64>, PipelineError> {
    ctx.gate.acquire(Priority::Low).await;
    match ctx.api.credits().await {
        Ok(n) => {
            // A count that leads to an upload is recorded with the upload intent.
            if n == 0 {
                ctx.store.record_credits(n).await?;
                ctx.control
                    .pause(Pause::NoCredits, ctx.settings.credits_recheck);
                return Ok(None);
            }
            if matches!(ctx.control.paused(), Some((Pause::NoCredits, _))) {
                ctx.control.resume();
            }
            Ok(Some(n))
        }
        Err(e) if e.class() == ErrorClass::Misconfigured => {
            ctx.control.pause(
                Pause::Misconfigured(e.to_string()),
                super::control::MISCONFIGURED_RECHECK,
            );
            Ok(None)
        }
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
                    super::control::MISCONFIGURED_RECHECK,
                );
                return Ok(None);
            }
            let wait = retry_delay(
                failures,
                ctx.settings.retry_base,
                Duration::from_secs(60),
                job.id,
            );
            tracing::warn!(job = %job.id, "could not read the credits left before the upload, again in {wait:?}: {e}");
            let at = now_ms() + wait.as_millis() as i64;
            ctx.store.defer(job.id, State::Queued, at).await?;
            Ok(None)
        }
    }
}

/// Why the job's output folder cannot take its result now, if it cannot: read-only, not
/// writable, or less free space than the result may need. A folder whose room cannot be read
/// is let through (the download reports what is wrong with it, and pauses then).
async fn no_room(job: &Job) -> Result<Option<String>, PipelineError> {
    let dir = super::download::output_dir_of(job);
    let need = media::expected_result_bytes(job.size, job.repair);
    let d = dir.clone();
    let room = match blocking(move || media::room(&d)).await? {
        Ok(room) => room,
        Err(e) => {
            tracing::debug!(job = %job.id, "could not read the room in {}: {e}", dir.display());
            return Ok(None);
        }
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(if room.read_only {
        Some(format!(
            "the output folder {} is on a read-only filesystem",
            dir.display()
        ))
    } else if !room.writable {
        Some(format!(
            "the output folder {} is not writable by hili",
            dir.display()
        ))
    } else if room.free < need {
        Some(format!(
            "the output folder {} has {:.1} MiB free, less than the {:.1} MiB a result of {} may need",
            dir.display(),
            mib(room.free),
            mib(need),
            job.source_path.display()
        ))
    } else {
        None
    })
}

/// The job's file is gone or changed since it was queued, and a later job has it (renamed:
/// same device and inode under a new name; saved again: the same path): this job ends
/// `skipped`, "superseded", rather than failing for a file that was processed under its new
/// name. Returns true when it did.
async fn superseded(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
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
async fn renamed(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
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
async fn own_result(ctx: &Ctx, job: &Job, sha: &str) -> Result<bool, PipelineError> {
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
async fn dedupe(ctx: &Ctx, job: &Job) -> Result<bool, PipelineError> {
    let Some(identity) = job.identity() else {
        return Ok(false);
    };
    let twins = ctx.store.identity_twins(&identity, job.id).await?;
    if let Some(done) = twins.iter().find(|t| t.state == State::Done)
        && super::download::copy_from_twin(ctx, job, done).await?
    {
        return Ok(true);
    }
    if let Some(held) = twins
        .iter()
        .find(|t| t.state == State::Held && t.credit_spent)
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
    if twins.iter().any(|t| t.state.in_flight()) {
        // A twin is being processed: wait for it and copy its result instead of paying twice.
        ctx.store
            .defer(job.id, State::Queued, now_ms() + TWIN_WAIT_MS)
            .await?;
        return Ok(true);
    }
    Ok(false)
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

type Hook = Box<dyn FnOnce() + Send>;

/// Test hooks run right before an upload request, keyed by source path.
static BEFORE_SEND: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

/// Test hook: runs `f` once, right before the upload request for `source` is sent (after the
/// input check, the hash and the persisted intent) — e.g. to replace the file mid-flight.
/// Unused in normal operation; costs one uncontended lock per upload.
#[doc(hidden)]
pub fn before_send(source: PathBuf, f: impl FnOnce() + Send + 'static) {
    let mut hooks = BEFORE_SEND.lock().unwrap_or_else(|e| e.into_inner());
    hooks.push((source, Box::new(f)));
}

fn run_before_send_hook(source: &Path) {
    let hook = {
        let mut hooks = BEFORE_SEND.lock().unwrap_or_else(|e| e.into_inner());
        let i = hooks.iter().position(|(p, _)| p == source);
        i.map(|i| hooks.swap_remove(i).1)
    };
    if let Some(f) = hook {
        f();
    }
}
