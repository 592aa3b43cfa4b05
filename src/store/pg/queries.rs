//! Read-only listings of the shared queue's jobs and events for the workers and the CLI (the
//! PostgreSQL side of `store/queries.rs`, with the job reads of `store/schedule.rs`), and the
//! job SELECT helper ([`fetch_jobs`], [`PgStore::select_jobs`]) the other PostgreSQL files use.
//! Same statements, same order as on SQLite; every listing is the whole shared queue, every
//! node's jobs included.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use crate::repair::{Repair, Rgb};
use crate::store::error::SqlContext;
use crate::store::jobs::{JOB_COLUMNS, bytes_path, decode_event, decode_job, path_bytes, rgb_text};
use crate::store::{Event, Identity, Job, JobId, Paid, State, StoreError, now_ms};

/// A bound parameter of a PostgreSQL job SELECT; lists bind as one array for `= ANY($n)`.
/// (Some variants serve only the other PostgreSQL files' statements, hence the allow.)
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(super) enum PgBind<'q> {
    Int(i64),
    OptInt(Option<i64>),
    Str(&'q str),
    OptStr(Option<&'q str>),
    Bytes(Vec<u8>),
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

/// Runs a job SELECT (`{cols}` is replaced by every column) on `exec` — the pool, or a
/// transaction (`&mut *tx`) when the read must see its own writes or lock (`FOR UPDATE`) —
/// and decodes the rows.
pub(super) async fn fetch_jobs<'e, E>(
    exec: E,
    sql: &str,
    binds: impl IntoIterator<Item = PgBind<'_>>,
    context: &str,
) -> Result<Vec<Job>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = sql.replace("{cols}", JOB_COLUMNS);
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = match b {
            PgBind::Int(i) => q.bind(i),
            PgBind::OptInt(i) => q.bind(i),
            PgBind::Str(s) => q.bind(s),
            PgBind::OptStr(s) => q.bind(s),
            PgBind::Bytes(b) => q.bind(b),
            PgBind::Ints(v) => q.bind(v),
            PgBind::Strs(v) => q.bind(v),
        };
    }
    let rows = q.fetch_all(exec).await.ctx(context)?;
    rows.iter().map(decode_job).collect()
}

/// Counts by state from `(state, count)` rows into `out`; a row whose first column names no
/// state goes to `other` (the `'active'` row of a run's tally).
pub(super) fn count_states(
    rows: &[PgRow],
    out: &mut BTreeMap<State, u64>,
    mut other: impl FnMut(u64),
    context: &str,
) -> Result<(), StoreError> {
    for r in rows {
        let s: String = r.try_get(0).ctx(context)?;
        let n = u64::try_from(r.try_get::<i64, _>(1).ctx(context)?).unwrap_or(0);
        match s.parse::<State>() {
            Ok(state) => {
                out.insert(state, n);
            }
            Err(_) => other(n),
        }
    }
    Ok(())
}

/// A job's device and inode as stored (the u64s' bits); `i64::MIN`, which no real device
/// number is, for a job queued without them (the twin of the SQLite side's private helper).
fn file_id_binds(job: &Job) -> (i64, i64) {
    job.file_id
        .map_or((i64::MIN, i64::MIN), |f| (f.dev as i64, f.ino as i64))
}

impl PgStore {
    /// [`fetch_jobs`] on the pool.
    pub(super) async fn select_jobs(
        &self,
        sql: &str,
        binds: impl IntoIterator<Item = PgBind<'_>>,
        context: &str,
    ) -> Result<Vec<Job>, StoreError> {
        fetch_jobs(self.pool(), sql, binds, context).await
    }

