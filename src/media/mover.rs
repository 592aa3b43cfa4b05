//! Moving a source file into `done_dir`/`failed_dir` the way `mv` does, without ever replacing
//! a file and without leaving a duplicate or a temp file after a crash.
//!
//! A move is planned first ([`plan`]): a free destination name (`x.jpg`, else `x-1.jpg`…) and
//! a temp name beside it. On one filesystem [`rename_in_place`] does it all with one
//! `renameat2(RENAME_NOREPLACE)`: atomic (a crash leaves the file at one name or the other),
//! keeps everything, never replaces, and needs no record. Otherwise the caller records the
//! plan durably (the store's `source_moves` row) before [`execute`] touches a file, and
//! removes the record once the job is marked disposed. [`execute`] then:
//!
//! - where the filesystem refuses `RENAME_NOREPLACE`: `link` + `unlink` (a crash between
//!   leaves two names of one file), else a checked `rename`;
//! - across filesystems, copies into the temp name (owner where permitted, mode, access and
//!   modification times set from the source, fsynced), puts the temp in place with the same
//!   no-replace rule, fsyncs the directory, and only then unlinks the source — if it is still
//!   the file that was copied (a new scan saved under that name meanwhile is left alone).
//!
//! A crash anywhere leaves the record, and [`settle`] (run at start-up) finishes or undoes the
//! move from what is on disk: a temp file is removed (the copy is redone); a destination that
//! holds the source's size, mtime and content means the move got that far, so the source is
//! unlinked; otherwise nothing happened and the move is redone. Every step is idempotent, so
//! a crash during [`settle`] is settled again at the next start.

use std::fs::{self, FileTimes, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::atomic::{
    TEMP_PREFIX, create_dir_all_durable, no_noreplace, parent_of, place_noclobber,
    rename_noreplace, sync_dir,
};
use super::naming::first_numbered;
use super::walk::{FileId, mtime_ns};

/// A move about to be made, as recorded before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePlan {
    pub source: PathBuf,
    /// The free name chosen; a move never replaces whatever is there.
    pub dest: PathBuf,
    /// Where a copy across filesystems is written before it takes `dest`'s name.
    pub temp: PathBuf,
    /// The source file the plan was made for: only this one is ever unlinked.
    pub source_id: FileId,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What [`settle`] found of an interrupted move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The source is at `dest` (and no longer at its old name, unless replaced since).
    Completed,
    /// Nothing of the move is left; the source is where it was: move it again.
    Undone,
    /// Neither the source nor its copy is there (removed by someone else).
    SourceGone,
}

fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn lstat(p: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ctx(e, "checking", p)),
    }
}

/// Plans moving `source` (whose `lstat` is `meta`) to `dest`, or the first free numbered name
/// after it; creates the destination's folders durably.
pub fn plan(source: &Path, meta: &fs::Metadata, dest: &Path) -> io::Result<MovePlan> {
    let dir = parent_of(dest);
    create_dir_all_durable(dir)?;
    first_numbered(dest, |candidate| {
        Ok(lstat(&candidate)?.is_none().then(|| MovePlan {
            source: source.to_path_buf(),
            dest: candidate,
            temp: dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())),
            source_id: FileId::of(meta),
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
        }))
    })
}

/// What [`rename_in_place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Moved by one atomic rename.
    Moved,
    /// Source and destination are on different filesystems: a copy is needed.
    OtherFilesystem,
    /// The filesystem refuses `RENAME_NOREPLACE`: link + unlink (or a checked rename) needed.
    NoNoReplace,
}

/// The fast path: one `renameat2(RENAME_NOREPLACE)`. Atomic, so a crash leaves the source at
/// one name or the other and it needs no record; the other outcomes go through [`execute`],
/// recorded first. `AlreadyExists` if `dest` was taken since the plan (nothing moved).
pub fn rename_in_place(p: &MovePlan) -> io::Result<Fast> {
    let m = lstat(&p.source)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is gone", p.source.display()),
        )
    })?;
    if !p.is_version(&m) {
        return Err(changed(&p.source));
    }
    match rename_noreplace(&p.source, &p.dest) {
        Ok(()) => {
            // A rename takes whatever holds the name at that instant: if a new file took it
            // since the check above, it goes back (it is not what was processed).
            if !lstat(&p.dest)?.is_some_and(|d| p.is_version(&d)) {
                rename_noreplace(&p.dest, &p.source)
                    .map_err(|e| ctx(e, "moving back the unprocessed", &p.dest))?;
                return Err(changed(&p.source));
            }
            sync_dir(parent_of(&p.dest))?;
            sync_dir(parent_of(&p.source))?;
            Ok(Fast::Moved)
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Ok(Fast::OtherFilesystem),
        Err(e) if no_noreplace(&e) => Ok(Fast::NoNoReplace),
        Err(e) => Err(ctx(e, "moving", &p.source)),
    }
}

