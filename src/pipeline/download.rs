//! The download stage: from `downloading` to `done`. Asks the API for the result's URL, GETs it
//! (http/https only, at most 5 redirects, a size cap, a stall limit and a minimum throughput,
//! must be an image by magic bytes), streams it into a temp file in the output directory,
//! writes the source's metadata into it (`carry.rs`), fsyncs, renames without clobbering, fsyncs
//! the directory, and only then records `done` with the output's path and SHA-256. A server
//! that keeps sending something wrong gets `max_attempts` tries, then the job is held with the
//! reason. [`fetch_result`] is the part that touches no store: the outage ride
//! (`outage.rs`) fetches with it while a shared queue's database is away.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::api::error::ApiError;
use crate::media::{self, AtomicFile, ImageKind};
use crate::store::{Job, JobId, Paid, Photo, State, StoreError};

use super::fetch_error::{FetchError, MIN_BYTES_PER_SEC};
use super::gate::Priority;
use super::{Ctx, OnExpired, PipelineError, blocking, now_ms};

/// What fetching a job's result came to.
pub(super) enum Fetched {
    /// The output is in place: its path and SHA-256, and a warning about the metadata that
    /// could not be carried into it (to note on the job).
    Stored {
        path: PathBuf,
        sha: String,
        warning: Option<String>,
    },
    /// The service no longer has the photo: its result expired.
    Expired,
    /// Asking for the result's address failed.
    Api(ApiError),
    /// Getting or writing the result failed.
    Fetch(FetchError),
}

pub async fn run(ctx: &Ctx, work: Paid) -> Result<(), PipelineError> {
    let Paid { job, photo } = work;
    let id = job.id;
    match fetch_result(ctx, &job, &photo).await? {
        Fetched::Stored { path, sha, warning } => {
            super::carry::note(ctx, id, warning).await?;
            if let Err(e) = ctx.store.finish(id, State::Downloading, &path, &sha).await {
                return Err(outrun(ctx, id, &path, e).await.into());
            }
            super::manifest::result_landed(ctx, &job).await;
            ctx.control.clear_failures(id);
            tracing::info!(job = %id, "done: {}", path.display());
        }
        Fetched::Expired => return expired(ctx, &job).await,
        Fetched::Api(e) => {
            ctx.control.pause_if_refused(&e);
            // A malformed answer (not JSON, wrong shape, a URL that is not http(s)) is the
            // server sending something wrong: it counts towards max_attempts, then holds.
            let malformed = matches!(e, ApiError::BadBody { .. });
            retry_later(ctx, &job, &e.to_string(), malformed).await?
        }
        Fetched::Fetch(e) => {
            pause_if_no_room(ctx, &e);
            retry_later(ctx, &job, &e.to_string(), e.remote_fault()).await?
        }
    }
    Ok(())
}

/// Fetches job `job`'s result (`photo`) into its output file, without touching the store.
/// Errors only when the blocking pool fails.
pub(super) async fn fetch_result(
    ctx: &Ctx,
    job: &Job,
    photo: &Photo,
) -> Result<Fetched, PipelineError> {
    ctx.gate.acquire(Priority::High).await;
    let url = match ctx.api.download_url(&photo.mdf).await {
        Ok(url) => url,
        Err(ApiError::NotFound { .. }) => return Ok(Fetched::Expired),
        Err(e) => return Ok(Fetched::Api(e)),
    };
    let dest_dir = output_dir_of(job);
    let (body, kind) = match fetch(ctx, &url, dest_dir.clone()).await {
        Ok(fetched) => fetched,
        Err(e) => return Ok(Fetched::Fetch(e)),
    };
    let job = job.clone();
    let carry = super::carry::Carry::of(ctx);
    let stored = blocking(move || {
        let mut file = match body {
            Body::Written(file) => file,
            Body::Small(chunks) => {
                write_small(&dest_dir, &chunks).map_err(|source| FetchError::Write {
                    dir: dest_dir.clone(),
                    source,
                })?
            }
        };
        let warning = carry.apply(&mut file, &job)?;
        store_output(file, &job, kind).map(|stored| (stored, warning))
    })
    .await?;
    Ok(match stored {
        Ok(((path, sha), warning)) => Fetched::Stored { path, sha, warning },
        Err(e) => Fetched::Fetch(e),
    })
}

/// A result stored for job `id` at `path` whose `done` the store refused (`e`). When the job
/// moved on because another node finished it first (its lease ran out while this node worked
/// it, or the database was away), this copy is a duplicate of the recorded one and is
/// removed; otherwise it is kept (a paid result is never deleted on a guess) and named in the
/// log. Returns `e`.
pub(super) async fn outrun(ctx: &Ctx, id: JobId, path: &Path, e: StoreError) -> StoreError {
    if !matches!(e, StoreError::Conflict { .. }) {
        return e;
    }
    let recorded = match ctx.store.get(id).await {
        Ok(Some(job)) if job.state() == State::Done => job.output_path,
        _ => None,
    };
    match recorded {
        Some(theirs) if theirs != path => {
            let ours = path.to_path_buf();
            match blocking(move || std::fs::remove_file(&ours)).await {
                Ok(Ok(())) => tracing::info!(
                    job = %id,
                    "another node finished this job first ({}): removed the duplicate {}",
                    theirs.display(),
                    path.display()
                ),
                _ => tracing::warn!(
                    job = %id,
                    "another node finished this job first ({}); could not remove the duplicate {}: delete it by hand",
                    theirs.display(),
                    path.display()
                ),
            }
        }
        Some(_) => {}
        None => tracing::warn!(
            job = %id,
            "the result was stored at {} but the job moved on meanwhile ({e}); the file is kept",
            path.display()
        ),
    }
    e
}

