//! Durable, never-clobbering writes of results. A result is written to a `.hili-tmp-<random>`
//! file beside its destination, fsynced, moved into place without replacing anything (renameat2
//! `RENAME_NOREPLACE`, else a hard link), and the directory is fsynced, so after a crash either
//! the whole result is there under its final name or only a temp file is, which
//! [`remove_stale_temps`] clears at start-up.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::naming::first_numbered;

/// Prefix of temp files; anything named so in an output tree is debris from a crash.
pub const TEMP_PREFIX: &str = ".hili-tmp-";

/// The node this process writes temp files for (a shared queue's node), named in each temp
/// file so that a node starting up knows its own debris from another node's file in progress.
static TEMP_OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's temp files after `owner` from now on (once; later calls are ignored).
pub fn tag_temps(owner: &str) {
    let _ = TEMP_OWNER.set(owner.to_string());
}

/// The start of this process's temp files' names.
fn own_temp_prefix() -> String {
    match TEMP_OWNER.get() {
        Some(owner) => format!("{TEMP_PREFIX}{owner}-"),
        None => TEMP_PREFIX.to_string(),
    }
}

/// Adds the path (and what was being done) to an I/O error, keeping its kind.
fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// `p`'s directory, `.` for a bare name.
pub(super) fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes a directory's entries durable (a created, renamed or linked name).
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = File::open(dir).map_err(|e| ctx(e, "opening directory", dir))?;
    match d.sync_all() {
        // Some filesystems cannot fsync a directory; there is nothing more to do there.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r.map_err(|e| ctx(e, "syncing directory", dir)),
    }
}

/// `create_dir_all`, then fsyncs the parent of every directory it created so the tree survives
/// a crash along with the file about to be put in it.
pub(super) fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.as_os_str().is_empty() && fs::symlink_metadata(cur).is_err() {
        missing.push(cur);
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| ctx(e, "creating directory", dir))?;
    for m in missing.iter().rev() {
        sync_dir(parent_of(m))?;
    }
    Ok(())
}

/// A file being written that appears under its final name only when complete and durable.
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    hasher: Sha256,
    len: u64,
    /// Set once the temp file is gone (moved into place or removed).
    done: bool,
}

impl fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicFile")
            .field("temp", &self.temp)
            .field("len", &self.len)
            .finish()
    }
}

impl AtomicFile {
    /// Creates `dir` (and its parents) if needed and a fresh temp file in it.
    pub fn create_in(dir: &Path) -> io::Result<AtomicFile> {
        create_dir_all_durable(dir)?;
        loop {
            let temp = dir.join(format!(
                "{}{:016x}",
                own_temp_prefix(),
                rand::random::<u64>()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file,
                        temp,
                        hasher: Sha256::new(),
                        len: 0,
                        done: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ctx(e, "creating temp file", &temp)),
            }
        }
    }

