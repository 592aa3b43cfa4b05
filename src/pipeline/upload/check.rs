//! Step 1 of an upload, the check: is the file still the version that was queued (if not, a
//! later job for it may take over: see `skip`), is it a photo the service takes (the same rules
//! as the service's, and complete), is it under the size limit, and its content hash. One trip
//! to the blocking pool for all of it. Also the room check of the output folder, asked just
//! before the credit is committed (step 3).

use std::path::Path;

use crate::media;
use crate::store::{Job, State};

use crate::pipeline::{Ctx, Oversize, PipelineError, blocking};

/// The file as it is now: whether it changed since it was queued (gone, or another size or
/// time), and the input check with its hash.
pub(super) struct Inspected {
    pub changed: bool,
    pub checked: Result<std::io::Result<Checked>, String>,
}

/// A file that may be sent: its content hash (the job's identity) and, when the service does
/// not take it as it is, how it is converted first.
pub(super) struct Checked {
    pub sha: String,
    pub plan: Option<media::Plan>,
}

/// Reads the file once for everything step 1 needs.
pub(super) async fn inspect(ctx: &Ctx, job: &Job) -> Result<Inspected, PipelineError> {
    let src = job.source_path.clone();
    let limit = ctx.settings.max_upload_bytes;
    let downscale = ctx.settings.oversize == Oversize::Downscale;
    let (recorded_size, recorded_mtime) = (job.size, job.mtime_ns);
    blocking(move || {
        let changed = match std::fs::metadata(&src) {
            Ok(m) => m.len() != recorded_size || media::mtime_ns(&m) != recorded_mtime,
            Err(_) => true,
        };
        Inspected {
            changed,
            checked: check_and_hash(&src, limit, downscale),
        }
    })
    .await
    .map_err(PipelineError::from)
}

/// The hash of a file that may be sent; `None` when the job was failed instead (bound to fail,
/// or unreadable), with its reason.
pub(super) async fn hash_or_fail(
    ctx: &Ctx,
    job: &Job,
    checked: Result<std::io::Result<Checked>, String>,
) -> Result<Option<Checked>, PipelineError> {
    let id = job.id;
    let reason = match checked {
        Ok(Ok(c)) => return Ok(Some(c)),
        Err(reason) => {
            tracing::warn!(job = %id, "{reason}");
            reason
        }
        Ok(Err(e)) => format!(
            "{}: could not be read ({e}); check the file and run `hili retry {id}`",
            job.source_path.display()
        ),
    };
    ctx.store.fail(id, State::Queued, &reason).await?;
    Ok(None)
}

/// The input check and the content hash: `Err(reason)` for a file that must not be sent,
/// `Ok(Err(_))` for one that could not be read. A file to convert is checked by its decode
/// (`prepare`), and the size limit applies to the converted copy.
fn check_and_hash(
    src: &Path,
    limit: u64,
    downscale: bool,
) -> Result<std::io::Result<Checked>, String> {
    // What is wrong with the file itself first (it says more), then the size limit.
    let plan = match media::examine(src, downscale).map_err(|e| e.to_string())? {
        media::Input::Direct(probe) => {
            media::check_size(src, &probe).map_err(|e| e.to_string())?;
            if let Some(reason) = too_large(src, probe.size, limit) {
                return Err(reason);
            }
            None
        }
        media::Input::Convert(plan) => Some(plan),
    };
    Ok(media::sha256_file(src).map(|sha| Checked { sha, plan }))
}

/// The size limit, checked before any byte is sent: `Some(reason)` for a file of `size` bytes
/// over `limit` (the size the probe already read). `hili add` asks it too.
pub(crate) fn too_large(src: &Path, size: u64, limit: u64) -> Option<String> {
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

/// Why the job's output folder cannot take its result now, if it cannot: read-only, not
/// writable, or less free space than the result may need. A folder whose room cannot be read
/// is let through (the download reports what is wrong with it, and pauses then).
pub(super) async fn no_room(job: &Job) -> Result<Option<String>, PipelineError> {
    let dir = crate::pipeline::download::output_dir_of(job);
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
    } else {
        room.free.filter(|&free| free < need).map(|free| {
            format!(
                "the output folder {} has {:.1} MiB free, less than the {:.1} MiB a result of {} \
                 may need",
                dir.display(),
                mib(free),
                mib(need),
                job.source_path.display()
            )
        })
    })
}
