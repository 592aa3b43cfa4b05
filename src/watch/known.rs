//! A watch folder's cache of the file versions already queued: loaded from the store when the
//! folder's task starts, filled as files are queued, and pruned by each full scan (a version
//! the latest scan did not see is dropped). It keeps rescans of thousands of unchanged files
//! from touching the database; the store stays the judge of what is new, so a version
//! missing here is only checked again, never queued twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::stability::Stat;

#[derive(Debug, Clone, Copy)]
struct Known {
    stat: Stat,
    /// The full scan that last saw it (entries not seen by the latest are pruned).
    generation: u32,
}

/// The versions already queued, by path.
pub(super) struct KnownFiles {
    map: HashMap<PathBuf, Known>,
    generation: u32,
}

impl KnownFiles {
    /// From the store's `(size, mtime_ns)` of each path queued under the folder.
    pub(super) fn new(versions: HashMap<PathBuf, (u64, i64)>) -> KnownFiles {
        let map = versions
            .into_iter()
            .map(|(p, (size, mtime_ns))| {
                let stat = Stat { size, mtime_ns };
                (
                    p,
                    Known {
                        stat,
                        generation: 0,
                    },
                )
            })
            .collect();
        KnownFiles { map, generation: 0 }
    }

    /// True if this exact version of `path` was queued; it then counts as seen by the
    /// current scan.
    pub(super) fn seen(&mut self, path: &Path, stat: Stat) -> bool {
        match self.map.get_mut(path) {
            Some(k) if k.stat == stat => {
                k.generation = self.generation;
                true
            }
            _ => false,
        }
    }

    /// A full scan begins: what it does not see is pruned by [`KnownFiles::end_scan`].
    pub(super) fn start_scan(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// A full scan ended: drops the versions it did not see.
    pub(super) fn end_scan(&mut self) {
        let g = self.generation;
        self.map.retain(|_, k| k.generation == g);
    }

    pub(super) fn forget(&mut self, path: &Path) {
        self.map.remove(path);
    }

    /// Records a version just queued (or found already in the queue).
    pub(super) fn insert(&mut self, path: PathBuf, stat: Stat) {
        let generation = self.generation;
        self.map.insert(path, Known { stat, generation });
    }
}
