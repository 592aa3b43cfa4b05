//! Read-only look-ups for the drop-folder watcher: which file versions a watch folder has
//! already queued, so a rescan of thousands of unchanged files costs no write transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sqlx::Row;

use super::error::SqlContext;
use super::jobs::{bytes_path, path_bytes, rgb_text};
use super::{Store, StoreError};
use crate::repair::{Repair, Rgb};

impl Store {
    /// path → (size, mtime_ns) of the latest job found under `source_root` with these
    /// settings (any state). Whether a file is new is still decided by `enqueue_many`; this
    /// only lets the watcher skip asking about files it knows.
    pub async fn known_versions(
        &self,
        source_root: &Path,
        repair: Repair,
        rgb: Option<Rgb>,
        output_dir: &Path,
    ) -> Result<HashMap<PathBuf, (u64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source_path, size, mtime_ns FROM jobs \
             WHERE source_root = ? AND repair = ? AND rgb IS ? AND output_dir = ? ORDER BY id",
        )
        .bind(path_bytes(source_root))
        .bind(repair.wire())
        .bind(rgb_text(rgb))
        .bind(path_bytes(output_dir))
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
}
