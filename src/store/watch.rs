//! Read-only look-ups for the drop-folder watcher: which file versions a watch folder has
//! already queued, so a rescan of thousands of unchanged files costs no write transaction.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use sqlx::Row;

use super::error::SqlContext;
use super::jobs::{bytes_path, path_bytes};
use super::{JobId, SqliteStore, StoreError};

impl SqliteStore {
    /// path → (size, mtime_ns) of the latest job found under `source_root` (any state, any
    /// settings: a watch folder processes a file version once, whatever its repair type is
    /// later changed to). Whether a file is new is still decided by `enqueue_many_as`; this
    /// only lets the watcher skip asking about files it knows.
    pub async fn known_versions(
        &self,
        source_root: &Path,
    ) -> Result<HashMap<PathBuf, (u64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns FROM jobs WHERE source_root = ? ORDER BY id",
        )
        .bind(path_bytes(source_root))
        .fetch_all(&mut *self.reader("using the queue database").await?)
        .await
        .ctx(format!(
            "reading the files already queued from {}",
            source_root.display()
        ))?;
        let mut out = HashMap::with_capacity(rows.len());
        let context = "reading the files already queued";
        for r in rows {
            let p: Vec<u8> = r.try_get(0).ctx(context)?;
            let size: i64 = r.try_get(1).ctx(context)?;
            let mtime: i64 = r.try_get(2).ctx(context)?;
            // Later rows (higher ids) win: the newest version of each path.
            out.insert(bytes_path(p), (size.max(0) as u64, mtime));
        }
        Ok(out)
    }

    /// Every path where a job wrote its result: files `hili add --dry-run` must not count as
    /// photos (the real `add` asks the same of each file under the write lock).
    pub async fn result_paths(&self) -> Result<HashSet<PathBuf>, StoreError> {
        let context = "reading where results were written";
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT output_path FROM jobs WHERE output_path IS NOT NULL")
                .fetch_all(&mut *self.reader(context).await?)
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
            "SELECT id, output_path FROM jobs WHERE output_sha256 = ? AND id != ? LIMIT 1",
        )
        .bind(sha256.to_ascii_lowercase())
        .bind(except.0)
        .fetch_optional(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        Ok(row.map(|(id, p)| (JobId(id), p.map(bytes_path))))
    }
}
