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

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::kind::ImageKind;

/// Read size: big enough that syscalls vanish, small enough to stay in L2 (as for hashing).
const BUF_SIZE: usize = 256 << 10;

/// Why a file is not a complete image.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    /// The file ends before its structure does; the text says where.
    #[error("{0}")]
    Truncated(String),
    /// The structure is wrong (bad CRC, data where a marker belongs…); the text says how.
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Io(io::Error),
}

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

/// A buffered reader that knows its offset, so messages can say where the file stops.
struct Reader<R> {
    inner: R,
    pos: u64,
}

/// A read that hit the end of the file.
struct Eof;

impl<R: BufRead> Reader<R> {
    fn new(inner: R) -> Self {
        Reader { inner, pos: 0 }
    }

    /// The next buffered bytes; empty at the end of the file.
    fn fill(&mut self) -> Result<&[u8], Incomplete> {
        // Retries EINTR; the second fill_buf returns the buffered bytes without a read.
        loop {
            match self.inner.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Incomplete::Io(e)),
            }
        }
        self.inner.fill_buf().map_err(Incomplete::Io)
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }

    fn u8(&mut self) -> Result<Result<u8, Eof>, Incomplete> {
        let Some(&b) = self.fill()?.first() else {
            return Ok(Err(Eof));
        };
        self.consume(1);
        Ok(Ok(b))
    }

    fn exact<const N: usize>(&mut self) -> Result<Result<[u8; N], Eof>, Incomplete> {
        let mut out = [0u8; N];
        let mut n = 0;
        while n < N {
            let b = self.fill()?;
            if b.is_empty() {
                return Ok(Err(Eof));
            }
            let k = b.len().min(N - n);
            out[n..n + k].copy_from_slice(&b[..k]);
            self.consume(k);
            n += k;
        }
        Ok(Ok(out))
    }

    /// Passes the next `len` bytes to `f`; `Err(Eof)` if the file ends first.
    fn stream(
        &mut self,
        mut len: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<Result<(), Eof>, Incomplete> {
        while len > 0 {
            let b = self.fill()?;
            if b.is_empty() {
                return Ok(Err(Eof));
            }
            let k = usize::try_from(len).map_or(b.len(), |l| l.min(b.len()));
            f(&b[..k]);
            self.consume(k);
            len -= k as u64;
        }
        Ok(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// What the JPEG walk has passed so far, for the message when the file stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JpegAt {
    Headers,
    Scan,
}

fn jpeg_cut(at: JpegAt, pos: u64) -> Incomplete {
    Incomplete::Truncated(match at {
        JpegAt::Headers => format!("JPEG ends at byte {pos}, before its scan data"),
        JpegAt::Scan => {
            format!("JPEG has no EOI marker after its scan data (the file stops at byte {pos})")
        }
    })
}

fn jpeg<R: BufRead>(r: &mut Reader<R>) -> Result<(), Incomplete> {
    let cut = |r: &Reader<R>, at| jpeg_cut(at, r.pos);
    match r.exact::<2>()? {
        Ok([0xFF, 0xD8]) => {}
        Ok(_) => {
            return Err(Incomplete::Damaged(
                "JPEG has no start-of-image marker".into(),
            ));
        }
        Err(Eof) => return Err(cut(r, JpegAt::Headers)),
    }
    let mut at = JpegAt::Headers;
    let mut frame = false;
    // A marker found at the end of entropy-coded data, not yet handled.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => {
                let start = r.pos;
                match r.u8()? {
                    Ok(0xFF) => {}
                    Ok(_) => {
                        return Err(Incomplete::Damaged(format!(
                            "JPEG has data where a marker was expected (at byte {start})"
                        )));
                    }
                    Err(Eof) => return Err(cut(r, at)),
                }
                // Any number of 0xFF fill bytes may precede a marker code.
                loop {
                    match r.u8()? {
                        Ok(0xFF) => {}
                        Ok(m) => break m,
                        Err(Eof) => return Err(cut(r, at)),
                    }
                }
            }
        };
        match marker {
            0xD9 if at == JpegAt::Scan => return Ok(()),
            0xD9 => {
                return Err(Incomplete::Damaged(
                    "JPEG ends (EOI marker) before any scan data".into(),
                ));
            }
            // Stand-alone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 => {
                return Err(Incomplete::Damaged(
                    "JPEG has an invalid marker 0x00".into(),
                ));
            }
            0xD8 => {
                return Err(Incomplete::Damaged(
                    "JPEG has a second start-of-image marker before its end".into(),
                ));
            }
            _ => {}
        }
        let len = match r.exact::<2>()? {
            Ok(b) => u16::from_be_bytes(b),
            Err(Eof) => return Err(cut(r, at)),
        };
        if len < 2 {
            return Err(Incomplete::Damaged(format!(
                "JPEG segment 0xFF{marker:02X} has a length below 2"
            )));
        }
        if r.stream(u64::from(len) - 2, |_| {})?.is_err() {
            return Err(cut(r, at));
        }
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => frame = true,
            0xDA if !frame => {
                return Err(Incomplete::Damaged(
                    "JPEG has scan data before its frame header".into(),
                ));
            }
            0xDA => {
                at = JpegAt::Scan;
                match entropy_data(r)? {
                    Ok(m) => pending = Some(m),
                    Err(Eof) => return Err(cut(r, at)),
                }
            }
            _ => {}
        }
    }
}

