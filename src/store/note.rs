//! Notes in a job's events trail that are not state changes: warnings a stage wants a person
//! to see in `hili jobs`/the audit trail (e.g. a result whose metadata could not be copied).

use super::error::SqlContext;
use super::{JobId, Store, StoreError, now_ms};

impl Store {
    /// Adds `detail` to job `id`'s events, from and to its current state.
    pub async fn note(&self, id: JobId, detail: &str) -> Result<(), StoreError> {
        let context = format!("noting an event of job {id}");
        let mut tx = self.begin_write(&context).await?;
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail) \
             SELECT id, state, state, ?, ? FROM jobs WHERE id = ?",
        )
        .bind(now_ms())
        .bind(detail)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .ctx(context.clone())?;
        tx.commit().await.ctx(context)
    }
}
