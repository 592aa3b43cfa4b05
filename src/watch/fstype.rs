//! Which filesystem a watch folder is on. inotify only sees changes made through the local
//! kernel: on network filesystems (NFS, SMB/CIFS, 9P, AFS, Ceph…) and FUSE mounts, files
//! written by other machines or by the FUSE daemon raise no event, so `poll = "auto"` polls
//! those folders instead.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs(2)` magic numbers of filesystems whose changes inotify may miss, with a name for
/// the log.
const REMOTE: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9P"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "kAFS"),
    (0x00C3_6400, "Ceph"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x786F_4256, "VirtualBox shared folder"),
];

/// The name of a network or FUSE filesystem, or `None` for a local one.
pub fn remote_name(f_type: u32) -> Option<&'static str> {
    REMOTE.iter().find(|(m, _)| *m == f_type).map(|(_, n)| *n)
}

/// The `statfs` magic number of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> io::Result<u32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `buf` a properly sized out-parameter.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is a signed word of varying width; the magic numbers are 32-bit.
    Ok(buf.f_type as u64 as u32)
}

/// The remote filesystem `path` is on, if any (an unreadable path counts as local: the
/// folder's own checks report it).
pub fn remote_fs(path: &Path) -> Option<&'static str> {
    fs_magic(path).ok().and_then(remote_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(remote_name(0x6969), Some("NFS"));
        assert_eq!(remote_name(0xFF53_4D42), Some("CIFS"));
        assert_eq!(remote_name(0xFE53_4D42), Some("SMB2"));
        assert_eq!(remote_name(0x6573_5546), Some("FUSE"));
        assert_eq!(remote_name(0x0102_1997), Some("9P"));
        assert_eq!(remote_name(0x00C3_6400), Some("Ceph"));
        // ext4, xfs, btrfs, tmpfs, overlayfs are local.
        for local in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert_eq!(remote_name(local), None, "{local:#x}");
        }
    }

    #[test]
    fn statfs_of_a_real_dir() {
        let t = tempfile::tempdir().unwrap();
        assert!(fs_magic(t.path()).is_ok());
        assert!(fs_magic(&t.path().join("missing")).is_err());
    }
}
