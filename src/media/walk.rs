//! Walking the paths given to `hili add`: every regular file under them, with its size and
//! modification time from metadata alone (no content is read), minus the built-in ignore list
//! (system debris, partial downloads, dotfiles). Names are kept as `PathBuf`, so names that
//! are not UTF-8 survive.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use walkdir::{DirEntry, FilterEntry, WalkDir};

/// A file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// The argument it came from: the directory itself, or a file argument's parent.
    pub root: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Which file it is (device, inode), recorded with the job.
    pub file_id: FileId,
}

/// A file's device and inode: which file a name pointed at, whatever its content. A file
/// saved again under the same name (a new scan) is a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// A path [`walk`] had to skip; the walk goes on after it.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{}: no such file or directory: check the path", .path.display())]
    NotFound { path: PathBuf },
    #[error("{}: is a symbolic link to a missing file: skipped; fix or remove the link", .path.display())]
    BrokenSymlink { path: PathBuf },
    #[error("{}: is a symbolic link loop: skipped; fix or remove the link", .path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("{}: is {what}, not a regular file or directory: skipped; copy the photo into a regular file", .path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{}: cannot be read ({source}): skipped; check its permissions and add it again", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Names never taken as photos, nor entered as directories: dotfiles and dot-directories
/// (`.DS_Store`, `._*` AppleDouble, `.Trashes`, `.hili-tmp-*`), Windows and NAS debris
/// (`Thumbs.db`, `desktop.ini`, `$RECYCLE.BIN`, `System Volume Information`, `@eaDir`),
/// `__MACOSX` from zip files, Office lock files (`~$*`) and unfinished downloads (`*.tmp`,
/// `*.part`, `*.crdownload`), and the manifest hili keeps in an output folder.
pub fn is_ignored_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    let ends_with_ci = |suffix: &[u8]| {
        b.len() >= suffix.len() && b[b.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    b.starts_with(b".")
        || b.starts_with(b"~$")
        || b.eq_ignore_ascii_case(b"Thumbs.db")
        || b.eq_ignore_ascii_case(b"desktop.ini")
        || b.eq_ignore_ascii_case(b"$RECYCLE.BIN")
        || b == b"System Volume Information"
        || b == b"@eaDir"
        || b == b"__MACOSX"
        || ends_with_ci(b".tmp")
        || ends_with_ci(b".part")
        || ends_with_ci(b".crdownload")
        || b == super::manifest::MANIFEST_NAME.as_bytes()
}

/// A file's modification time in nanoseconds since the epoch, as the queue records it.
pub fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn what(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

type Entries = FilterEntry<walkdir::IntoIter, fn(&DirEntry) -> bool>;

/// The arguments themselves are taken as given (even a dotfile named explicitly); the ignore
/// list applies to what is found inside directories.
fn keep(e: &DirEntry) -> bool {
    e.depth() == 0 || !is_ignored_name(e.file_name())
}

/// Iterator returned by [`walk`].
pub struct Walk {
    args: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, Entries)>,
    /// (device, inode) of every file yielded: a file reached twice (two arguments, symlinks,
    /// hard links) is yielded once.
    seen: HashSet<(u64, u64)>,
}

/// Every regular file under `paths` (recursively; symlinks followed, loops reported), sorted
/// by name within each directory, each file once. Errors are yielded in place and the walk
/// continues.
pub fn walk(paths: &[PathBuf]) -> Walk {
    Walk {
        args: Vec::from(paths).into_iter(),
        current: None,
        seen: HashSet::new(),
    }
}

impl Walk {
    fn found(&mut self, path: PathBuf, root: PathBuf, m: &fs::Metadata) -> Option<Found> {
        self.seen.insert((m.dev(), m.ino())).then(|| Found {
            path,
            root,
            size: m.len(),
            mtime_ns: mtime_ns(m),
            file_id: FileId::of(m),
        })
    }

    /// Starts on the next argument; yields it directly if it is a file.
    fn start(&mut self, arg: PathBuf) -> Option<Result<Found, WalkError>> {
        let meta = match fs::metadata(&arg) {
            Ok(m) => m,
            Err(e) => return Some(Err(io_error(arg, e))),
        };
        if meta.is_dir() {
            let entries = WalkDir::new(&arg)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(keep as fn(&DirEntry) -> bool);
            self.current = Some((arg, entries));
            None
        } else if meta.is_file() {
            let root = match arg.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            self.found(arg, root, &meta).map(Ok)
        } else {
            Some(Err(WalkError::NotRegular {
                path: arg,
                what: what(meta.file_type()),
            }))
        }
    }
}

fn io_error(path: PathBuf, e: io::Error) -> WalkError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return WalkError::SymlinkLoop { path };
    }
    if e.kind() == io::ErrorKind::NotFound {
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        return if is_link {
            WalkError::BrokenSymlink { path }
        } else {
            WalkError::NotFound { path }
        };
    }
    WalkError::Io { path, source: e }
}

