//! Queries and non-transition updates the pipeline's scheduler needs: what is due next, the
//! twins of a photo, retry delays for downloads, a run's outcomes, and the index `hili add
//! --dry-run` compares against.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sqlx::Row;

use super::error::SqlContext;
use super::jobs::{JOB_COLUMNS, bytes_path, decode_job, path_bytes, rgb_text};
use super::queries::{Bind, json_array};
use super::sql::{Set, Val};
use super::{Identity, Job, JobId, Photo, SqliteStore, Stage, State, StoreError};
use crate::repair::{Repair, Rgb};

impl SqliteStore {
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

    /// Everything the scheduler needs for one look, in one trip to the database: the due
    /// jobs of each stage (at most its limit; 0 skips the stage), leaving out the jobs in
    /// `skip` (those the caller is already working on), and the earliest instant at which
    /// some job falls due. Polls come most overdue first, downloads oldest result
    /// first, uploads in queue order.
    pub async fn due_work(
        &self,
        now_ms: i64,
        limits: DueLimits,
        skip: &[JobId],
    ) -> Result<DueWork, StoreError> {
        let skip_json = json_array(skip.iter().map(|id| id.0.to_string()));
        let sql = due_work_sql();
        let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(limit(limits.polls))
            .bind(limit(limits.downloads))
            .bind(limit(limits.uploads))
            .bind(skip_json)
            .fetch_all(&mut *self.reader("finding due work").await?)
            .await
            .ctx("finding due work")?;
        let mut work = DueWork::default();
        for row in &rows {
            if row.columns().len() == 1 {
                work.next_due_ms = row.try_get("next_due").ctx("finding the next due job")?;
                continue;
            }
            let stage: i64 = row.try_get("stage").ctx("finding due work")?;
            work.take(stage, decode_job(row)?)?;
        }
        // A compound SELECT does not promise to keep its parts' order: restore it.
        work.sort();
        Ok(work)
    }

    /// How many jobs reached each final state (done, failed, held) since `since_ms`. Notes
    /// (rows whose state does not change, e.g. a source's disposition) are no outcome.
    pub async fn outcomes_since(&self, since_ms: i64) -> Result<BTreeMap<State, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT to_state, COUNT(DISTINCT job_id) FROM events \
             WHERE at >= ? AND to_state IN ('done', 'failed', 'held', 'skipped') \
             AND from_state IS NOT to_state GROUP BY to_state",
        )
        .bind(since_ms)
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("counting this run's outcomes")?;
        let mut out = BTreeMap::new();
        let context = "reading this run's outcomes";
        for r in rows {
            let s: String = r.try_get(0).ctx(context)?;
            let n: i64 = r.try_get(1).ctx(context)?;
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
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns, state FROM jobs \
             WHERE repair = ? AND rgb IS ? AND output_dir = ? ORDER BY id",
        )
        .bind(repair.wire())
        .bind(rgb_text(rgb))
        .bind(path_bytes(output_dir))
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("reading the queue's index of files")?;
        let mut index = HashMap::with_capacity(rows.len());
        let context = "reading the queue's index of files";
        for r in rows {
            let p: Vec<u8> = r.try_get(0).ctx(context)?;
            let size: i64 = r.try_get(1).ctx(context)?;
            let mtime: i64 = r.try_get(2).ctx(context)?;
            let state: String = r.try_get(3).ctx(context)?;
            if let Ok(state) = state.parse::<State>() {
                let path = bytes_path(p);
                index.insert((path, size as u64, mtime), state);
            }
        }
        Ok(index)
    }
}

