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
use super::{State, Store, StoreError};

/// Where a group of jobs reads and writes: the output root, the source root and the folder of
/// the source files. Every job in that group writes into the same output folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobFolders {
    pub output_dir: PathBuf,
    pub source_root: PathBuf,
    pub source_dir: PathBuf,
}

impl Store {
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
}
