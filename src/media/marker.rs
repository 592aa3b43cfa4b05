//! The `.hili-queue` marker: a tiny file in each output directory holding the id of the queue
//! that wrote there. A database that is lost or replaced gets a new id, so `hili run` can see
//! that the outputs on disk belong to another queue and refuse to start over silently (which
//! would upload — and pay for — every photo again). The name starts with a dot, so the walk
//! and the watcher ignore it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The marker's file name inside an output directory.
pub const MARKER_NAME: &str = ".hili-queue";

/// The marker path for `dir`.
pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER_NAME)
}

/// The queue id recorded in `dir`'s marker, `None` when there is no marker (or no `dir`).
pub fn read_marker(dir: &Path) -> io::Result<Option<String>> {
    match fs::read(marker_path(dir)) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            // The first line is the id; later lines are a comment for people.
            Ok(Some(text.lines().next().unwrap_or("").trim().to_string()))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Writes `queue_id` as `dir`'s marker unless a marker is already there (whoever wrote it
/// first keeps it: the check at start decides what a different one means). Creates `dir`.
/// Returns whether a marker was written.
pub fn ensure_marker(dir: &Path, queue_id: &str) -> io::Result<bool> {
    if read_marker(dir)?.is_some() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    let body = format!(
        "{queue_id}\n# Written by hili: the id of the queue database whose results are in this \
         directory.\n# If hili refuses to start because of it, see `hili run`'s message.\n"
    );
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker_path(dir))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    io::Write::write_all(&mut file, body.as_bytes())?;
    file.sync_all()?;
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
        // A regular file where the directory should be reads as "no marker".
        let file = d.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert_eq!(read_marker(&file).unwrap(), None);
    }
}
