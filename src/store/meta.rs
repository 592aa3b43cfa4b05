//! Facts about the queue as a whole: its random id (made by migration 0003, see
//! `migrations/0003_meta.sql`), how many jobs it holds and where they write, so `hili run` can
//! tell a lost or replaced database from a genuinely new queue.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::error::SqlContext;
use super::{Store, StoreError};

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
        Ok(rows
            .into_iter()
            .map(|b| PathBuf::from(OsStr::from_bytes(&b)))
            .collect())
    }
}
