//! Notes in a job's events trail that are not state changes: warnings a stage wants a person
//! to see in `hili jobs`/the audit trail (e.g. a result whose metadata could not be copied).

use super::error::SqlContext;
use super::{JobId, SqliteStore, StoreError, now_ms};

impl SqliteStore {
    /// Adds `detail` to job `id`'s events, from and to its current state, once: the same note
    /// again (a retry, the same step redone after a crash) adds no second row.
    pub async fn note(&self, id: JobId, detail: &str) -> Result<(), StoreError> {
        let context = format!("noting an event of job {id}");
        let mut tx = self.begin_write(&context).await?;
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
             SELECT id, state, state, ?, ?, ? FROM jobs WHERE id = ? AND NOT EXISTS \
             (SELECT 1 FROM events WHERE job_id = ? AND detail = ?)",
        )
        .bind(now_ms())
        .bind(detail)
        .bind(super::AGENT)
        .bind(id.0)
        .bind(id.0)
        .bind(detail)
        .execute(&mut *tx)
        .await
        .ctx(context.clone())?;
        tx.commit().await.ctx(context)
    }
}
