//! Room for results: whether the filesystem an output folder lives on can take a result now
//! (free space, not mounted read-only), asked with `statvfs(2)` before an upload spends a
//! credit on a result that could not be stored, and what a result of a photo may weigh.

use std::io;
use std::path::Path;

use crate::repair::Repair;

/// What the output folder's filesystem can take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes an unprivileged writer may still use (`f_bavail · f_frsize`); `None` when the
    /// filesystem reports no size at all (`f_blocks` 0: some FUSE and network filesystems),
    /// where free space cannot be judged and is not held against an upload.
    pub free: Option<u64>,
    /// Mounted read-only: nothing can be written whatever the free space.
    pub read_only: bool,
    /// This process may create files in the folder (`access(2)`; root always may, unless
    /// read-only). A folder not made yet is judged by its nearest existing ancestor.
    pub writable: bool,
}

/// The room on the filesystem of `dir`, or of its nearest existing ancestor when `dir` does not
/// exist yet (it is created at the first download).
pub fn room(dir: &Path) -> io::Result<Room> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(at.as_os_str()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: access only reads the NUL-terminated path.
    let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    Ok(Room {
        free: (s.f_blocks > 0).then(|| s.f_bavail.saturating_mul(s.f_frsize)),
        read_only: s.f_flag & libc::ST_RDONLY != 0,
        writable,
    })
}

/// Room kept free beyond the expected result, for the temp file's metadata, the directory
/// entry and whatever else shares the disk.
pub(super) const ROOM_MARGIN: u64 = 1024 * 1024;

/// A generous estimate of a result's size for a source of `source_bytes`: the service upscales
/// (super-resolution doubles each side, so four times the pixels) and may encode less tightly,
/// so twice the upscaled source, plus [`ROOM_MARGIN`].
pub fn expected_result_bytes(source_bytes: u64, repair: Repair) -> u64 {
    let scale = repair.result_scale();
    source_bytes
        .saturating_mul(scale * scale * 2)
        .saturating_add(ROOM_MARGIN)
}

/// Whether an I/O error means "this folder cannot take more now": full, over quota, read-only
/// or not writable. Such failures pause uploads instead of paying for results nowhere to go.
pub fn is_no_room(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_of_a_folder_not_made_yet_is_its_parents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let here = room(dir.path()).expect("room");
        let later = room(&dir.path().join("not/yet")).expect("room");
        let (free, later_free) = (here.free.expect("size"), later.free.expect("size"));
        assert!(!here.read_only && here.writable && free > 0);
        // The same filesystem: within what the test itself may have written meanwhile.
        assert!(free.abs_diff(later_free) < 64 * 1024 * 1024);
    }

    #[test]
    fn expected_sizes_grow_with_the_upscale() {
        let sr = expected_result_bytes(1_000_000, Repair::Sr);
        let bg = expected_result_bytes(1_000_000, Repair::Bg);
        assert_eq!(sr, 8_000_000 + ROOM_MARGIN);
        assert_eq!(bg, 2_000_000 + ROOM_MARGIN);
    }

    #[test]
    fn no_room_errors() {
        for kind in [
            io::ErrorKind::StorageFull,
            io::ErrorKind::ReadOnlyFilesystem,
            io::ErrorKind::PermissionDenied,
        ] {
            assert!(is_no_room(&io::Error::from(kind)), "{kind:?}");
        }
        assert!(!is_no_room(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(is_no_room(&io::Error::from_raw_os_error(libc::ENOSPC)));
    }
}
