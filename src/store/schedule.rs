//! Queries and non-transition updates the pipeline's scheduler needs: what is due next, the
//! twins of a photo, retry delays for downloads, a run's outcomes, and the index `hili add
//! --dry-run` compares against.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sqlx::Row;

use super::error::SqlContext;
use super::jobs::{path_bytes, rgb_text};
use super::queries::Bind;
use super::transitions::{Set, Val};
use super::{Identity, Job, JobId, State, Store, StoreError};
use crate::repair::{Repair, Rgb};

impl Store {
    /// Every other job with this identity, in any state, by id.
    pub async fn identity_twins(
        &self,
        ident: &Identity,
        excluding: JobId,
    ) -> Result<Vec<Job>, StoreError> {
        let rgb = rgb_text(ident.rgb);
        self.select_jobs(
            "SELECT {cols} FROM jobs WHERE content_sha256 = ? AND repair = ? AND rgb IS ? \
             AND id != ? ORDER BY id",
            [
                Bind::Str(&ident.content_sha256),
                Bind::Str(ident.repair.wire()),
                Bind::OptStr(rgb.as_deref()),
                Bind::Int(excluding.0),
            ],
            &format!("looking for jobs identical to job {excluding}"),
        )
        .await
    }

    /// Delays the next attempt at a queued or downloading job until `at_ms`. Not a transition:
    /// no event.
    pub async fn defer(&self, id: JobId, state: State, at_ms: i64) -> Result<(), StoreError> {
        if !matches!(state, State::Queued | State::Downloading) {
            return Err(StoreError::Invalid {
                detail: format!("job {id}: only queued or downloading jobs can be deferred"),
            });
        }
        let sets = [Set::Bind("not_before", Val::Int(Some(at_ms)))];
        let context = format!("deferring job {id}");
        self.update_in(id, state, &sets, &context).await
    }

    /// Processing jobs due for a poll, most overdue first, at most `limit`.
    pub async fn due_polls_limited(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.select_jobs(
            "SELECT {cols} FROM jobs WHERE state = 'processing' \
             AND (next_poll_at IS NULL OR next_poll_at <= ?) \
             ORDER BY COALESCE(next_poll_at, 0), id LIMIT ?",
            [Bind::Int(now_ms), Bind::Int(limit as i64)],
            "finding jobs to poll",
        )
        .await
    }

    /// Downloading jobs whose retry delay has passed, oldest result first, at most `limit`.
    pub async fn due_downloads(&self, now_ms: i64, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.select_jobs(
            "SELECT {cols} FROM jobs WHERE state = 'downloading' AND not_before <= ? \
             ORDER BY COALESCE(processing_since, 0), id LIMIT ?",
            [Bind::Int(now_ms), Bind::Int(limit as i64)],
            "finding results to download",
        )
        .await
    }

    /// The earliest future instant at which some job falls due (a poll, a retry, a backoff).
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        // One MIN per state, each answered from an index (jobs_due, jobs_poll).
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(next_poll_at) AS t FROM jobs WHERE state = 'processing' \
               UNION ALL SELECT 0 WHERE EXISTS \
                 (SELECT 1 FROM jobs WHERE state = 'processing' AND next_poll_at IS NULL) \
               UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'queued' \
               UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'downloading')",
        )
        .fetch_one(&mut *self.conn("using the queue database").await?)
        .await
        .ctx("finding the next due job")?;
        Ok(at)
    }

    /// How many jobs reached each final state (done, failed, held) since `since_ms`.
    pub async fn outcomes_since(&self, since_ms: i64) -> Result<BTreeMap<State, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT to_state, COUNT(DISTINCT job_id) FROM events \
             WHERE at >= ? AND to_state IN ('done', 'failed', 'held') GROUP BY to_state",
        )
        .bind(since_ms)
        .fetch_all(&mut *self.conn("using the queue database").await?)
        .await
        .ctx("counting this run's outcomes")?;
        let mut out = BTreeMap::new();
        for r in rows {
            let s: String = r.get(0);
            let n: i64 = r.get(1);
            if let Ok(state) = s.parse::<State>() {
                out.insert(state, n as u64);
            }
        }
        Ok(out)
    }

    /// (path, size, mtime) → state of the latest job with these settings, for `hili add
    /// --dry-run` to tell new files from known ones in one pass.
    pub async fn source_index(
        &self,
        repair: Repair,
        rgb: Option<Rgb>,
        output_dir: &Path,
    ) -> Result<HashMap<(PathBuf, u64, i64), State>, StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns, state FROM jobs \
             WHERE repair = ? AND rgb IS ? AND output_dir = ? ORDER BY id",
        )
        .bind(repair.wire())
        .bind(rgb_text(rgb))
        .bind(path_bytes(output_dir))
        .fetch_all(&mut *self.conn("using the queue database").await?)
        .await
        .ctx("reading the queue's index of files")?;
        let mut index = HashMap::with_capacity(rows.len());
        for r in rows {
            let p: Vec<u8> = r.get(0);
            let size: i64 = r.get(1);
            let mtime: i64 = r.get(2);
            let state: String = r.get(3);
            if let Ok(state) = state.parse::<State>() {
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(&p));
                index.insert((path, size as u64, mtime), state);
            }
        }
        Ok(index)
    }
}