    /// Appends `buf`, hashing it on the way.
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .write_all(buf)
            .map_err(|e| ctx(e, "writing", &self.temp))?;
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Replaces everything written so far by `buf`, in the same temp file (the metadata of a
    /// result is rewritten before the result is placed).
    pub fn replace_with(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .map_err(|e| ctx(e, "truncating", &self.temp))?;
        self.hasher = Sha256::new();
        self.len = 0;
        self.write_all(buf)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes are being written until [`commit`](Self::commit).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Makes the content durable and gives it the name `dest`, or `dest` numbered (`x-1.jpg`…)
    /// if another file holds that name; if a file with the very same content is already at one
    /// of those names, that one is kept and the temp file dropped. Returns the final path and
    /// the content's SHA-256. `dest` must be on the same filesystem as the temp file.
    pub fn commit(mut self, dest: &Path) -> io::Result<(PathBuf, String)> {
        self.file
            .sync_all()
            .map_err(|e| ctx(e, "syncing", &self.temp))?;
        let sha = hex::encode(self.hasher.clone().finalize());
        let dir = parent_of(dest);
        create_dir_all_durable(dir)?;
        crate::failpoint::hit("before-output-rename");
        first_numbered(dest, |path| match place_noclobber(&self.temp, &path) {
            Ok(()) => {
                self.done = true;
                sync_dir(dir)?;
                if parent_of(&self.temp) != dir {
                    sync_dir(parent_of(&self.temp))?;
                }
                Ok(Some((path, sha.clone())))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if same_content(&path, &sha)? {
                    // Already there: make sure it is durable too; Drop removes our copy.
                    File::open(&path)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| ctx(e, "syncing", &path))?;
                    return Ok(Some((path, sha.clone())));
                }
                Ok(None)
            }
            Err(e) => Err(ctx(e, "moving result to", &path)),
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a temp file left behind is removed by remove_stale_temps.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn same_content(path: &Path, sha: &str) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            Ok(super::hash::sha256_file(path).map_err(|e| ctx(e, "hashing", path))? == sha)
        }
        Ok(_) => Ok(false),
        // Gone again since the attempt: not ours to claim; the next number is tried.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ctx(e, "checking", path)),
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: fails with `AlreadyExists` if `to` exists,
/// touching nothing. See [`no_noreplace`] for the errors of systems without it.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (f, t) = (cstring(from)?, cstring(to)?);
        // SAFETY: both strings are valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, to);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// Whether a [`rename_noreplace`] error means the filesystem or kernel lacks the flag.
pub(super) fn no_noreplace(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Moves `from` to `to` unless `to` exists (then fails with `AlreadyExists`, touching nothing).
pub(super) fn place_noclobber(from: &Path, to: &Path) -> io::Result<()> {
    match rename_noreplace(from, to) {
        Ok(()) => return Ok(()),
        // Filesystems or kernels without RENAME_NOREPLACE: fall back to a hard link.
        Err(e) if !no_noreplace(&e) => return Err(e),
        Err(_) => {}
    }
    match fs::hard_link(from, to) {
        Ok(()) => {
            // The result is in place; a temp name left over is debris remove_stale_temps clears.
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links either (FAT, some network filesystems): check, then rename. The tiny
        // window between the two is the best such a filesystem allows.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e),
    }
}

/// Durably copies `src` (an earlier job's output, same content wanted again) to `dest`, under
/// the same rules as [`AtomicFile::commit`]. Returns the final path and the SHA-256.
pub fn copy_atomic(src: &Path, dest: &Path) -> io::Result<(PathBuf, String)> {
    let mut input = File::open(src).map_err(|e| ctx(e, "opening", src))?;
    let mut out = AtomicFile::create_in(parent_of(dest))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ctx(e, "reading", src)),
        }
    }
    out.commit(dest)
}

/// Removes every `.hili-tmp-*` file under `dir` (recursively, symlinks not followed) and says
/// how many. Run it at start-up, before any writer of this process starts: it cannot tell a
/// crash's debris from a file being written right now. A missing `dir` counts as clean.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    remove_temps_older_than(dir, Duration::ZERO)
}

/// [`remove_stale_temps`] for a folder other processes may be writing into (a shared queue's
/// nodes, on the NAS): this process's own temp files (named after its node, see
/// [`tag_temps`]), and others' untouched for `age`, which no live writer leaves.
pub fn remove_temps_older_than(dir: &Path, age: Duration) -> io::Result<usize> {
    // Untagged (a queue of its own), no temp file is known to be this process's by name.
    let own = TEMP_OWNER.get().map(|_| own_temp_prefix());
    if fs::symlink_metadata(dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(io::Error::from)?;
        let is_temp = entry
            .file_name()
            .as_bytes()
            .starts_with(TEMP_PREFIX.as_bytes());
        let old_enough = || {
            age.is_zero()
                || entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|e| e >= age)
        };
        let ours = || {
            own.as_ref()
                .is_some_and(|o| entry.file_name().as_bytes().starts_with(o.as_bytes()))
        };
        if is_temp && entry.file_type().is_file() && (ours() || old_enough()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(e, "removing stale temp file", entry.path())),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_noclobber_refuses_an_existing_name() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let e = place_noclobber(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        assert!(a.exists());
        let c = d.path().join("c");
        place_noclobber(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&c).unwrap(), b"new");
    }

    #[test]
    fn creates_missing_directories() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x/y/z");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).unwrap();
        assert_eq!(parent_of(Path::new("bare")), Path::new("."));
    }
}
