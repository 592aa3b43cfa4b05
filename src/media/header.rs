//! Header parsers that read an image's width and height without decoding a single pixel: a
//! JPEG is walked marker by marker (skipping segments by their length) up to its frame header,
//! a PNG's IHDR chunk sits at a fixed place. Both read a few kilobytes at most, so a 2 GB file
//! or a PNG claiming 100000×100000 px costs the same as a thumbnail.

use std::io::{self, Read, Seek, SeekFrom};

use super::MAX_SIDE;

/// How far into a JPEG the frame header may be. Real files carry at most a few hundred
/// kilobytes of metadata (EXIF, ICC, XMP) before it; past this the file is not a photo.
const JPEG_SCAN_LIMIT: u64 = 16 << 20;

#[derive(Debug)]
pub(crate) enum HeaderError {
    /// The file ends inside the header.
    Truncated,
    /// The header is malformed; the text says how.
    Bad(&'static str),
    /// Reading failed.
    Io(io::Error),
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HeaderError::Truncated
        } else {
            HeaderError::Io(e)
        }
    }
}

fn read_u8(r: &mut impl Read) -> Result<u8, HeaderError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> Result<u16, HeaderError> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

/// Width and height from a JPEG's frame header (SOFn). `r` is positioned at the start.
pub(crate) fn jpeg_dimensions<R: Read + Seek>(r: &mut R) -> Result<(u32, u32), HeaderError> {
    if read_u16(r)? != 0xFFD8 {
        return Err(HeaderError::Bad("no start-of-image marker"));
    }
    let mut pos: u64 = 2;
    loop {
        if pos > JPEG_SCAN_LIMIT {
            return Err(HeaderError::Bad("no frame header in the first 16 MiB"));
        }
        if read_u8(r)? != 0xFF {
            return Err(HeaderError::Bad("data where a marker was expected"));
        }
        pos += 1;
        // Any number of 0xFF fill bytes may precede a marker code.
        let mut marker = read_u8(r)?;
        pos += 1;
        while marker == 0xFF {
            marker = read_u8(r)?;
            pos += 1;
            if pos > JPEG_SCAN_LIMIT {
                return Err(HeaderError::Bad("no frame header in the first 16 MiB"));
            }
        }
        match marker {
            // Stand-alone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 => return Err(HeaderError::Bad("invalid marker 0x00")),
            0xD8 => return Err(HeaderError::Bad("a second start-of-image marker")),
            0xD9 => return Err(HeaderError::Bad("the image ends before its frame header")),
            0xDA => return Err(HeaderError::Bad("scan data before the frame header")),
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let len = read_u16(r)?;
                if len < 8 {
                    return Err(HeaderError::Bad("frame header too short"));
                }
                let _precision = read_u8(r)?;
                let height = read_u16(r)?;
                let width = read_u16(r)?;
                // Height 0 means "given later by a DNL marker": unusual enough to refuse.
                if width == 0 || height == 0 {
                    return Err(HeaderError::Bad("zero width or height in the frame header"));
                }
                return Ok((u32::from(width), u32::from(height)));
            }
            _ => {
                let len = read_u16(r)?;
                if len < 2 {
                    return Err(HeaderError::Bad("segment length below 2"));
                }
                let skip = u64::from(len) - 2;
                r.seek(SeekFrom::Current(skip as i64))?;
                pos += 2 + skip;
            }
        }
    }
}

/// Width and height from a PNG's IHDR chunk. `r` is positioned at the start.
///
/// The size is returned before the rest of IHDR is validated: a picture too large must be
/// refused for its size (the one thing the user can act on), whatever else is wrong with it.
pub(crate) fn png_dimensions<R: Read>(r: &mut R) -> Result<(u32, u32), HeaderError> {
    // Signature (8) + length (4) + "IHDR" (4) + data (13) + CRC (4).
    let mut b = [0u8; 33];
    r.read_exact(&mut b)?;
    let be32 = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if &b[12..16] != b"IHDR" {
        return Err(HeaderError::Bad("the first chunk is not IHDR"));
    }
    if be32(8) != 13 {
        return Err(HeaderError::Bad("IHDR has the wrong length"));
    }
    let (width, height) = (be32(16), be32(20));
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(HeaderError::Bad("width or height out of range"));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Ok((width, height));
    }
    let (depth, colour) = (b[24], b[25]);
    let depth_ok = match colour {
        0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
        3 => matches!(depth, 1 | 2 | 4 | 8),
        2 | 4 | 6 => matches!(depth, 8 | 16),
        _ => false,
    };
    if !depth_ok {
        return Err(HeaderError::Bad("invalid bit depth or colour type"));
    }
    if crc32(&b[12..29]) != be32(29) {
        return Err(HeaderError::Bad("IHDR checksum mismatch"));
    }
    Ok((width, height))
}

/// CRC-32 (ISO 3309, as PNG uses), bitwise: it only ever sees 17 bytes.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn png_header(w: u32, h: u32, crc_ok: bool) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&v[12..29]) ^ u32::from(!crc_ok);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn png_ihdr() {
        let ok = png_dimensions(&mut Cursor::new(png_header(640, 480, true)));
        assert_eq!(ok.unwrap(), (640, 480));
        let bad_crc = png_dimensions(&mut Cursor::new(png_header(640, 480, false)));
        assert!(matches!(bad_crc, Err(HeaderError::Bad(m)) if m.contains("checksum")));
        // Too large is reported as a size whatever the checksum says.
        for crc_ok in [true, false] {
            let big = png_dimensions(&mut Cursor::new(png_header(100_000, 100_000, crc_ok)));
            assert_eq!(big.unwrap(), (100_000, 100_000));
        }
        let cut = png_dimensions(&mut Cursor::new(&png_header(640, 480, true)[..20]));
        assert!(matches!(cut, Err(HeaderError::Truncated)));
    }

    #[test]
    fn jpeg_walks_segments_to_the_frame_header() {
        let mut v = vec![0xFF, 0xD8];
        // APP0 with 14 bytes of payload, fill bytes, an APP1, then SOF2 (progressive).
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
        v.extend_from_slice(&[0u8; 14]);
        v.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xE1, 0x00, 0x04, 1, 2]);
        v.extend_from_slice(&[0xFF, 0xC2, 0x00, 0x11, 8, 0x01, 0x2C, 0x02, 0x58, 3]);
        assert_eq!(jpeg_dimensions(&mut Cursor::new(&v)).unwrap(), (600, 300));
        // Cut inside the frame header.
        let cut = jpeg_dimensions(&mut Cursor::new(&v[..v.len() - 3]));
        assert!(matches!(cut, Err(HeaderError::Truncated)));
        // Cut inside the skipped APP0 payload.
        let cut = jpeg_dimensions(&mut Cursor::new(&v[..10]));
        assert!(matches!(cut, Err(HeaderError::Truncated)));
    }

    #[test]
    fn jpeg_without_frame_header_is_bad() {
        let v = [0xFF, 0xD8, 0xFF, 0xD9];
        assert!(matches!(
            jpeg_dimensions(&mut Cursor::new(&v)),
            Err(HeaderError::Bad(_))
        ));
        let zeros = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0];
        assert!(matches!(
            jpeg_dimensions(&mut Cursor::new(&zeros)),
            Err(HeaderError::Bad(_))
        ));
    }
}
