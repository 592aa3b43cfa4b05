//! What `hili report` reads besides the jobs: when the latest `hili run` (or `hili demo`)
//! started, kept in `meta` (no migration: one key), and every note of a job's events trail
//! (the rows that change no state: how its input was prepared, what became of its source,
//! warnings of a stage), so a report shows them beside the photo.

use std::collections::HashMap;

use sqlx::Row;

use super::error::SqlContext;
use super::{JobId, SqliteStore, StoreError, now_ms};

/// The `meta` key holding the start of the latest run, in unix milliseconds.
const RUN_STARTED: &str = "run_started_at";

impl SqliteStore {
    /// Records that a run starts now (before its scan of watch folders), so `hili report
    /// --last-run` can list the jobs it touched. Returns the instant recorded.
    pub async fn mark_run_started(&self) -> Result<i64, StoreError> {
        let context = "recording the start of this run";
        let at = now_ms();
        let mut tx = self.begin_write(context).await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(RUN_STARTED)
        .bind(at.to_string())
        .execute(&mut *tx)
        .await
        .ctx(context)?;
        tx.commit().await.ctx(context)?;
        Ok(at)
    }

    /// When the latest run started (unix ms); `None` when no run was recorded in this queue.
    pub async fn last_run_started(&self) -> Result<Option<i64>, StoreError> {
        let context = "reading when the last run started";
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(RUN_STARTED)
            .fetch_optional(&mut *self.reader(context).await?)
            .await
            .ctx(context)?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// Every note of every job (events that left its state as it was), oldest first.
    pub async fn job_notes(&self) -> Result<HashMap<JobId, Vec<String>>, StoreError> {
        let context = "reading the notes of the jobs";
        let rows = sqlx::query(
            "SELECT job_id, detail FROM events \
             WHERE from_state = to_state AND detail IS NOT NULL ORDER BY id",
        )
        .fetch_all(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        let mut out: HashMap<JobId, Vec<String>> = HashMap::new();
        for r in rows {
            let id: i64 = r.try_get(0).ctx(context)?;
            out.entry(JobId(id))
                .or_default()
                .push(r.try_get(1).ctx(context)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EnqueueOutcome, NewJob};

    #[tokio::test]
    async fn the_last_run_start_and_the_notes_of_each_job_are_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("open");
        assert_eq!(store.last_run_started().await.unwrap(), None);
        let first = store.mark_run_started().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = store.mark_run_started().await.unwrap();
        assert!(second > first);
        assert_eq!(store.last_run_started().await.unwrap(), Some(second));

        let job = NewJob::sample(&dir.path().join("in"), "a.jpg", &dir.path().join("out"));
        let [EnqueueOutcome::Queued(id)] = store.enqueue_many(vec![job]).await.unwrap()[..] else {
            panic!("not queued");
        };
        store.note_input(id, "converted BMP").await.unwrap();
        store.note(id, "metadata: not copied").await.unwrap();
        let notes = store.job_notes().await.unwrap();
        // The enqueue row is a state change (from nothing), not a note.
        assert_eq!(
            notes.get(&id).unwrap(),
            &["input: converted BMP", "metadata: not copied"]
        );
        assert_eq!(notes.len(), 1);
    }
}
