//! What one run did, counted from the events table by event id rather than by time: the id is
//! the table's primary key, so "since the run began" is a range read however long the audit
//! trail has grown, cheap enough for a progress display to ask twice a second.

use std::collections::BTreeMap;

use sqlx::Row;

use super::error::SqlContext;
use super::{SqliteStore, State, StoreError};

/// A run's jobs: those that ended since it began, and those still to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTally {
    /// Jobs that reached each final state.
    pub ended: BTreeMap<State, u64>,
    /// Jobs queued, uploading, processing or downloading.
    pub active: u64,
}

impl SqliteStore {
    /// The newest event's id (0 for an empty table): a run takes it as its starting mark.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("reading the newest event")?;
        Ok(id.unwrap_or(0))
    }

    /// This run so far: the jobs that reached each final state (done, failed, held, skipped)
    /// in events after `after_event`, and the jobs still queued or in flight. One statement,
    /// so both come from the same moment: a job that ends is never counted twice, nor lost.
    /// Notes (event rows that change no state) are no outcome.
    pub async fn run_tally(&self, after_event: i64) -> Result<RunTally, StoreError> {
        let rows = sqlx::query(
            "SELECT to_state, COUNT(DISTINCT job_id) FROM events \
             WHERE id > ? AND to_state IN ('done', 'failed', 'held', 'skipped') \
             AND from_state IS NOT to_state GROUP BY to_state \
             UNION ALL SELECT 'active', COUNT(*) FROM jobs \
             WHERE state IN ('queued', 'uploading', 'processing', 'downloading')",
        )
        .bind(after_event)
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("counting this run's jobs")?;
        let mut tally = RunTally::default();
        for r in rows {
            let s: String = r.try_get(0).ctx("reading this run's jobs")?;
            let n = r
                .try_get::<i64, _>(1)
                .ctx("reading this run's jobs")?
                .max(0) as u64;
            match s.parse::<State>() {
                Ok(state) => {
                    tally.ended.insert(state, n);
                }
                Err(_) => tally.active = n,
            }
        }
        Ok(tally)
    }
}
