//! The `.hili-queue` marker: a tiny record in each output directory of the id of the queue
//! that wrote there. A database that is lost or replaced gets a new id, so `hili run` can see
//! that the outputs on disk belong to another queue and refuse to start over silently (which
//! would upload — and pay for — every photo again).
//!
//! The marker is a symbolic link whose target is `hili-queue-<id>` (it points nowhere): made
//! in one create-exclusive step, so it is never torn or half-written, and tools that list or
//! copy photo files (and the watcher: the name starts with a dot) pass it by. A regular file
//! whose first line is the id is read as well. On filesystems without symbolic links (FAT) no
//! marker is written; the pipeline logs that and goes on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The marker's file name inside an output directory.
pub const MARKER_NAME: &str = ".hili-queue";

/// What the link points to, before the id.
const TARGET_PREFIX: &str = "hili-queue-";

/// The marker path for `dir`.
pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER_NAME)
}

/// The queue id recorded in `dir`'s marker, `None` when there is no marker (or no `dir`).
pub fn read_marker(dir: &Path) -> io::Result<Option<String>> {
    let path = marker_path(dir);
    let gone = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        )
    };
    match fs::read_link(&path) {
        Ok(target) => {
            let t = target.to_string_lossy();
            Ok(Some(
                t.strip_prefix(TARGET_PREFIX).unwrap_or(&t).to_string(),
            ))
        }
        Err(e) if gone(&e) => Ok(None),
        // Not a link: a marker written by hand (or copied as a file); its first line is the id.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => match fs::read(&path) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b);
                Ok(Some(text.lines().next().unwrap_or("").trim().to_string()))
            }
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Records `queue_id` as `dir`'s marker unless one is already there (whoever wrote it first
/// keeps it: the check at start decides what a different one means). Creates `dir`. Returns
/// whether a marker was written.
pub fn ensure_marker(dir: &Path, queue_id: &str) -> io::Result<bool> {
    if read_marker(dir)?.is_some() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    match std::os::unix::fs::symlink(format!("{TARGET_PREFIX}{queue_id}"), marker_path(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    // Durable with the directory entry, like every output.
    fs::File::open(dir)?.sync_all().or_else(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_writer_keeps_the_marker() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out/sub");
        assert_eq!(read_marker(&out).unwrap(), None);
        assert!(ensure_marker(&out, "aaaa").unwrap());
        assert!(!ensure_marker(&out, "bbbb").unwrap());
        assert_eq!(read_marker(&out).unwrap().as_deref(), Some("aaaa"));
        // Not a regular file: photo listings pass it by.
        assert!(!fs::metadata(marker_path(&out)).is_ok_and(|m| m.is_file()));
        // A regular file where the directory should be reads as "no marker".
        let file = d.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert_eq!(read_marker(&file).unwrap(), None);
        // A hand-written marker file is read too.
        let hand = d.path().join("hand");
        fs::create_dir(&hand).unwrap();
        fs::write(marker_path(&hand), b"cccc\n# note\n").unwrap();
        assert_eq!(read_marker(&hand).unwrap().as_deref(), Some("cccc"));
    }
}
