//! Reading what a source carries: EXIF, XMP, IPTC and ICC from JPEG segments, PNG chunks or
//! TIFF tags, its print density (JFIF, `pHYs`) and its stored pixel dimensions.

use bytes::Bytes;
use img_parts::jpeg::Jpeg;
use img_parts::png::{Png, PngChunk};
use img_parts::{ImageEXIF, ImageICC};

use super::MetadataError;
use super::geometry::Density;
use super::{ifd, iptc};

/// The APP1 prefix of an XMP packet in JPEG, and the PNG iTXt keyword of one.
pub(super) const XMP_JPEG_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
pub(super) const XMP_PNG_KEYWORD: &[u8] = b"XML:com.adobe.xmp";
/// The PNG text keyword ImageMagick and ExifTool use for IPTC.
pub(super) const IPTC_PNG_KEYWORD: &[u8] = b"Raw profile type iptc";
/// A PNG text chunk inflated past this is not metadata.
const MAX_TEXT: usize = 16 << 20;

/// Containers metadata is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Jpeg,
    Png,
    Tiff,
}

pub(super) fn kind(head: &[u8]) -> Option<SourceKind> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceKind::Jpeg)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(SourceKind::Png)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(SourceKind::Tiff)
    } else {
        None
    }
}

/// What a source carries, as read from its container.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    /// EXIF as a TIFF structure (no `Exif\0\0` prefix).
    pub exif: Option<Vec<u8>>,
    /// The XMP packet.
    pub xmp: Option<Vec<u8>>,
    /// IPTC-IIM records (the Photoshop 0x0404 resource's data).
    pub iptc: Option<Vec<u8>>,
    pub icc: Option<Vec<u8>>,
    /// The container's print density (JFIF or `pHYs`), when it states a unit.
    pub density: Option<Density>,
    /// Stored pixel dimensions.
    pub dims: (u32, u32),
    /// Parts present but unreadable, left out.
    pub warnings: Vec<String>,
}

/// Reads everything a JPEG, PNG or TIFF source carries.
pub fn read(src: &[u8]) -> Result<Carried, MetadataError> {
    match kind(src) {
        Some(SourceKind::Jpeg) => read_jpeg(src),
        Some(SourceKind::Png) => read_png(src),
        Some(SourceKind::Tiff) => read_tiff(src),
        None => Err(MetadataError::UnknownSource),
    }
}

fn damaged(kind: &'static str, detail: impl ToString) -> MetadataError {
    MetadataError::Source {
        kind,
        detail: detail.to_string(),
    }
}

fn read_jpeg(src: &[u8]) -> Result<Carried, MetadataError> {
    let jpeg = Jpeg::from_bytes(Bytes::copy_from_slice(src)).map_err(|e| damaged("JPEG", e))?;
    let (w, h) = jpeg
        .dimensions()
        .ok_or_else(|| damaged("JPEG", "no frame header"))?;
    let mut c = Carried {
        exif: jpeg.exif().map(|b| b.to_vec()),
        icc: jpeg.icc_profile().map(|b| b.to_vec()),
        dims: (w as u32, h as u32),
        ..Carried::default()
    };
    for seg in jpeg.segments() {
        let body = seg.contents();
        match seg.marker() {
            0xE0 if body.starts_with(b"JFIF\0") && body.len() >= 12 => {
                let be = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
                c.density = Density::from_jfif(body[7], be(8), be(10));
            }
            0xE1 if body.starts_with(XMP_JPEG_PREFIX) && c.xmp.is_none() => {
                c.xmp = Some(body[XMP_JPEG_PREFIX.len()..].to_vec());
            }
            0xED if c.iptc.is_none() => c.iptc = iptc::from_app13(body),
            _ => {}
        }
    }
    Ok(c)
}

