//! Facts about the queue as a whole: its random id (made by migration 0003, see
//! `migrations/0003_meta.sql`), how many jobs it holds and where they write, so `hili run` can
//! tell a lost or replaced database from a genuinely new queue.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use sqlx::Row;

use super::error::SqlContext;
use super::jobs::bytes_path;
use super::queries::json_array;
use super::{SqliteStore, State, StoreError, now_ms};

/// Where a group of jobs reads and writes: the output root, the source root and the folder of
/// the source files. Every job in that group writes into the same output folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobFolders {
    pub output_dir: PathBuf,
    pub source_root: PathBuf,
    pub source_dir: PathBuf,
}

impl SqliteStore {
    /// This queue's random id (32 hex digits), stable for the life of the database file.
    pub async fn queue_id(&self) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'queue_id'")
            .fetch_one(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("reading the queue id")
    }

    /// How many jobs the queue holds, in any state.
    pub async fn job_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("counting jobs")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every distinct output directory jobs were queued with.
    pub async fn output_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT DISTINCT output_dir FROM jobs")
            .fetch_all(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("listing output directories")?;
        Ok(rows.into_iter().map(bytes_path).collect())
    }

    /// The distinct [`JobFolders`] of the jobs in `states`. Rows are read one at a time and
    /// only their three paths, so a queue of 100,000 jobs in a few hundred folders costs a
    /// few hundred entries of memory, not 100,000 jobs.
    pub async fn job_folders(&self, states: &[State]) -> Result<BTreeSet<JobFolders>, StoreError> {
        let list = json_array(states.iter().map(|s| format!("\"{}\"", s.as_str())));
        let mut conn = self.reader("using the queue database").await?;
        let mut rows = sqlx::query(
            "SELECT output_dir, source_root, source_path FROM jobs \
             WHERE state IN (SELECT value FROM json_each(?))",
        )
        .bind(list)
        .fetch(&mut *conn);
        let context = "listing the jobs' folders";
        let bytes = |row: &sqlx::sqlite::SqliteRow, i| row.try_get::<Vec<u8>, _>(i).ctx(context);
        // Rows of a folder already seen are skipped by their bytes (cheaper than comparing
        // paths component by component); NUL cannot occur in a path, so it separates them.
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut folders = BTreeSet::new();
        while let Some(row) = rows.try_next().await.ctx(context)? {
            let source = bytes(&row, 2)?;
            let source_dir = Path::new(OsStr::from_bytes(&source))
                .parent()
                .unwrap_or(Path::new(""));
            let (output_dir, source_root) = (bytes(&row, 0)?, bytes(&row, 1)?);
            let key = [&output_dir, &source_root, source_dir.as_os_str().as_bytes()].join(&0u8);
            if seen.insert(key) {
                folders.insert(JobFolders {
                    output_dir: bytes_path(output_dir),
                    source_root: bytes_path(source_root),
                    source_dir: source_dir.to_path_buf(),
                });
            }
        }
        Ok(folders)
    }

    /// Records why uploads are paused now (`None`: they are not), so `hili status` in another
    /// process can say it. Written by the running `hili run` when the pause changes.
    pub async fn set_pause_note(&self, note: Option<&str>) -> Result<(), StoreError> {
        let context = "recording why uploads are paused";
        let mut tx = self.begin_write(context).await?;
        match note {
            Some(text) => {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('pause_note', ?), ('pause_note_at', ?) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(text)
                .bind(now_ms().to_string())
                .execute(&mut *tx)
                .await
                .ctx(context)?;
            }
            None => {
                sqlx::query("DELETE FROM meta WHERE key IN ('pause_note', 'pause_note_at')")
                    .execute(&mut *tx)
                    .await
                    .ctx(context)?;
            }
        }
        tx.commit().await.ctx(context)
    }

    /// Why uploads were paused by the running `hili run`, and since when (unix ms).
    pub async fn pause_note(&self) -> Result<Option<(i64, String)>, StoreError> {
        let context = "reading why uploads are paused";
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM meta WHERE key IN ('pause_note', 'pause_note_at')",
        )
        .fetch_all(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1.clone());
        Ok(get("pause_note").map(|text| {
            let at = get("pause_note_at")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            (at, text)
        }))
    }

    /// Results paid for and not yet stored (jobs processing or downloading), and the earliest
    /// upload among them (unix ms): the service deletes a result one hour after it is
    /// processed, so the first of them expires no earlier than an hour after that.
    pub async fn paid_waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        let context = "counting results waiting to be downloaded";
        let (n, first): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(processing_since) FROM jobs \
             WHERE state IN ('processing', 'downloading')",
        )
        .fetch_one(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        Ok((u64::try_from(n).unwrap_or(0), first))
    }
}