/// Skips entropy-coded data up to the next real marker and returns its code. Inside the data
/// 0xFF is always followed by 0x00 (a stuffed byte) or a restart marker; fill bytes (0xFF)
/// may precede a marker.
fn entropy_data<R: BufRead>(r: &mut Reader<R>) -> Result<Result<u8, Eof>, Incomplete> {
    loop {
        let buf = r.fill()?;
        if buf.is_empty() {
            return Ok(Err(Eof));
        }
        let Some(i) = memchr::memchr(0xFF, buf) else {
            let n = buf.len();
            r.consume(n);
            continue;
        };
        r.consume(i + 1);
        let code = loop {
            match r.u8()? {
                Ok(0xFF) => {}
                Ok(c) => break c,
                Err(Eof) => return Ok(Err(Eof)),
            }
        };
        match code {
            0x00 | 0xD0..=0xD7 => {}
            m => return Ok(Ok(m)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PNG

const PNG_SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";
/// The PNG specification's limit on a chunk's length.
const PNG_MAX_CHUNK: u32 = (1 << 31) - 1;

fn png<R: BufRead>(r: &mut Reader<R>) -> Result<(), Incomplete> {
    let ends = |r: &Reader<R>, inside: &str| {
        Incomplete::Truncated(format!(
            "PNG ends before IEND (the file stops at byte {} {inside})",
            r.pos
        ))
    };
    match r.exact::<8>()? {
        Ok(sig) if sig == PNG_SIGNATURE => {}
        Ok(_) => return Err(Incomplete::Damaged("PNG signature is damaged".into())),
        Err(Eof) => return Err(ends(r, "inside its signature")),
    }
    let mut first = true;
    let mut image_data = false;
    loop {
        let head = match r.exact::<8>()? {
            Ok(h) => h,
            Err(Eof) => return Err(ends(r, "where a chunk header should be")),
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let ty = [head[4], head[5], head[6], head[7]];
        let name = String::from_utf8_lossy(&ty).into_owned();
        if !ty.iter().all(u8::is_ascii_alphabetic) {
            return Err(Incomplete::Damaged(format!(
                "PNG has an invalid chunk type at byte {}",
                r.pos - 4
            )));
        }
        if len > PNG_MAX_CHUNK {
            return Err(Incomplete::Damaged(format!(
                "PNG chunk {name} claims {len} bytes, more than a chunk may hold"
            )));
        }
        if first && &ty != b"IHDR" {
            return Err(Incomplete::Damaged("PNG does not start with IHDR".into()));
        }
        first = false;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&ty);
        if r.stream(u64::from(len), |b| crc.update(b))?.is_err() {
            return Err(ends(r, &format!("inside its {name} chunk")));
        }
        let stored = match r.exact::<4>()? {
            Ok(b) => u32::from_be_bytes(b),
            Err(Eof) => return Err(ends(r, &format!("inside the CRC of its {name} chunk"))),
        };
        if crc.finalize() != stored {
            return Err(Incomplete::Damaged(format!(
                "PNG chunk {name} fails its CRC check"
            )));
        }
        match &ty {
            b"IDAT" => image_data = true,
            b"IEND" if image_data => return Ok(()),
            b"IEND" => {
                return Err(Incomplete::Damaged(
                    "PNG has no image data (IDAT) before IEND".into(),
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, RgbImage};

    fn picture(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + y) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
        })
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        picture(w, h)
            .write_to(&mut io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    }

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        picture(w, h)
            .write_to(&mut io::Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    }

    fn truncated(r: Result<(), Incomplete>) -> String {
        match r {
            Err(Incomplete::Truncated(s)) => s,
            other => panic!("expected truncated, got {other:?}"),
        }
    }

    fn damaged(r: Result<(), Incomplete>) -> String {
        match r {
            Err(Incomplete::Damaged(s)) => s,
            other => panic!("expected damaged, got {other:?}"),
        }
    }

    /// Every cut of `data` shorter than `min_ok` fails; `data` itself passes.
    fn every_cut_fails(data: &[u8], kind: ImageKind) {
        check_complete_bytes(data, kind).unwrap();
        for n in 0..data.len() {
            let r = check_complete_bytes(&data[..n], kind);
            assert!(r.is_err(), "{kind} cut at {n} of {} passed", data.len());
        }
    }

    #[test]
    fn jpeg_cut_at_every_offset_fails() {
        every_cut_fails(&jpeg_bytes(48, 32), ImageKind::Jpeg);
    }

    #[test]
    fn png_cut_at_every_offset_fails() {
        every_cut_fails(&png_bytes(40, 30), ImageKind::Png);
    }

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
    fn png_with_a_bad_crc_fails() {
        let mut p = png_bytes(40, 30);
        // A bit flipped inside IDAT's data.
        let idat = p.windows(4).position(|w| w == b"IDAT").unwrap();
        p[idat + 10] ^= 0x01;
        let m = damaged(check_complete_bytes(&p, ImageKind::Png));
        assert_eq!(m, "PNG chunk IDAT fails its CRC check");
    }

    #[test]
    fn png_without_idat_or_with_a_bad_type_fails() {
        let p = png_bytes(40, 30);
        // Signature + IHDR (8 + 25 bytes), then the IEND chunk only.
        let mut no_idat = p[..33].to_vec();
        no_idat.extend_from_slice(&p[p.len() - 12..]);
        assert!(damaged(check_complete_bytes(&no_idat, ImageKind::Png)).contains("no image data"));
        let mut bad = p.clone();
        bad[37] = b'1';
        assert!(damaged(check_complete_bytes(&bad, ImageKind::Png)).contains("chunk type"));
    }

    /// Made by libjpeg-turbo's `cjpeg -quality 85` with `-progressive`, `-restart 1` and both
    /// (a 64×48 gradient): real encoder output the image crate cannot write.
    const FIXTURES: [(&str, &[u8]); 3] = [
        ("progressive", include_bytes!("testdata/progressive.jpg")),
        ("restart", include_bytes!("testdata/restart.jpg")),
        (
            "progressive-restart",
            include_bytes!("testdata/progressive-restart.jpg"),
        ),
    ];

    #[test]
    fn progressive_and_restart_marker_jpegs_pass_and_cuts_fail() {
        for (name, data) in FIXTURES {
            let img = image::load_from_memory(data).unwrap();
            assert_eq!((img.width(), img.height()), (64, 48), "{name}");
            let sos = data.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
            let rst = data
                .windows(2)
                .filter(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
                .count();
            if name.starts_with("progressive") {
                assert!(sos > 1, "{name}: {sos} scans");
            }
            if name.ends_with("restart") {
                assert!(rst > 0, "{name}: no restart markers");
            }
            every_cut_fails(data, ImageKind::Jpeg);
        }
    }

    /// A minimal progressive JPEG laid out by hand: several scans (SOS segments) separated by
    /// a DHT, as progressive encoders write them. The walk only needs the layout.
    fn progressive_layout() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        // SOF2 (progressive), 8-bit, 16x16, one component.
        v.extend_from_slice(&[0xFF, 0xC2, 0, 11, 8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
        let scan = |v: &mut Vec<u8>, data: &[u8]| {
            v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0]);
            v.extend_from_slice(data);
        };
        scan(&mut v, &[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        v.extend_from_slice(&[0xFF, 0xC4, 0, 4, 0x10, 0]); // a DHT between scans
        scan(&mut v, &[0x78, 0x9A, 0xFF, 0xFF, 0x00]);
        scan(&mut v, &[0xBC]);
        v.extend_from_slice(&[0xFF, 0xFF, 0xD9]); // fill byte, then EOI
        v
    }

    #[test]
    fn progressive_layout_passes_and_cuts_fail() {
        every_cut_fails(&progressive_layout(), ImageKind::Jpeg);
    }

    #[test]
    fn jpeg_eoi_before_any_scan_fails() {
        let m = damaged(check_complete_bytes(
            &[0xFF, 0xD8, 0xFF, 0xD9],
            ImageKind::Jpeg,
        ));
        assert!(m.contains("before any scan data"), "{m}");
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