/// A result that cannot be written for want of room (full, read-only, not writable) pauses
/// uploads: paying for more results that could not be stored would only lose them.
fn pause_if_no_room(ctx: &Ctx, e: &FetchError) {
    if let FetchError::Write { dir, source } = e
        && media::is_no_room(source)
    {
        let why = format!("results cannot be written into {}: {source}", dir.display());
        ctx.control.pause(
            super::control::Pause::NoRoom(why),
            super::control::ROOM_RECHECK,
        );
    }
}

/// The directory the job's output goes into (where its temp file is written too).
pub(super) fn output_dir_of(job: &Job) -> PathBuf {
    let source_dir = job.source_path.parent().unwrap_or(Path::new(""));
    output_dir_in(&job.output_dir, &job.source_root, source_dir)
}

/// The directory outputs of photos in `source_dir` go into; the output root itself when the
/// tree below it cannot be used (a symlink there is refused when the output is named).
pub(super) fn output_dir_in(output_dir: &Path, source_root: &Path, source_dir: &Path) -> PathBuf {
    media::output_folder(output_dir, source_root, source_dir)
        .unwrap_or_else(|_| output_dir.to_path_buf())
}

/// Bytes read before the magic check; no file is created before it passes.
const HEAD_BYTES: usize = 8;
/// A result that has fully arrived within this many bytes is kept in memory and written,
/// synced and renamed in one trip to the blocking pool; a larger one streams to its temp
/// file while it arrives, so memory stays flat (at most this much per download slot).
const SMALL_BODY: u64 = 256 * 1024;

/// A fetched result: still in memory (small), or already in its temp file.
enum Body {
    Small(Vec<Bytes>),
    Written(AtomicFile),
}

/// Writes a small result, held in memory, into a fresh temp file in `dir`.
fn write_small(dir: &Path, chunks: &[Bytes]) -> std::io::Result<AtomicFile> {
    let mut file = AtomicFile::create_in(dir)?;
    for c in chunks {
        file.write_all(c)?;
    }
    Ok(file)
}

/// Limits of one result GET.
struct Limits {
    max_bytes: u64,
    /// Longest wait for the answer's headers or for any chunk, and the throughput grace.
    stall: Duration,
    started: Instant,
}

impl Limits {
    /// Waits for the next chunk and checks it against every limit.
    async fn next<S>(&self, stream: &mut S, total: &mut u64) -> Result<Option<Bytes>, FetchError>
    where
        S: futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    {
        let chunk = match tokio::time::timeout(self.stall, stream.next()).await {
            Err(_) => return Err(FetchError::Stalled(self.stall)),
            Ok(None) => return Ok(None),
            Ok(Some(c)) => c.map_err(|e| self.http_error(e))?,
        };
        *total += chunk.len() as u64;
        if *total > self.max_bytes {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let elapsed = self.started.elapsed();
        if elapsed > self.stall
            && (*total as f64) < MIN_BYTES_PER_SEC as f64 * elapsed.as_secs_f64()
        {
            return Err(FetchError::TooSlow {
                bytes: *total,
                after: elapsed,
            });
        }
        Ok(Some(chunk))
    }

    /// The client's own read timeout is a stall too.
    fn http_error(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Stalled(self.stall)
        } else {
            FetchError::Http(e)
        }
    }
}

/// GETs a result into a temp file in `dir`. Only http(s); headers within `api.timeout`; no
/// stall longer than that; at least [`MIN_BYTES_PER_SEC`] on average after that; at most
/// `max_download_bytes`; JPEG or PNG by magic bytes (checked before any file exists). On any
/// failure the temp file is removed before this returns. Nothing the server sends (URL path,
/// headers) is used to name anything: the output's name comes from the source path only.
async fn fetch(ctx: &Ctx, url: &str, dir: PathBuf) -> Result<(Body, ImageKind), FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl(url.to_string()));
    }
    let limits = Limits {
        max_bytes: ctx.settings.max_download_bytes,
        stall: ctx.settings.timeout,
        started: Instant::now(),
    };
    let resp = tokio::time::timeout(limits.stall, ctx.api.http().get(parsed).send())
        .await
        .map_err(|_| FetchError::Stalled(limits.stall))?
        .map_err(|e| limits.http_error(e))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > limits.max_bytes) {
        return Err(FetchError::TooLarge(limits.max_bytes));
    }
    let mut stream = resp.bytes_stream();
    let mut total: u64 = 0;

    // The head first: a body that is not an image never reaches the disk.
    let mut head: Vec<u8> = Vec::with_capacity(64);
    let mut first: Vec<Bytes> = Vec::new();
    while head.len() < HEAD_BYTES {
        let Some(chunk) = limits.next(&mut stream, &mut total).await? else {
            break;
        };
        head.extend_from_slice(&chunk[..chunk.len().min(HEAD_BYTES - head.len())]);
        first.push(chunk);
    }
    let kind = media::sniff(&head).ok_or(FetchError::NotImage)?;

    // A small result is read whole before any file exists.
    while total <= SMALL_BODY {
        match limits.next(&mut stream, &mut total).await? {
            Some(chunk) => first.push(chunk),
            None => return Ok((Body::Small(first), kind)),
        }
    }

    stream_to_file(&limits, stream, first, total, dir)
        .await
        .map(|file| (Body::Written(file), kind))
}

