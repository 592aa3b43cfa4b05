//! The look-ups beside enqueue on the shared queue — which file versions a watch folder has
//! queued, where results were written, a result's content — and the notes of a job's events
//! trail (rows that change no state): the PostgreSQL side of the SQLite queue's `watch.rs`,
//! `note.rs`, `input_notes.rs` and the notes of `runs.rs`, with the same meanings.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use sqlx::Row;

use super::PgStore;
use crate::store::error::SqlContext;
use crate::store::jobs::{bytes_path, path_bytes};
use crate::store::{AGENT, JobId, StoreError, now_ms};

/// The prefix of an input note's `detail` in `events` (as on the SQLite side).
const INPUT_PREFIX: &str = "input: ";

impl PgStore {
    /// path → (size, mtime_ns) of the latest job found under `source_root` (any state, any
    /// settings; this node's, or the shared folders' for a shared root), so the watcher can skip asking about files it knows; whether a
    /// file is new is still decided by `enqueue_many_as`.
    pub async fn known_versions(
        &self,
        source_root: &Path,
    ) -> Result<HashMap<PathBuf, (u64, i64)>, StoreError> {
        let context = format!(
            "reading the files already queued from {}",
            source_root.display()
        );
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns FROM jobs WHERE source_root = $1 \
             AND node IS NOT DISTINCT FROM $2 ORDER BY id",
        )
        .bind(path_bytes(source_root))
        .bind(self.owner_of(source_root))
        .fetch_all(self.pool())
        .await
        .ctx(&context)?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let p: Vec<u8> = r.try_get(0).ctx(&context)?;
            let size: i64 = r.try_get(1).ctx(&context)?;
            let mtime: i64 = r.try_get(2).ctx(&context)?;
            // Later rows (higher ids) win: the newest version of each path.
            out.insert(bytes_path(p), (size.max(0) as u64, mtime));
        }
        Ok(out)
    }

    /// Every path where a job wrote its result: files `hili add --dry-run` must not count as
    /// photos (the real `add` asks the same of each file under its path's lock).
    pub async fn result_paths(&self) -> Result<HashSet<PathBuf>, StoreError> {
        let context = "reading where results were written";
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT output_path FROM jobs WHERE output_path IS NOT NULL")
                .fetch_all(self.pool())
                .await
                .ctx(context)?;
        Ok(rows.into_iter().map(bytes_path).collect())
    }

    /// A job whose result has this content (SHA-256), other than `except`: a file with it is
    /// hili's own output fed back as a photo.
    pub async fn result_with_hash(
        &self,
        sha256: &str,
        except: JobId,
    ) -> Result<Option<(JobId, Option<PathBuf>)>, StoreError> {
        let context = "looking for a result with the same content";
        let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, output_path FROM jobs WHERE output_sha256 = $1 AND id <> $2 LIMIT 1",
        )
        .bind(sha256.to_ascii_lowercase())
        .bind(except.0)
        .fetch_optional(self.pool())
        .await
        .ctx(context)?;
        Ok(row.map(|(id, p)| (JobId(id), p.map(bytes_path))))
    }

    /// Adds `detail` to job `id`'s events, from and to its current state, once: the same note
    /// again (a retry, a step redone after a crash, another node) adds no second row. Nothing
    /// when the job does not exist.
    pub async fn note(&self, id: JobId, detail: &str) -> Result<(), StoreError> {
        let context = format!("noting an event of job {id}");
        let mut tx = self.begin(&context).await?;
        // The job's row lock (FOR NO KEY UPDATE: it does not hold back other events rows of
        // the job) makes the look-for-the-note-then-insert race-free across nodes, and keeps
        // the state copied into the note the job's state until commit.
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx(&context)?;
        let Some(state) = state else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
             SELECT $1, $2, $2, $3, $4, $5 WHERE NOT EXISTS \
             (SELECT 1 FROM events WHERE job_id = $1 AND detail = $4)",
        )
        .bind(id.0)
        .bind(state)
        .bind(now_ms())
        .bind(detail)
        .bind(AGENT)
        .execute(&mut *tx)
        .await
        .ctx(&context)?;
        tx.commit().await.ctx(context)
    }

    /// Records `note` in job `id`'s events (state unchanged), once; see [`PgStore::note`].
    pub async fn note_input(&self, id: JobId, note: &str) -> Result<(), StoreError> {
        self.note(id, &format!("{INPUT_PREFIX}{note}")).await
    }

    /// The latest input note of every job that has one, without its prefix.
    pub async fn input_notes(&self) -> Result<HashMap<JobId, String>, StoreError> {
        let context = "reading how inputs were converted";
        let rows = sqlx::query(
            "SELECT job_id, substr(detail, $1) FROM events WHERE detail LIKE $2 ORDER BY id",
        )
        .bind(INPUT_PREFIX.len() as i32 + 1)
        .bind(format!("{INPUT_PREFIX}%"))
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        let mut out = HashMap::new();
        for r in rows {
            let id: i64 = r.try_get(0).ctx(context)?;
            out.insert(JobId(id), r.try_get(1).ctx(context)?);
        }
        Ok(out)
    }

    /// Every note of every job (events that left its state as it was), oldest first.
    pub async fn job_notes(&self) -> Result<HashMap<JobId, Vec<String>>, StoreError> {
        let context = "reading the notes of the jobs";
        let rows = sqlx::query(
            "SELECT job_id, detail FROM events \
             WHERE from_state = to_state AND detail IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.pool())
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
