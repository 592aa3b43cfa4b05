//! What happens to source files after their job: the jobs whose source still awaits its
//! disposition (kept, moved, deleted, moved aside on failure), and marking it carried out.

use std::path::PathBuf;

use super::error::SqlContext;
use super::jobs::{JOB_COLUMNS, decode_job, path_bytes};
use super::{Job, JobId, Store, StoreError};

impl Store {
    /// Done, failed or held jobs found under one of `roots` whose source has not been disposed
    /// of yet, oldest first, at most `limit`.
    pub async fn undisposed(
        &self,
        roots: &[PathBuf],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; roots.len()].join(", ");
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE disposed = 0 \
             AND state IN ('done', 'failed', 'held') AND source_root IN ({marks}) \
             ORDER BY id LIMIT ?"
        );
        let mut q = sqlx::query(&sql);
        for r in roots {
            q = q.bind(path_bytes(r));
        }
        let rows = q
            .bind(limit as i64)
            .fetch_all(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("finding sources to move or delete")?;
        rows.iter().map(decode_job).collect()
    }

    /// Records that the job's source has been dealt with.
    pub async fn mark_disposed(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET disposed = 1 WHERE id = ?")
            .bind(id.0)
            .execute(&mut *self.conn("using the queue database").await?)
            .await
            .ctx(format!("recording the disposition of job {id}'s source"))?;
        Ok(())
    }
}