/// Carries out a plan, recorded first unless [`rename_in_place`] already did it all.
/// `AlreadyExists` if `dest` was taken since the plan (nothing moved); on any error the temp
/// copy is removed and the source is where it was, unless the error came after the copy was
/// in place (then [`settle`] completes it).
pub fn execute(p: &MovePlan) -> io::Result<()> {
    let (src_dir, dest_dir) = (parent_of(&p.source), parent_of(&p.dest));
    match rename_in_place(p)? {
        Fast::Moved => return Ok(()),
        Fast::OtherFilesystem => {}
        Fast::NoNoReplace => match fs::hard_link(&p.source, &p.dest) {
            Ok(()) => {
                sync_dir(dest_dir)?;
                crate::failpoint::hit("move:after-place");
                unlink_if(&p.source, p.source_id)?;
                return sync_dir(src_dir);
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
            // No hard links either (FAT, some network filesystems): check, then rename; the
            // window between the two is the best such a filesystem allows.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
                ) =>
            {
                if lstat(&p.dest)?.is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                fs::rename(&p.source, &p.dest).map_err(|e| ctx(e, "moving", &p.source))?;
                sync_dir(dest_dir)?;
                return sync_dir(src_dir);
            }
            Err(e) => return Err(ctx(e, "linking", &p.dest)),
        },
    }

    // Across filesystems.
    if let Err(e) = copy_keeping_metadata(p) {
        let _ = fs::remove_file(&p.temp);
        return Err(e);
    }
    crate::failpoint::hit("move:after-copy");
    if let Err(e) = place_noclobber(&p.temp, &p.dest) {
        let _ = fs::remove_file(&p.temp);
        return Err(e);
    }
    sync_dir(dest_dir)?;
    crate::failpoint::hit("move:after-place");
    unlink_if(&p.source, p.source_id)?;
    sync_dir(src_dir)?;
    crate::failpoint::hit("move:after-unlink");
    Ok(())
}

impl MovePlan {
    /// Whether `m` (an `lstat`) is the version of the source this plan was made for.
    fn is_version(&self, m: &fs::Metadata) -> bool {
        m.is_file()
            && FileId::of(m) == self.source_id
            && m.len() == self.size
            && mtime_ns(m) == self.mtime_ns
    }
}

fn changed(p: &Path) -> io::Error {
    io::Error::other(format!(
        "{} changed since the move was planned: left in place",
        p.display()
    ))
}

/// Copies the source into the temp name with its owner (where permitted), mode and times.
fn copy_keeping_metadata(p: &MovePlan) -> io::Result<()> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p.source)
        .map_err(|e| ctx(e, "opening", &p.source))?;
    let m = src.metadata().map_err(|e| ctx(e, "checking", &p.source))?;
    if !p.is_version(&m) {
        return Err(changed(&p.source));
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p.temp)
        .map_err(|e| ctx(e, "creating", &p.temp))?;
    let half = m.len() / 2;
    io::copy(&mut (&mut src).take(half), &mut out).map_err(|e| ctx(e, "copying to", &p.temp))?;
    crate::failpoint::hit("move:during-copy");
    io::copy(&mut src, &mut out).map_err(|e| ctx(e, "copying to", &p.temp))?;
    // Written to in place during the copy (same inode, new mtime): not the processed version.
    if !p.is_version(&src.metadata().map_err(|e| ctx(e, "checking", &p.source))?) {
        return Err(changed(&p.source));
    }
    // Owner first: chown clears set-id bits, which the mode below then restores.
    match std::os::unix::fs::fchown(&out, Some(m.uid()), Some(m.gid())) {
        Ok(()) => {}
        // Not permitted for an unprivileged user (as with `mv`): the file is the mover's.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {}
        Err(e) => return Err(ctx(e, "setting the owner of", &p.temp)),
    }
    out.set_permissions(m.permissions())
        .map_err(|e| ctx(e, "setting the mode of", &p.temp))?;
    let times = FileTimes::new()
        .set_accessed(m.accessed()?)
        .set_modified(m.modified()?);
    out.set_times(times)
        .map_err(|e| ctx(e, "setting the times of", &p.temp))?;
    out.sync_all().map_err(|e| ctx(e, "syncing", &p.temp))
}

/// Unlinks `path` if it is still the file `id` (a file saved since under that name is kept).
fn unlink_if(path: &Path, id: FileId) -> io::Result<bool> {
    match lstat(path)? {
        Some(m) if m.is_file() && FileId::of(&m) == id => match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ctx(e, "removing", path)),
        },
        _ => Ok(false),
    }
}

