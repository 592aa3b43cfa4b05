//! What happens to source files after their job: the jobs whose source still awaits its
//! disposition (kept, moved, deleted, moved aside on failure), the durable record of a move
//! in progress (`source_moves`, so a crash mid-move is completed or undone at start-up), and
//! marking the disposition carried out, with a note in the job's events saying what was done.

use std::path::{Path, PathBuf};

use super::error::SqlContext;
use super::jobs::{Columns, JOB_COLUMNS, bytes_path, decode_job, path_bytes};
use super::{Job, JobId, SqliteStore, StoreError, now_ms};
use crate::media::FileId;
use crate::media::mover::MovePlan;

impl SqliteStore {
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

    /// A later job for the same source path whose own disposition is still to come: the file
    /// at that path is its business now (a new version, or the same one queued again).
    pub async fn later_job_at(&self, id: JobId, path: &Path) -> Result<Option<JobId>, StoreError> {
        let later: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE source_path = ? AND id > ? AND disposed = 0 \
             ORDER BY id LIMIT 1",
        )
        .bind(path_bytes(path))
        .bind(id.0)
        .fetch_optional(&mut *self.reader("using the queue database").await?)
        .await
        .ctx(format!("looking for a later job at job {id}'s source"))?;
        Ok(later.map(JobId))
    }

    /// Records that the job's source has been dealt with; `note` (what was done, or why the
    /// file was left alone) goes into the job's events. Guarded: a second call does nothing.
    pub async fn mark_disposed(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        let context = format!("recording the disposition of job {id}'s source");
        let mut tx = self.begin_write(&context).await?;
        mark(&mut tx, id, note, &context).await?;
        tx.commit().await.ctx(context)
    }

    /// Records, before any file is touched, a move of job `id`'s source (see `media::mover`).
    pub async fn record_move(&self, id: JobId, plan: &MovePlan) -> Result<(), StoreError> {
        let context = format!("recording the move of job {id}'s source");
        let mut tx = self.begin_write(&context).await?;
        sqlx::query(
            "INSERT INTO source_moves (job_id, source, dest, temp, source_dev, source_ino, \
             size, mtime_ns, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.0)
        .bind(path_bytes(&plan.source))
        .bind(path_bytes(&plan.dest))
        .bind(path_bytes(&plan.temp))
        // The u64s' bits, as in `jobs.source_dev`.
        .bind(plan.source_id.dev as i64)
        .bind(plan.source_id.ino as i64)
        .bind(i64::try_from(plan.size).unwrap_or(i64::MAX))
        .bind(plan.mtime_ns)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .ctx(context.clone())?;
        tx.commit().await.ctx(context)
    }

    /// The recorded move of job `id`'s source that is not settled yet, if any.
    pub async fn pending_move(&self, id: JobId) -> Result<Option<MovePlan>, StoreError> {
        let rows = self.moves(Some(id)).await?;
        Ok(rows.into_iter().next().map(|(_, p)| p))
    }

    /// Every recorded move not settled yet (left by a crash), oldest job first.
    pub async fn pending_moves(&self) -> Result<Vec<(JobId, MovePlan)>, StoreError> {
        self.moves(None).await
    }

    async fn moves(&self, id: Option<JobId>) -> Result<Vec<(JobId, MovePlan)>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, source, dest, temp, source_dev, source_ino, size, mtime_ns \
             FROM source_moves WHERE ?1 IS NULL OR job_id = ?1 ORDER BY job_id",
        )
        .bind(id.map(|i| i.0))
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("reading moves in progress")?;
        rows.iter().map(decode_move).collect()
    }

    /// Forgets a move that was undone (nothing of it is left; it is planned again).
    pub async fn clear_move(&self, id: JobId) -> Result<(), StoreError> {
        let context = format!("forgetting the undone move of job {id}'s source");
        let mut tx = self.begin_write(&context).await?;
        forget_move(&mut tx, id, &context).await?;
        tx.commit().await.ctx(context)
    }

    /// A move carried out: its record goes and the job is marked disposed, in one commit.
    pub async fn finish_move(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        let context = format!("recording the move of job {id}'s source as done");
        let mut tx = self.begin_write(&context).await?;
        forget_move(&mut tx, id, &context).await?;
        mark(&mut tx, id, note, &context).await?;
        tx.commit().await.ctx(context)
    }
}

/// The guarded `disposed` UPDATE and, when it changed the job and there is a note, its
/// events row (the state is unchanged: from and to are the job's state).
async fn mark(
    conn: &mut sqlx::SqliteConnection,
    id: JobId,
    note: Option<&str>,
    context: &str,
) -> Result<(), StoreError> {
    let changed = sqlx::query("UPDATE jobs SET disposed = 1 WHERE id = ? AND disposed = 0")
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .ctx(context.to_string())?
        .rows_affected();
    if changed == 1
        && let Some(note) = note
    {
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
             SELECT id, state, state, ?, ?, ? FROM jobs WHERE id = ?",
        )
        .bind(now_ms())
        .bind(format!("source: {note}"))
        .bind(super::AGENT)
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .ctx(context.to_string())?;
    }
    Ok(())
}

/// Deletes the record of job `id`'s source move, inside the caller's transaction.
async fn forget_move(
    conn: &mut sqlx::SqliteConnection,
    id: JobId,
    context: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM source_moves WHERE job_id = ?")
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .ctx(context)?;
    Ok(())
}

/// One `source_moves` row, from either backend.
pub(crate) fn decode_move(r: &impl Columns) -> Result<(JobId, MovePlan), StoreError> {
    let sql = |e: sqlx::Error| StoreError::Sql {
        context: "reading a move in progress".into(),
        source: e,
    };
    let job = JobId(r.int("job_id").map_err(sql)?);
    let size = r.int("size").map_err(sql)?;
    let plan = MovePlan {
        source: bytes_path(r.bytes("source").map_err(sql)?),
        dest: bytes_path(r.bytes("dest").map_err(sql)?),
        temp: bytes_path(r.bytes("temp").map_err(sql)?),
        // Stored as the u64s' bits.
        source_id: FileId {
            dev: r.int("source_dev").map_err(sql)? as u64,
            ino: r.int("source_ino").map_err(sql)? as u64,
        },
        size: u64::try_from(size).map_err(|_| StoreError::Corrupt {
            job,
            detail: format!("negative size {size} in its recorded move"),
        })?,
        mtime_ns: r.int("mtime_ns").map_err(sql)?,
    };
    Ok((job, plan))
}
