//! The PNG walk: the signature, then chunk by chunk (length, type, data, CRC) to IEND, with
//! IHDR first and image data (IDAT) before the end. Every chunk's CRC is checked as its data
//! streams past, so a damaged byte anywhere is caught without decoding.

use std::io::BufRead;

use super::reader::{Eof, Incomplete, Reader};

const PNG_SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";
/// The PNG specification's limit on a chunk's length.
const PNG_MAX_CHUNK: u32 = (1 << 31) - 1;

pub(super) fn png<R: BufRead>(r: &mut Reader<R>) -> Result<(), Incomplete> {
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
    use super::super::test_util::{damaged, every_cut_fails, png_bytes};
    use crate::media::{ImageKind, check_complete_bytes};

    #[test]
    fn png_cut_at_every_offset_fails() {
        every_cut_fails(&png_bytes(40, 30), ImageKind::Png);
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
}