/// Finishes or undoes a move interrupted at any point (see the module doc).
pub fn settle(p: &MovePlan) -> io::Result<Settled> {
    let dest_dir = parent_of(&p.dest);
    if lstat(&p.temp)?.is_some() {
        match fs::remove_file(&p.temp) {
            Ok(()) => sync_dir(dest_dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, "removing", &p.temp)),
        }
    }
    let src = lstat(&p.source)?;
    let dst = lstat(&p.dest)?;
    // Ours: a regular file with the source's size and mtime (a rename keeps them; a copy is
    // given them before it is put in place).
    let ours = dst
        .as_ref()
        .is_some_and(|d| d.is_file() && d.len() == p.size && mtime_ns(d) == p.mtime_ns);
    let outcome = match (src, ours) {
        (None, true) => Settled::Completed,
        (None, false) => Settled::SourceGone,
        (Some(_), false) => Settled::Undone,
        (Some(s), true) => {
            if !s.is_file() || FileId::of(&s) != p.source_id {
                // Replaced since the copy was made: the new file is not ours to move.
                Settled::Completed
            } else if dst.as_ref().map(FileId::of) == Some(FileId::of(&s))
                || same_content(&p.source, &p.dest)?
            {
                if unlink_if(&p.source, p.source_id)? {
                    sync_dir(parent_of(&p.source))?;
                }
                Settled::Completed
            } else {
                Settled::Undone
            }
        }
    };
    Ok(outcome)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let ha = super::hash::sha256_file(a).map_err(|e| ctx(e, "hashing", a))?;
    let hb = super::hash::sha256_file(b).map_err(|e| ctx(e, "hashing", b))?;
    Ok(ha == hb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::numbered;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    fn exists(f: &Path) -> bool {
        fs::symlink_metadata(f).is_ok()
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("in/a.jpg");
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        fs::write(&src, b"photo bytes").unwrap();
        let dest = t.path().join("done/a.jpg");
        (t, src, dest)
    }

    fn plan_for(src: &Path, dest: &Path) -> MovePlan {
        plan(src, &fs::symlink_metadata(src).unwrap(), dest).unwrap()
    }

    #[test]
    fn same_filesystem_move_never_replaces() {
        let (_t, src, dest) = setup();
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"older").unwrap();
        let p = plan_for(&src, &dest);
        assert_eq!(p.dest, numbered(&dest, 1));
        // Someone takes the planned name before the move: refused, nothing replaced.
        fs::write(&p.dest, b"intruder").unwrap();
        let e = execute(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p.dest).unwrap(), b"intruder");
        assert!(exists(&src));
        let p = plan_for(&src, &dest);
        execute(&p).unwrap();
        assert_eq!(fs::read(&p.dest).unwrap(), b"photo bytes");
        assert_eq!(fs::read(&dest).unwrap(), b"older");
        assert!(!exists(&src));
    }

    #[test]
    fn a_source_replaced_after_the_plan_is_not_moved() {
        let (_t, src, dest) = setup();
        let p = plan_for(&src, &dest);
        let tmp = src.with_file_name("new.jpg");
        fs::write(&tmp, b"a new scan").unwrap();
        fs::rename(&tmp, &src).unwrap();
        assert!(execute(&p).is_err());
        assert_eq!(fs::read(&src).unwrap(), b"a new scan");
        assert!(!exists(&p.dest) && !exists(&p.temp));
        assert_eq!(settle(&p).unwrap(), Settled::Undone);
        assert_eq!(fs::read(&src).unwrap(), b"a new scan");
    }

    #[test]
    fn settle_completes_a_copy_in_place_and_undoes_a_temp() {
        let (_t, src, dest) = setup();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
        // Copy in place, source not yet unlinked (as a crash after the rename leaves it).
        let p = plan_for(&src, &dest);
        copy_keeping_metadata(&p).unwrap();
        fs::rename(&p.temp, &p.dest).unwrap();
        let m = fs::metadata(&p.dest).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(mtime_ns(&m), p.mtime_ns);
        assert_eq!(settle(&p).unwrap(), Settled::Completed);
        assert!(!exists(&src) && exists(&p.dest));
        assert_eq!(settle(&p).unwrap(), Settled::Completed, "idempotent");

        // Only a temp copy: removed, the source stays.
        let (_t, src, dest) = setup();
        let p = plan_for(&src, &dest);
        copy_keeping_metadata(&p).unwrap();
        assert_eq!(settle(&p).unwrap(), Settled::Undone);
        assert!(exists(&src) && !exists(&p.temp) && !exists(&p.dest));

        // A different file with the same size and mtime at dest is not ours.
        let p = plan_for(&src, &dest);
        fs::write(&p.dest, b"other bytes").unwrap();
        let f = File::options().write(true).open(&p.dest).unwrap();
        f.set_modified(fs::metadata(&src).unwrap().modified().unwrap())
            .unwrap();
        assert_eq!(settle(&p).unwrap(), Settled::Undone);
        assert!(exists(&src));
    }
}
