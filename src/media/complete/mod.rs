//! The completeness check run just before an upload: a photo cut short (a copy or download
//! interrupted, `head -c`) or with damaged structure is refused locally instead of being sent
//! to a service that may charge for refusing it. It walks the file's structure, not its
//! pixels: a JPEG marker by marker to its scan data, through the entropy-coded data (and any
//! further scans of a progressive file) to the EOI marker; a PNG chunk by chunk, checking each
//! length and CRC, to IEND. A full decode would also catch damaged JPEG pixel data, but costs
//! over a hundred times as much CPU (170-230 ms against 1-3 ms for 24 MP) and the whole image
//! in memory (BENCHMARKS.md, section 11); truncation, the common failure, always breaks the
//! structure.
//!
//! What follows EOI or IEND is not read: phones append data there (a "motion photo" video,
//! MPF secondary images), and decoders ignore it.
//!
//! Rooms: `jpeg` and `png` hold the two walks, `reader` the offset-keeping reader they share
//! and the error they return; this file opens the file and picks the walk.

use std::fs::OpenOptions;
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::kind::ImageKind;
use jpeg::jpeg;
use png::png;
pub use reader::Incomplete;
use reader::Reader;

mod jpeg;
mod png;
mod reader;
#[cfg(test)]
mod test_util;

/// Read size: big enough that syscalls vanish, small enough to stay in L2 (as for hashing).
const BUF_SIZE: usize = 256 << 10;

/// Checks that the `kind` image at `path` is structurally complete. Blocking: reads the file
/// up to its EOI marker or IEND chunk.
pub fn check_complete(path: &Path, kind: ImageKind) -> Result<(), Incomplete> {
    // O_NONBLOCK and fstat, as in `probe`: a file swapped for a FIFO since then must not block
    // this thread forever.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Incomplete::Io)?;
    if !file.metadata().map_err(Incomplete::Io)?.is_file() {
        return Err(Incomplete::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is no longer a regular file",
        )));
    }
    let mut r = Reader::new(BufReader::with_capacity(BUF_SIZE, file));
    match kind {
        ImageKind::Jpeg => jpeg(&mut r),
        ImageKind::Png => png(&mut r),
    }
}

/// Checks bytes already in memory (tests, and callers that hold the file).
pub fn check_complete_bytes(data: &[u8], kind: ImageKind) -> Result<(), Incomplete> {
    let mut r = Reader::new(data);
    match kind {
        ImageKind::Jpeg => jpeg(&mut r),
        ImageKind::Png => png(&mut r),
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{jpeg_bytes, png_bytes, truncated};
    use super::*;

    #[test]
    fn messages_say_what_is_wrong() {
        let j = jpeg_bytes(64, 64);
        let m = truncated(check_complete_bytes(&j[..j.len() / 2], ImageKind::Jpeg));
        assert!(
            m.starts_with("JPEG has no EOI marker after its scan data"),
            "{m}"
        );
        let m = truncated(check_complete_bytes(&j[..20], ImageKind::Jpeg));
        assert!(m.contains("before its scan data"), "{m}");
        let p = png_bytes(64, 64);
        let m = truncated(check_complete_bytes(&p[..p.len() - 20], ImageKind::Png));
        assert!(m.starts_with("PNG ends before IEND"), "{m}");
    }

    #[test]
    fn trailing_data_after_eoi_or_iend_is_accepted() {
        // A motion photo carries a video after EOI; tools append padding after IEND.
        for (mut data, kind) in [
            (jpeg_bytes(48, 32), ImageKind::Jpeg),
            (png_bytes(40, 30), ImageKind::Png),
        ] {
            data.extend_from_slice(b"\0\0\0\x18ftypmp42 trailing bytes \xFF\xD8\xFF");
            check_complete_bytes(&data, kind).unwrap();
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.jpg");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // No writer ever comes: a blocking open would hang the test here.
        let r = check_complete(&fifo, ImageKind::Jpeg);
        assert!(
            matches!(r, Err(Incomplete::Io(ref e)) if e.kind() == io::ErrorKind::InvalidInput),
            "{r:?}"
        );
    }

    #[test]
    fn files_are_read_through_the_buffer_boundaries() {
        // Larger than BUF_SIZE, so chunk data and scan data cross buffer refills.
        let dir = tempfile::tempdir().unwrap();
        for (data, kind, name) in [
            (png_bytes(700, 500), ImageKind::Png, "a.png"),
            (jpeg_bytes(1200, 900), ImageKind::Jpeg, "a.jpg"),
        ] {
            assert!(data.len() > BUF_SIZE, "{name}: {}", data.len());
            let path = dir.path().join(name);
            std::fs::write(&path, &data).unwrap();
            check_complete(&path, kind).unwrap();
            for cut in [
                data.len() - 1,
                data.len() - 3,
                BUF_SIZE + 1,
                BUF_SIZE - 1,
                100,
            ] {
                std::fs::write(&path, &data[..cut]).unwrap();
                assert!(
                    matches!(check_complete(&path, kind), Err(Incomplete::Truncated(_))),
                    "{name} cut at {cut}"
                );
            }
        }
        assert!(matches!(
            check_complete(&dir.path().join("missing.jpg"), ImageKind::Jpeg),
            Err(Incomplete::Io(_))
        ));
    }
}