fn walkdir_error(root: &Path, e: walkdir::Error) -> WalkError {
    let path = e.path().unwrap_or(root).to_path_buf();
    if e.loop_ancestor().is_some() {
        return WalkError::SymlinkLoop { path };
    }
    let source = e
        .into_io_error()
        .unwrap_or_else(|| io::Error::other("unreadable directory entry"));
    io_error(path, source)
}

impl Iterator for Walk {
    type Item = Result<Found, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((root, entries)) = self.current.as_mut() else {
                let arg = self.args.next()?;
                if let Some(item) = self.start(arg) {
                    return Some(item);
                }
                continue;
            };
            let entry = match entries.next() {
                None => {
                    self.current = None;
                    continue;
                }
                // With follow_links, a broken link is an error before `keep` sees its name:
                // an ignored name (hili's own `.hili-queue` marker is a dangling link) is
                // skipped silently, as it would be if it resolved.
                Some(Err(e))
                    if e.depth() > 0
                        && e.path()
                            .and_then(Path::file_name)
                            .is_some_and(is_ignored_name) =>
                {
                    continue;
                }
                Some(Err(e)) => return Some(Err(walkdir_error(root, e))),
                Some(Ok(entry)) => entry,
            };
            // With follow_links the type is the link target's; FIFOs, sockets and devices
            // inside directories are skipped silently, like directories themselves.
            if !entry.file_type().is_file() {
                continue;
            }
            let root = root.clone();
            match entry.metadata() {
                Ok(m) => {
                    if let Some(f) = self.found(entry.into_path(), root, &m) {
                        return Some(Ok(f));
                    }
                }
                Err(e) => return Some(Err(walkdir_error(&root, e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_list() {
        for name in [
            ".DS_Store",
            "._IMG_1.jpg",
            ".Trashes",
            ".git",
            "Thumbs.db",
            "thumbs.db",
            "desktop.ini",
            "~$budget.xlsx",
            "a.tmp",
            "b.part",
            "c.CRDOWNLOAD",
            "@eaDir",
            "__MACOSX",
            ".hili-tmp-0123",
        ] {
            assert!(is_ignored_name(OsStr::new(name)), "{name}");
        }
        for name in [
            "IMG_1.jpg",
            "party.jpg",
            "tmp",
            "~photo.jpg",
            "a.tmp.jpg",
            "eaDir",
        ] {
            assert!(!is_ignored_name(OsStr::new(name)), "{name}");
        }
        assert!(!is_ignored_name(OsStr::from_bytes(b"caf\xe9.jpg")));
    }

    #[test]
    fn a_dangling_link_with_an_ignored_name_is_skipped_silently() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.jpg"), b"x").expect("write");
        // hili's output-folder marker is such a link; a broken link with a real name is not.
        std::os::unix::fs::symlink("queue-id", dir.path().join(".hili-queue")).expect("link");
        std::os::unix::fs::symlink("gone", dir.path().join("b.jpg")).expect("link");
        let items: Vec<_> = walk(&[dir.path().to_path_buf()]).collect();
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Ok(f) if f.path.ends_with("a.jpg")))
        );
        assert!(items.iter().any(|i| matches!(
            i,
            Err(WalkError::BrokenSymlink { path }) if path.ends_with("b.jpg")
        )));
    }
}
