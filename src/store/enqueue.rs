//! Adding files to the queue. Enqueue records only what `stat` gives (path, size, mtime), never
//! reads content, and is idempotent: the same file version with the same settings is known
//! once. `enqueue_many` does a whole `hili add` walk in one transaction.

use std::path::PathBuf;

use sqlx::SqliteConnection;

use super::error::SqlContext;
use super::jobs::{path_bytes, rgb_text};
use super::{JobId, SqliteStore, State, StoreError, now_ms};
use crate::media::{FileId, Found};
use crate::repair::{Repair, Rgb};

/// A file to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub source_path: PathBuf,
    /// The watched/added folder the file was found under (for output naming and disposition).
    pub source_root: PathBuf,
    pub output_dir: PathBuf,
    pub repair: Repair,
    /// Required for [`Repair::Bg`], and only for it.
    pub rgb: Option<Rgb>,
    pub size: u64,
    pub mtime_ns: i64,
    /// Device and inode when known: disposition checks the file is still this one.
    pub file_id: Option<FileId>,
    /// Process again even if the same file (or content) was already done.
    pub force: bool,
}

impl NewJob {
    /// A file found by a walk (`hili add`, a scan), to be processed with `repair` (and `rgb`)
    /// into `output_dir`.
    pub fn from_found(f: Found, output_dir: PathBuf, repair: Repair, rgb: Option<Rgb>) -> NewJob {
        NewJob {
            source_path: f.path,
            source_root: f.root,
            output_dir,
            repair,
            rgb,
            size: f.size,
            mtime_ns: f.mtime_ns,
            file_id: Some(f.file_id),
            force: false,
        }
    }

    /// For unit tests: `name` below `root`, to super-resolve into `out`, with a made-up size
    /// and time (nothing is read from disk).
    #[cfg(test)]
    pub(crate) fn sample(root: &std::path::Path, name: &str, out: &std::path::Path) -> NewJob {
        NewJob {
            source_path: root.join(name),
            source_root: root.to_path_buf(),
            output_dir: out.to_path_buf(),
            repair: Repair::Sr,
            rgb: None,
            size: 10,
            mtime_ns: 1,
            file_id: None,
            force: false,
        }
    }
}

/// What [`SqliteStore::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job was created in state queued.
    Queued(JobId),
    /// The same (path, size, mtime, repair, rgb, output_dir) is already known, in that state;
    /// nothing was added.
    AlreadyKnown(JobId, State),
    /// The file is hili's own result, written by this job: never queued as a photo (unless
    /// `force`).
    OwnResult(JobId),
    /// A new job was created in state failed: `hili add` found the file invalid (see
    /// `SqliteStore::enqueue_invalid`); its reason is recorded, nothing is ever sent.
    Failed(JobId),
}

/// Which earlier job makes a file version "already known".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The same file version with the same settings (repair, colour, output folder): `hili add`,
    /// where asking for another repair type is a request for new work.
    SameSettings,
    /// The same file version under any settings: watch folders, where a changed repair type
    /// applies to new photos only instead of silently paying again for every kept photo.
    AnySettings,
}

impl EnqueueOutcome {
    pub fn id(self) -> JobId {
        match self {
            EnqueueOutcome::Queued(id)
            | EnqueueOutcome::AlreadyKnown(id, _)
            | EnqueueOutcome::OwnResult(id)
            | EnqueueOutcome::Failed(id) => id,
        }
    }
}

impl SqliteStore {
    /// Queues many files in one transaction; outcomes are in input order.
    ///
    /// Without `force`, a file already known with the same (path, size, mtime, repair, rgb,
    /// output_dir) in ANY state is `AlreadyKnown`. With `force`: if that latest match is still
    /// queued, it is only marked `force` (still `AlreadyKnown`, no duplicate); otherwise a NEW
    /// job is created (history of the old one is kept; `done` jobs are never rewritten here).
    ///
    /// Cost: about 0.1 ms per file, all under the write lock. Next to a running daemon, pass
    /// chunks of a few thousand so its transitions never wait long; enqueue is idempotent, so
    /// an interrupted walk is simply re-added.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_many_as(jobs, Known::SameSettings).await
    }

    /// [`SqliteStore::enqueue_many`] with the rule for what is already known. Under either rule, a
    /// file at a path where a job wrote its result is hili's own result and is not queued
    /// (`OwnResult`), unless forced.
    pub async fn enqueue_many_as(
        &self,
        jobs: Vec<NewJob>,
        known: Known,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        for j in &jobs {
            validate(j)?;
        }
        let mut tx = self.begin_write("enqueueing files").await?;
        super::export::set_agent(&mut tx).await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        for j in &jobs {
            out.push(enqueue_one(&mut tx, j, now, known).await?);
        }
        tx.commit().await.ctx("committing enqueued files")?;
        Ok(out)
    }
}