/// Streams the rest of a large result (after the chunks already read, `first`) into a temp
/// file in `dir`: a blocking task writes while the body arrives, so memory stays flat. On any
/// failure the temp file is removed before returning.
async fn stream_to_file(
    limits: &Limits,
    mut stream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    first: Vec<Bytes>,
    mut total: u64,
    dir: PathBuf,
) -> Result<AtomicFile, FetchError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let write_dir = dir.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<AtomicFile> {
        let mut file = AtomicFile::create_in(&write_dir)?;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        Ok(file)
    });
    let streamed = async {
        for chunk in first {
            if tx.send(chunk).await.is_err() {
                return Ok(()); // the writer failed: its error is reported below
            }
        }
        while let Some(chunk) = limits.next(&mut stream, &mut total).await? {
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
        Ok::<(), FetchError>(())
    }
    .await;
    drop(tx);
    let written = match writer.await {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    };
    match (streamed, written) {
        (Ok(()), Ok(file)) => Ok(file),
        (Ok(()), Err(source)) => Err(FetchError::Write { dir, source }),
        (Err(e), Ok(file)) => {
            // Dropping removes the temp file: done off the async threads, and before returning
            // so nothing partial is left once the job's state is updated.
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// Names the output and moves the temp file there (or drops it when an identical file is
/// already in place, e.g. after a crash between the rename and `done`).
fn store_output(
    file: AtomicFile,
    job: &Job,
    kind: ImageKind,
) -> Result<(PathBuf, String), FetchError> {
    let dir = output_dir_of(job);
    let werr = |source| FetchError::Write {
        dir: dir.clone(),
        source,
    };
    let candidate = media::output_path(
        &job.output_dir,
        &job.source_root,
        &job.source_path,
        job.repair,
        kind,
    )
    .map_err(|e| werr(std::io::Error::other(e.to_string())))?;
    // commit never clobbers: it numbers the name, or keeps an identical file already there
    // (e.g. after a crash between the rename and `done`).
    file.commit(&candidate).map_err(werr)
}

pub(super) async fn expired(ctx: &Ctx, job: &Job) -> Result<(), PipelineError> {
    let id = job.id;
    match ctx.settings.on_expired {
        OnExpired::Reupload if job.charges < 2 => {
            let reason = "result expired before download; uploading again (on_expired = \"reupload\", spends a credit)";
            tracing::warn!(job = %id, "{}: {reason}", job.source_path.display());
            ctx.store
                .requeue(id, State::Downloading, reason, now_ms())
                .await?;
        }
        // Re-uploading is automatic once per job: a result that keeps expiring means the
        // downloads cannot keep up, and paying again and again would not fix that.
        OnExpired::Hold | OnExpired::Reupload => {
            let reason = format!(
                "result expired, credit lost: the service deleted the result of {} before it \
                 could be downloaded; `hili retry --reupload {id}` uploads it again (spends a credit)",
                job.source_path.display()
            );
            tracing::warn!(job = %id, "{reason}");
            ctx.store
                .hold(id, State::Downloading, &reason, false)
                .await?;
        }
    }
    Ok(())
}

async fn retry_later(
    ctx: &Ctx,
    job: &Job,
    why: &str,
    remote_fault: bool,
) -> Result<(), PipelineError> {
    let id = job.id;
    let failures = ctx.control.note_failure(id);
    if remote_fault && failures >= ctx.settings.max_attempts {
        let reason = format!(
            "could not download the result after {failures} attempts: {why}; it stays on the \
             service for one hour after processing: `hili retry {id}` tries again"
        );
        tracing::warn!(job = %id, "{reason}");
        ctx.store
            .hold(id, State::Downloading, &reason, false)
            .await?;
        ctx.control.clear_failures(id);
        return Ok(());
    }
    let wait = ctx.retry_wait(failures, Duration::from_secs(60), id);
    tracing::warn!(job = %id, "download failed, again in {wait:?}: {why}");
    ctx.store
        .defer(id, State::Downloading, now_ms() + wait.as_millis() as i64)
        .await?;
    Ok(())
}