fn read_png(src: &[u8]) -> Result<Carried, MetadataError> {
    let png = Png::from_bytes(Bytes::copy_from_slice(src)).map_err(|e| damaged("PNG", e))?;
    let dims = png
        .dimensions()
        .ok_or_else(|| damaged("PNG", "no IHDR chunk"))?;
    let mut c = Carried {
        exif: png.exif().map(|b| b.to_vec()),
        icc: png.icc_profile().map(|b| b.to_vec()),
        dims,
        ..Carried::default()
    };
    for chunk in png.chunks() {
        let body = chunk.contents();
        match &chunk.kind() {
            b"pHYs" if body.len() == 9 => {
                let be =
                    |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
                c.density = Density::from_phys(be(0), be(4), body[8]);
            }
            b"tEXt" | b"zTXt" | b"iTXt" => match png_text(chunk) {
                Some((k, text)) if k == XMP_PNG_KEYWORD && c.xmp.is_none() => c.xmp = Some(text),
                Some((k, text)) if k == IPTC_PNG_KEYWORD && c.iptc.is_none() => {
                    c.iptc = iptc::from_raw_profile(&text);
                    if c.iptc.is_none() {
                        c.warnings
                            .push("the PNG's IPTC text chunk cannot be read".into());
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(c)
}

/// A PNG text chunk's keyword and text (inflated when compressed); `None` when malformed.
fn png_text(chunk: &PngChunk) -> Option<(&[u8], Vec<u8>)> {
    let body = chunk.contents().as_ref();
    let nul = body.iter().position(|&b| b == 0)?;
    let (keyword, rest) = (&body[..nul], &body[nul + 1..]);
    let inflate =
        |data: &[u8]| miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, MAX_TEXT).ok();
    let text = match &chunk.kind() {
        b"tEXt" => rest.to_vec(),
        b"zTXt" => inflate(rest.get(1..)?)?,
        _ => {
            // iTXt: compression flag, method, language tag\0, translated keyword\0, text.
            let (&flag, rest) = rest.split_first()?;
            let rest = rest.get(1..)?;
            let lang_end = rest.iter().position(|&b| b == 0)?;
            let rest = &rest[lang_end + 1..];
            let tr_end = rest.iter().position(|&b| b == 0)?;
            let text = &rest[tr_end + 1..];
            if flag == 1 {
                inflate(text)?
            } else {
                text.to_vec()
            }
        }
    };
    Some((keyword, text))
}

/// TIFF: the first IFD's metadata tags (XMP 700, IPTC 33723, ICC 34675, Photoshop 34377)
/// and the rest of its tags, less those describing the TIFF's own pixel data, as EXIF.
fn read_tiff(src: &[u8]) -> Result<Carried, MetadataError> {
    let parsed = ifd::parse(src.to_vec()).map_err(|e| damaged("TIFF", e))?;
    let tag = |n: u16| parsed.get_field(exif::Tag(exif::Context::Tiff, n), exif::In::PRIMARY);
    let uint = |n: u16| tag(n).and_then(|f| f.value.get_uint(0));
    let (w, h) = match (uint(256), uint(257)) {
        (Some(w), Some(h)) => (w, h),
        _ => return Err(damaged("TIFF", "no ImageWidth or ImageLength tag")),
    };
    let le = parsed.little_endian();
    let bytes_of = |n: u16| tag(n).and_then(|f| ifd::value_bytes(&f.value, le));
    let iptc = bytes_of(iptc::TIFF_IPTC_TAG)
        .or_else(|| bytes_of(iptc::TIFF_PHOTOSHOP_TAG).and_then(|ps| iptc::from_resources(&ps)));
    let (exif, warnings) = match ifd::plain(&parsed) {
        Ok(blob) => (Some(blob), Vec::new()),
        Err(e) => (
            None,
            vec![format!("the TIFF's EXIF tags cannot be copied ({e})")],
        ),
    };
    Ok(Carried {
        exif,
        xmp: bytes_of(ifd::TIFF_XMP_TAG),
        iptc,
        icc: bytes_of(ifd::TIFF_ICC_TAG),
        density: None,
        dims: (w, h),
        warnings,
    })
}