/// Each stage walks an index in the order wanted and stops at its limit, never sorting
/// the backlog: polls walk jobs_poll (NULL, "at once", sorts first), uploads walk
/// jobs_state in id order (`+not_before` keeps SQLite from picking jobs_due, which would
/// make it read and sort every queued job on every look). Downloads are few. The MINs
/// are index lookups.
fn due_work_sql() -> String {
    format!(
        "SELECT * FROM (SELECT 0 AS stage, {JOB_COLUMNS} FROM jobs \
           WHERE state = 'processing' AND (next_poll_at IS NULL OR next_poll_at <= ?1) \
           AND id NOT IN (SELECT value FROM json_each(?5)) ORDER BY next_poll_at, id LIMIT ?2) \
         UNION ALL SELECT * FROM (SELECT 1 AS stage, {JOB_COLUMNS} FROM jobs \
           WHERE state = 'downloading' AND not_before <= ?1 \
           AND id NOT IN (SELECT value FROM json_each(?5)) ORDER BY COALESCE(processing_since, 0), id LIMIT ?3) \
         UNION ALL SELECT * FROM (SELECT 2 AS stage, {JOB_COLUMNS} FROM jobs \
           WHERE state = 'queued' AND +not_before <= ?1 \
           AND id NOT IN (SELECT value FROM json_each(?5)) ORDER BY id LIMIT ?4); \
         SELECT MIN(t) AS next_due FROM ( \
           SELECT MIN(next_poll_at) AS t FROM jobs WHERE state = 'processing' \
           UNION ALL SELECT 0 WHERE EXISTS \
             (SELECT 1 FROM jobs WHERE state = 'processing' AND next_poll_at IS NULL) \
           UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'queued' \
           UNION ALL SELECT MIN(not_before) FROM jobs WHERE state = 'downloading')"
    )
}

impl DueWork {
    /// Files a due job under its stage (0 poll, 1 download, 2 upload), as both backends'
    /// queries tag them; a job whose state does not fit its stage is corrupt data.
    pub(crate) fn take(&mut self, stage: i64, job: Job) -> Result<(), StoreError> {
        match (stage, &job.stage) {
            (0, Stage::Processing(photo)) => self.polls.push(Paid {
                photo: photo.clone(),
                job,
            }),
            (1, Stage::Downloading(photo)) => self.downloads.push(Paid {
                photo: photo.clone(),
                job,
            }),
            (2, Stage::Queued) => self.uploads.push(job),
            _ => {
                return Err(StoreError::Corrupt {
                    job: job.id,
                    detail: format!("due as stage {stage} while {}", job.state()),
                });
            }
        }
        Ok(())
    }

    /// Each stage's order: polls most overdue first, downloads oldest result first, uploads in
    /// queue order.
    pub(crate) fn sort(&mut self) {
        self.polls
            .sort_by_key(|p| (p.job.next_poll_at_ms.unwrap_or(0), p.job.id));
        self.downloads
            .sort_by_key(|p| (p.job.processing_since_ms.unwrap_or(0), p.job.id));
        self.uploads.sort_by_key(|j| j.id);
    }
}

/// How many due jobs of each stage [`SqliteStore::due_work`] may return.
#[derive(Debug, Clone, Copy, Default)]
pub struct DueLimits {
    pub polls: usize,
    pub downloads: usize,
    pub uploads: usize,
}

/// A job the service has a photo of (in `processing` or `downloading`), as the poll and download
/// stages take it: the photo is part of the type, so neither stage checks for it.
#[derive(Debug, Clone)]
pub struct Paid {
    pub job: Job,
    pub photo: Photo,
}

impl Paid {
    /// The job with its photo, when it is in `processing` or `downloading`.
    pub fn of(job: Job) -> Option<Paid> {
        match &job.stage {
            Stage::Processing(photo) | Stage::Downloading(photo) => Some(Paid {
                photo: photo.clone(),
                job,
            }),
            _ => None,
        }
    }
}

/// One look at what is due; see [`SqliteStore::due_work`].
#[derive(Debug, Default)]
pub struct DueWork {
    pub polls: Vec<Paid>,
    pub downloads: Vec<Paid>,
    pub uploads: Vec<Job>,
    /// The earliest `next_poll_at`/`not_before` of any waiting job; may be in the past.
    pub next_due_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduler looks at the store after every step of every job: with a backlog of
    /// thousands, reading and sorting it each time made the look cost more than the work.
    #[tokio::test]
    async fn due_work_walks_indexes_instead_of_sorting_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("open");
        let mut conn = store.reader("test").await.expect("conn");
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {}", due_work_sql()))
            .bind(0i64)
            .bind(1i64)
            .bind(1i64)
            .bind(1i64)
            .bind("[]")
            .fetch_all(&mut *conn)
            .await
            .expect("plan")
            .iter()
            // The batch's second statement (the next due instant) runs as a plain query.
            .filter_map(|r| r.try_get::<String, _>("detail").ok())
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("USING INDEX jobs_poll (state=?)"), "{plan}");
        assert!(plan.contains("USING INDEX jobs_state (state=?)"), "{plan}");
        // Only the downloads (a handful at any time) are sorted.
        assert_eq!(plan.matches("TEMP B-TREE").count(), 1, "{plan}");
    }
}
