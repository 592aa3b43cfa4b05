//! Walking a watch folder (or a subfolder that was moved in): every regular file not ignored,
//! with its size and mtime from `stat` alone; and stat'ing the paths a batch of events names.
//! Blocking (std::fs): call it in `spawn_blocking`.
//! Directory symlinks below the folder are not followed (they could loop or leave the folder;
//! the watch folder itself may be one, and is followed); a symlink to a file is taken with its
//! target's size and mtime.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::ignore::Ignore;
use super::stability::Stat;
use crate::media::mtime_ns;

/// What one walk found.
#[derive(Debug, Default)]
pub(super) struct Walked {
    pub files: Vec<(PathBuf, Stat)>,
    /// Entries skipped by the ignore rules (a skipped directory counts once).
    pub ignored: u64,
    /// Entries that could not be read (each logged).
    pub errors: u64,
}

/// The `stat` of a regular file (following a symlink), `None` if it is anything else or gone.
pub(super) fn stat_file(path: &Path) -> Option<Stat> {
    let m = fs::metadata(path).ok()?;
    m.is_file().then(|| Stat {
        size: m.len(),
        mtime_ns: mtime_ns(&m),
    })
}

/// What an event's path is when it is looked at.
pub(super) enum Seen {
    File(Stat),
    Dir,
    /// Gone, or neither a regular file nor a directory.
    Gone,
}

/// Stats the paths of a batch of events, each with whether it arrived (created or moved
/// in), so the caller can walk arrived directories.
pub(super) fn stat_paths(paths: HashMap<PathBuf, bool>) -> Vec<(PathBuf, bool, Seen)> {
    paths
        .into_iter()
        .map(|(p, arrived)| {
            let s = match fs::metadata(&p) {
                Ok(m) if m.is_dir() => Seen::Dir,
                Ok(_) => stat_file(&p).map_or(Seen::Gone, Seen::File),
                Err(_) => Seen::Gone,
            };
            (p, arrived, s)
        })
        .collect()
}

/// Walks `dir` (the watch folder `ignore` belongs to, or a directory under it). Subfolders are
/// entered only when `recursive`. Errors below `dir` are logged and counted; an unreadable
/// `dir` itself is returned as the error.
pub(super) fn walk_dir(dir: &Path, ignore: &Ignore, recursive: bool) -> io::Result<Walked> {
    // read_dir first, so a missing or unreadable folder is an error, not an empty walk.
    fs::read_dir(dir)?;
    let mut out = Walked::default();
    let mut it = WalkDir::new(dir)
        .follow_links(false)
        .max_depth(if recursive { usize::MAX } else { 1 })
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.errors += 1;
                tracing::warn!(
                    "cannot read {} while scanning the watch folder: {e}; check its permissions",
                    e.path().unwrap_or(dir).display()
                );
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let ft = entry.file_type();
        if ignore.skips_entry(entry.path()) {
            out.ignored += 1;
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if ft.is_dir() {
            continue;
        }
        let stat = if ft.is_file() {
            entry.metadata().ok().map(|m| Stat {
                size: m.len(),
                mtime_ns: mtime_ns(&m),
            })
        } else if ft.is_symlink() {
            stat_file(entry.path())
        } else {
            None // FIFOs, sockets, devices
        };
        if let Some(stat) = stat {
            out.files.push((entry.into_path(), stat));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_files_skips_ignored_and_respects_recursive() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        for f in [
            "a.jpg",
            "sub/b.jpg",
            "@eaDir/c.jpg",
            "out/d.jpg",
            ".DS_Store",
            "x.part",
        ] {
            let p = w.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"12345").unwrap();
        }
        std::os::unix::fs::symlink(w.join("a.jpg"), w.join("link.jpg")).unwrap();
        std::os::unix::fs::symlink(w.join("sub"), w.join("dirlink")).unwrap();
        let ig = Ignore::new(w, &[], [w.join("out")]).unwrap();
        let walked = walk_dir(w, &ig, true).unwrap();
        let mut names: Vec<_> = walked
            .files
            .iter()
            .map(|(p, s)| {
                assert_eq!(s.size, 5);
                p.strip_prefix(w).unwrap().to_path_buf()
            })
            .collect();
        names.sort();
        let want: Vec<PathBuf> = ["a.jpg", "link.jpg", "sub/b.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names, want);
        assert_eq!(walked.ignored, 4);
        let flat = walk_dir(w, &ig, false).unwrap();
        assert_eq!(flat.files.len(), 2);
        assert!(walk_dir(&w.join("missing"), &ig, true).is_err());
    }
}
