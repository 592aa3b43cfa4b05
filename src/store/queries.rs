//! Read-only queries (listings for the workers and the CLI) and credit observations.

use std::collections::BTreeMap;

use super::error::SqlContext;
use super::jobs::{JOB_COLUMNS, decode_event, decode_job, path_bytes};
use super::{Event, Job, JobId, Paid, SqliteStore, State, StoreError, now_ms};

impl SqliteStore {
    /// Runs a job SELECT (`{cols}` is replaced by every column) and decodes the rows.
    pub(crate) async fn select_jobs<'q>(
        &self,
        sql: &str,
        binds: impl IntoIterator<Item = Bind<'q>>,
        context: &str,
    ) -> Result<Vec<Job>, StoreError> {
        let sql = sql.replace("{cols}", JOB_COLUMNS);
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Str(s) => q.bind(s),
                Bind::OptStr(s) => q.bind(s),
                Bind::Bytes(b) => q.bind(b),
            };
        }
        let rows = q
            .fetch_all(&mut *self.reader("using the queue database").await?)
            .await
            .ctx(context)?;
        rows.iter().map(decode_job).collect()
    }

    /// A later job for the same file as `job`: at the same path (a newer version of it) or
    /// with the same device, inode, size and modification time under another name (the file
    /// or its folder was renamed: a rename keeps all four, while an inode reused by a new file
    /// after a delete rarely keeps the others). Skipped jobs do not count.
    pub async fn successor(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        let (dev, ino) = file_id_binds(job);
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id > ? AND state != 'skipped' \
                 AND (source_path = ? OR (source_dev = ? AND source_ino = ? \
                 AND size = ? AND mtime_ns = ?)) ORDER BY id LIMIT 1",
                [
                    Bind::Int(job.id.0),
                    Bind::Bytes(path_bytes(&job.source_path)),
                    Bind::Int(dev),
                    Bind::Int(ino),
                    Bind::Int(i64::try_from(job.size).unwrap_or(i64::MAX)),
                    Bind::Int(job.mtime_ns),
                ],
                &format!("looking for a later job for the file of job {}", job.id),
            )
            .await?;
        Ok(v.pop())
    }

    /// An earlier job for the same file as `job` (same device and inode, and the same content
    /// — so an inode reused by a new photo after a delete is not taken for it) under another
    /// name, that has sent it or has its result: the file, or its folder, was renamed after
    /// that job read it.
    pub async fn renamed_from(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        let (Some(_), Some(sha)) = (job.file_id, job.content_sha256.as_deref()) else {
            return Ok(None);
        };
        let (dev, ino) = file_id_binds(job);
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id < ? AND source_dev = ? AND source_ino = ? \
                 AND content_sha256 = ? AND source_path != ? AND repair = ? AND rgb IS ? \
                 AND state IN ('uploading', 'processing', 'downloading', 'done') \
                 ORDER BY id DESC LIMIT 1",
                [
                    Bind::Int(job.id.0),
                    Bind::Int(dev),
                    Bind::Int(ino),
                    Bind::Str(sha),
                    Bind::Bytes(path_bytes(&job.source_path)),
                    Bind::Str(job.repair.wire()),
                    Bind::OptStr(job.rgb.map(|c| c.to_string()).as_deref()),
                ],
                &format!("looking for an earlier job for the file of job {}", job.id),
            )
            .await?;
        Ok(v.pop())
    }

    pub async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id = ?",
                [Bind::Int(id.0)],
                &format!("reading job {id}"),
            )
            .await?;
        Ok(v.pop())
    }

    /// Jobs in `state`, oldest first.
    pub async fn jobs_in(&self, state: State) -> Result<Vec<Job>, StoreError> {
        self.all_jobs(Some(state)).await
    }

    /// Every paid job (`processing`, `downloading`), by id: all this process's.
    pub async fn paid_here(&self) -> Result<Vec<Paid>, StoreError> {
        let jobs = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE state IN ('processing', 'downloading') ORDER BY id",
                [],
                "listing the paid jobs",
            )
            .await?;
        Ok(jobs.into_iter().filter_map(Paid::of).collect())
    }

    /// Every job (or those in `filter`), by id.
    pub async fn all_jobs(&self, filter: Option<State>) -> Result<Vec<Job>, StoreError> {
        match filter {
            Some(s) => {
                self.select_jobs(
                    "SELECT {cols} FROM jobs WHERE state = ? ORDER BY id",
                    [Bind::Str(s.as_str())],
                    &format!("listing {s} jobs"),
                )
                .await
            }
            None => {
                self.select_jobs("SELECT {cols} FROM jobs ORDER BY id", [], "listing jobs")
                    .await
            }
        }
    }

    /// The queued job with the lowest id.
    pub async fn oldest_queued(&self) -> Result<Option<Job>, StoreError> {
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1",
                [],
                "finding the oldest queued job",
            )
            .await?;
        Ok(v.pop())
    }

    /// How many jobs are in each state; every state is present (0 when empty).
    pub async fn counts(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&mut *self.reader("using the queue database").await?)
                .await
                .ctx("counting jobs")?;
        let mut out: BTreeMap<State, u64> = State::ALL.into_iter().map(|s| (s, 0)).collect();
        for (s, n) in rows {
            let state = s.parse::<State>().map_err(|e| StoreError::Invalid {
                detail: format!("counting jobs: {e}"),
            })?;
            out.insert(state, n.max(0) as u64);
        }
        Ok(out)
    }

    /// The audit trail of one job, oldest first (the first row, `from: None`, is the enqueue).
    pub async fn events(&self, id: JobId) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, job_id, from_state, to_state, at, detail FROM events \
             WHERE job_id = ? ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx(format!("reading the events of job {id}"))?;
        rows.iter().map(decode_event).collect()
    }

    /// Records a credit count read from the vendor, stamped now.
    pub async fn record_credits(&self, credits_left: u64) -> Result<(), StoreError> {
        let n = i64::try_from(credits_left).unwrap_or(i64::MAX);
        let mut tx = self.begin_write("recording credits").await?;
        sqlx::query("INSERT INTO credit_observations (at, credits_left) VALUES (?, ?)")
            .bind(now_ms())
            .bind(n)
            .execute(&mut *tx)
            .await
            .ctx("recording credits")?;
        tx.commit().await.ctx("recording credits")
    }

    /// The latest credit observation as `(at_ms, credits_left)`.
    pub async fn latest_credits(&self) -> Result<Option<(i64, u64)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT at, credits_left FROM credit_observations ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("reading the latest credit count")?;
        Ok(row.map(|(at, n)| (at, n.max(0) as u64)))
    }

    /// Credits charged over the queue's life: the sum of every job's charges (a job counts
    /// once per charged upload, so re-uploads count again).
    pub async fn credits_spent(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(charges), 0) FROM jobs")
            .fetch_one(&mut *self.reader("using the queue database").await?)
            .await
            .ctx("counting spent credits")?;
        Ok(n.max(0) as u64)
    }
}

/// A bound parameter of a job SELECT.
pub(crate) enum Bind<'q> {
    Int(i64),
    Str(&'q str),
    OptStr(Option<&'q str>),
    Bytes(Vec<u8>),
}

/// A JSON array of `items` (each already a JSON value: a number, or a state name in quotes),
/// bound as ONE parameter and read with `json_each`, so the statement text (and SQLite's cached
/// plan) stays the same whatever the number of items.
pub(crate) fn json_array(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// A job's device and inode as stored (the u64s' bits). A job queued without them binds
/// `i64::MIN`, which no real device number is.
fn file_id_binds(job: &Job) -> (i64, i64) {
    job.file_id
        .map_or((i64::MIN, i64::MIN), |f| (f.dev as i64, f.ino as i64))
}