    pub async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id = $1",
                [PgBind::Int(id.0)],
                &format!("reading job {id}"),
            )
            .await?;
        Ok(v.pop())
    }

    /// Jobs in `state`, oldest first.
    pub async fn jobs_in(&self, state: State) -> Result<Vec<Job>, StoreError> {
        self.all_jobs(Some(state)).await
    }

    /// The paid jobs (`processing`, `downloading`) this node works, by id: those leased to
    /// it, and its own that no other node holds (see [`JobStore::paid_here`]).
    ///
    /// [`JobStore::paid_here`]: crate::store::JobStore::paid_here
    pub async fn paid_here(&self) -> Result<Vec<Paid>, StoreError> {
        let node = self.node().as_str();
        let jobs = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE state IN ('processing', 'downloading') \
                 AND (lease_node = $1 OR (node = $1 AND (lease_node IS NULL OR lease_until < $2))) \
                 ORDER BY id",
                [PgBind::Str(node), PgBind::Int(now_ms())],
                "listing this node's paid jobs",
            )
            .await?;
        Ok(jobs.into_iter().filter_map(Paid::of).collect())
    }

    /// Every job (or those in `filter`), by id.
    pub async fn all_jobs(&self, filter: Option<State>) -> Result<Vec<Job>, StoreError> {
        match filter {
            Some(s) => {
                self.select_jobs(
                    "SELECT {cols} FROM jobs WHERE state = $1 ORDER BY id",
                    [PgBind::Str(s.as_str())],
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
        let context = "counting jobs";
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(self.pool())
            .await
            .ctx(context)?;
        let mut out: BTreeMap<State, u64> = State::ALL.into_iter().map(|s| (s, 0)).collect();
        let mut unknown = None;
        count_states(&rows, &mut out, |n| unknown = Some(n), context)?;
        // The schema's CHECK allows only the known states; say so if that ever breaks.
        match unknown {
            Some(_) => Err(StoreError::Invalid {
                detail: "counting jobs: a job is in a state hili does not know".into(),
            }),
            None => Ok(out),
        }
    }

    /// How many jobs the queue holds, in any state.
    pub async fn job_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(self.pool())
            .await
            .ctx("counting jobs")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The audit trail of one job, oldest first (the first row, `from: None`, is the enqueue).
    pub async fn events(&self, id: JobId) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, job_id, from_state, to_state, at, detail FROM events \
             WHERE job_id = $1 ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(self.pool())
        .await
        .ctx(format!("reading the events of job {id}"))?;
        rows.iter().map(decode_event).collect()
    }

    /// Every other job with the same content, repair type and colour, by id.
    pub async fn identity_twins(
        &self,
        ident: &Identity,
        excluding: JobId,
    ) -> Result<Vec<Job>, StoreError> {
        let rgb = rgb_text(ident.rgb);
        self.select_jobs(
            "SELECT {cols} FROM jobs WHERE content_sha256 = $1 AND repair = $2 \
             AND rgb IS NOT DISTINCT FROM $3 AND id != $4 ORDER BY id",
            [
                PgBind::Str(&ident.content_sha256),
                PgBind::Str(ident.repair.wire()),
                PgBind::OptStr(rgb.as_deref()),
                PgBind::Int(excluding.0),
            ],
            &format!("looking for jobs identical to job {excluding}"),
        )
        .await
    }

    /// A later job for the same file as `job`: at the same path (a newer version of it) or
    /// with the same device, inode, size and modification time under another name (the file
    /// or its folder was renamed). Skipped jobs do not count.
    pub async fn successor(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        let (dev, ino) = file_id_binds(job);
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id > $1 AND state != 'skipped' \
                 AND (source_path = $2 OR (source_dev = $3 AND source_ino = $4 \
                 AND size = $5 AND mtime_ns = $6)) ORDER BY id LIMIT 1",
                [
                    PgBind::Int(job.id.0),
                    PgBind::Bytes(path_bytes(&job.source_path)),
                    PgBind::Int(dev),
                    PgBind::Int(ino),
                    PgBind::Int(i64::try_from(job.size).unwrap_or(i64::MAX)),
                    PgBind::Int(job.mtime_ns),
                ],
                &format!("looking for a later job for the file of job {}", job.id),
            )
            .await?;
        Ok(v.pop())
    }

    /// An earlier job for the same file as `job` (same device and inode, and the same content)
    /// under another name, that has sent it or has its result: the file, or its folder, was
    /// renamed after that job read it.
    pub async fn renamed_from(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        let (Some(_), Some(sha)) = (job.file_id, job.content_sha256.as_deref()) else {
            return Ok(None);
        };
        let (dev, ino) = file_id_binds(job);
        let rgb = rgb_text(job.rgb);
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE id < $1 AND source_dev = $2 AND source_ino = $3 \
                 AND content_sha256 = $4 AND source_path != $5 AND repair = $6 \
                 AND rgb IS NOT DISTINCT FROM $7 \
                 AND state IN ('uploading', 'processing', 'downloading', 'done') \
                 ORDER BY id DESC LIMIT 1",
                [
                    PgBind::Int(job.id.0),
                    PgBind::Int(dev),
                    PgBind::Int(ino),
                    PgBind::Str(sha),
                    PgBind::Bytes(path_bytes(&job.source_path)),
                    PgBind::Str(job.repair.wire()),
                    PgBind::OptStr(rgb.as_deref()),
                ],
                &format!("looking for an earlier job for the file of job {}", job.id),
            )
            .await?;
        Ok(v.pop())
    }

    /// (path, size, mtime) → state of the latest job with these settings, for `hili add
    /// --dry-run` to tell new files from known ones in one pass.
    pub async fn source_index(
        &self,
        repair: Repair,
        rgb: Option<Rgb>,
        output_dir: &Path,
    ) -> Result<HashMap<(PathBuf, u64, i64), State>, StoreError> {
        let context = "reading the queue's index of files";
        // By id, so the latest job of a file is the one left in the map.
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns, state FROM jobs \
             WHERE repair = $1 AND rgb IS NOT DISTINCT FROM $2 AND output_dir = $3 ORDER BY id",
        )
        .bind(repair.wire())
        .bind(rgb_text(rgb))
        .bind(path_bytes(output_dir))
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        let mut index = HashMap::with_capacity(rows.len());
        for r in rows {
            let p: Vec<u8> = r.try_get(0).ctx(context)?;
            let size: i64 = r.try_get(1).ctx(context)?;
            let mtime: i64 = r.try_get(2).ctx(context)?;
            let state: String = r.try_get(3).ctx(context)?;
            if let Ok(state) = state.parse::<State>() {
                index.insert((bytes_path(p), size as u64, mtime), state);
            }
        }
        Ok(index)
    }
}

/// Inserts a queued job for `path` under `/in`, writing to `/out`, as the enqueue would (the
/// schema's trigger writes its first event), then sets `sets` on it directly (e.g.
/// `"state = 'done', mdf = 'm1'"`; no event). For the tests of the PostgreSQL files.
#[cfg(test)]
pub(super) async fn insert_job(store: &PgStore, path: &str, sets: &str) -> JobId {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (source_path, source_root, output_dir, repair, size, mtime_ns, state, \
         created_at, updated_at) VALUES ($1, $2, $3, 'sr', 10, 1, 'queued', 1, 1) RETURNING id",
    )
    .bind(path_bytes(&Path::new("/in").join(path)))
    .bind(path_bytes(Path::new("/in")))
    .bind(path_bytes(Path::new("/out")))
    .fetch_one(store.pool())
    .await
    .expect("insert a job");
    if !sets.is_empty() {
        store
            .execute(&format!("UPDATE jobs SET {sets} WHERE id = {id}"))
            .await
            .expect("set the job's columns");
    }
    JobId(id)
}

#[cfg(test)]
#[path = "queries_tests.rs"]
mod tests;