pub(super) fn validate(j: &NewJob) -> Result<(), StoreError> {
    let p = j.source_path.display();
    if j.repair.needs_rgb() != j.rgb.is_some() {
        return Err(StoreError::Invalid {
            detail: format!(
                "{p}: repair type {} {} a colour; set rgb only for bg",
                j.repair,
                if j.repair.needs_rgb() {
                    "needs"
                } else {
                    "takes no"
                }
            ),
        });
    }
    if i64::try_from(j.size).is_err() {
        return Err(StoreError::Invalid {
            detail: format!("{p}: size {} is out of range", j.size),
        });
    }
    Ok(())
}

pub(super) async fn enqueue_one(
    conn: &mut SqliteConnection,
    j: &NewJob,
    now: i64,
    known: Known,
) -> Result<EnqueueOutcome, StoreError> {
    let src = path_bytes(&j.source_path);
    let out_dir = path_bytes(&j.output_dir);
    let rgb = rgb_text(j.rgb);
    let size = j.size as i64; // checked by validate
    let ctx = || format!("enqueueing {}", j.source_path.display());

    if !j.force
        && let Some(writer) = result_written_at(conn, &src, &ctx).await?
    {
        return Ok(EnqueueOutcome::OwnResult(writer));
    }
    let existing = latest_version(conn, j, known, &ctx).await?;

    if let Some((id, state_s)) = existing {
        let id = JobId(id);
        let state = state_s.parse::<State>().map_err(|e| StoreError::Corrupt {
            job: id,
            detail: e.to_string(),
        })?;
        if !j.force {
            return Ok(EnqueueOutcome::AlreadyKnown(id, state));
        }
        if state == State::Queued {
            sqlx::query("UPDATE jobs SET force = 1, updated_at = ? WHERE id = ?")
                .bind(now)
                .bind(id.0)
                .execute(&mut *conn)
                .await
                .ctx(ctx())?;
            return Ok(EnqueueOutcome::AlreadyKnown(id, state));
        }
    }

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (source_path, source_root, output_dir, repair, rgb, size, mtime_ns, \
         state, force, created_at, updated_at, source_dev, source_ino) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&src)
    .bind(path_bytes(&j.source_root))
    .bind(&out_dir)
    .bind(j.repair.wire())
    .bind(&rgb)
    .bind(size)
    .bind(j.mtime_ns)
    .bind(j.force)
    .bind(now)
    .bind(now)
    // The u64s' bits, as SQLite integers are signed.
    .bind(j.file_id.map(|f| f.dev as i64))
    .bind(j.file_id.map(|f| f.ino as i64))
    .fetch_one(&mut *conn)
    .await
    .ctx(ctx())?;

    // The creation event is written by the `jobs_created` trigger (see migrations).
    Ok(EnqueueOutcome::Queued(JobId(id)))
}

/// The job that wrote its result at this path (`src`, as stored), if any.
async fn result_written_at(
    conn: &mut SqliteConnection,
    src: &[u8],
    ctx: &impl Fn() -> String,
) -> Result<Option<JobId>, StoreError> {
    let writer: Option<i64> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE output_path = ? LIMIT 1")
            .bind(src)
            .fetch_optional(&mut *conn)
            .await
            .ctx(ctx())?;
    Ok(writer.map(JobId))
}

/// The latest job for this file version that counts as "already known" under `known`: its
/// id and state as stored.
async fn latest_version(
    conn: &mut SqliteConnection,
    j: &NewJob,
    known: Known,
    ctx: &impl Fn() -> String,
) -> Result<Option<(i64, String)>, StoreError> {
    let src = path_bytes(&j.source_path);
    let size = j.size as i64; // checked by validate
    match known {
        Known::SameSettings => sqlx::query_as(
            "SELECT id, state FROM jobs WHERE source_path = ? AND size = ? AND mtime_ns = ? \
             AND repair = ? AND rgb IS ? AND output_dir = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(src)
        .bind(size)
        .bind(j.mtime_ns)
        .bind(j.repair.wire())
        .bind(rgb_text(j.rgb))
        .bind(path_bytes(&j.output_dir)),
        Known::AnySettings => sqlx::query_as(
            "SELECT id, state FROM jobs WHERE source_path = ? AND size = ? AND mtime_ns = ? \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(src)
        .bind(size)
        .bind(j.mtime_ns),
    }
    .fetch_optional(&mut *conn)
    .await
    .ctx(ctx())
}
