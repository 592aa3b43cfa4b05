//! The JPEG walk: marker by marker through the headers to the frame and its scan data,
//! through the entropy-coded data of every scan (a progressive file has several) to the EOI
//! marker. Segment payloads are skipped, not parsed: only the layout tells whether the file
//! is whole.

use std::io::BufRead;

use super::reader::{Eof, Incomplete, Reader};

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

fn damaged(what: &str) -> Incomplete {
    Incomplete::Damaged(what.into())
}

/// Walks a JPEG from its SOI marker to its EOI marker.
pub(super) fn jpeg<R: BufRead>(r: &mut Reader<R>) -> Result<(), Incomplete> {
    match r.exact::<2>()? {
        Ok([0xFF, 0xD8]) => {}
        Ok(_) => return Err(damaged("JPEG has no start-of-image marker")),
        Err(Eof) => return Err(jpeg_cut(JpegAt::Headers, r.pos)),
    }
    let mut at = JpegAt::Headers;
    let mut frame = false;
    // A marker found at the end of entropy-coded data, not yet handled.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => next_marker(r, at)?,
        };
        match marker {
            0xD9 if at == JpegAt::Scan => return Ok(()),
            0xD9 => return Err(damaged("JPEG ends (EOI marker) before any scan data")),
            // Stand-alone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 => return Err(damaged("JPEG has an invalid marker 0x00")),
            0xD8 => {
                return Err(damaged(
                    "JPEG has a second start-of-image marker before its end",
                ));
            }
            _ => {}
        }
        skip_segment(r, marker, at)?;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => frame = true,
            0xDA if !frame => return Err(damaged("JPEG has scan data before its frame header")),
            0xDA => {
                at = JpegAt::Scan;
                match entropy_data(r)? {
                    Ok(m) => pending = Some(m),
                    Err(Eof) => return Err(jpeg_cut(at, r.pos)),
                }
            }
            _ => {}
        }
    }
}

/// Reads the next marker code where the layout puts a marker: 0xFF, any number of 0xFF fill
/// bytes, then the code.
fn next_marker<R: BufRead>(r: &mut Reader<R>, at: JpegAt) -> Result<u8, Incomplete> {
    let start = r.pos;
    match r.u8()? {
        Ok(0xFF) => {}
        Ok(_) => {
            return Err(Incomplete::Damaged(format!(
                "JPEG has data where a marker was expected (at byte {start})"
            )));
        }
        Err(Eof) => return Err(jpeg_cut(at, r.pos)),
    }
    loop {
        match r.u8()? {
            Ok(0xFF) => {}
            Ok(m) => return Ok(m),
            Err(Eof) => return Err(jpeg_cut(at, r.pos)),
        }
    }
}

/// Skips the payload of the segment that `marker` starts, by its length field.
fn skip_segment<R: BufRead>(r: &mut Reader<R>, marker: u8, at: JpegAt) -> Result<(), Incomplete> {
    let len = match r.exact::<2>()? {
        Ok(b) => u16::from_be_bytes(b),
        Err(Eof) => return Err(jpeg_cut(at, r.pos)),
    };
    if len < 2 {
        return Err(Incomplete::Damaged(format!(
            "JPEG segment 0xFF{marker:02X} has a length below 2"
        )));
    }
    if r.stream(u64::from(len) - 2, |_| {})?.is_err() {
        return Err(jpeg_cut(at, r.pos));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::super::test_util::{damaged, every_cut_fails, jpeg_bytes};
    use crate::media::{ImageKind, check_complete_bytes};

    #[test]
    fn jpeg_cut_at_every_offset_fails() {
        every_cut_fails(&jpeg_bytes(48, 32), ImageKind::Jpeg);
    }

    /// Made by libjpeg-turbo's `cjpeg -quality 85` with `-progressive`, `-restart 1` and both
    /// (a 64×48 gradient): real encoder output the image crate cannot write.
    const FIXTURES: [(&str, &[u8]); 3] = [
        ("progressive", include_bytes!("../testdata/progressive.jpg")),
        ("restart", include_bytes!("../testdata/restart.jpg")),
        (
            "progressive-restart",
            include_bytes!("../testdata/progressive-restart.jpg"),
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
}
