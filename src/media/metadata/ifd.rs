//! EXIF read and re-written for the result: only the primary image's IFDs (IFD0, Exif, GPS,
//! Interop) are written, so the IFD1 thumbnail is dropped; the dimensions, the resolution,
//! the orientation and `Software` are set for the result's pixels; tags that describe a TIFF's
//! own pixel data (strips, compression, samples) never reach a result.

use std::collections::HashSet;
use std::io::Cursor;

use exif::experimental::Writer;
use exif::{Context, Exif, Field, In, Rational, Tag, Value};

use super::Options;
use super::geometry::{Density, Geometry};

/// TIFF tags holding an XMP packet and an ICC profile.
pub(super) const TIFF_XMP_TAG: u16 = 700;
pub(super) const TIFF_ICC_TAG: u16 = 34675;

/// IFD0 tags about a TIFF's own pixel data or carried separately (XMP, IPTC, ICC, Photoshop):
/// never copied as EXIF.
const STRUCTURE: &[u16] = &[
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 288,
    289, 290, 291, 292, 293, 317, 320, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 512,
    513, 514, 515, 517, 518, 519, 520, 521, 530, 531, 532, 700, 33723, 34377, 34675, 37724,
];

/// Parses a TIFF structure (EXIF, or a whole TIFF file), keeping what is readable.
pub(super) fn parse(data: Vec<u8>) -> Result<Exif, exif::Error> {
    exif::Reader::new()
        .continue_on_error(true)
        .read_raw(data)
        .or_else(|e| e.distill_partial_result(|_| {}))
}

/// The source's EXIF `Orientation`, 1 when absent or out of range.
pub(super) fn orientation(e: &Exif) -> u16 {
    e.get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .filter(|o| (1..=8).contains(o))
        .map_or(1, |o| o as u16)
}

fn rational(e: &Exif, tag: Tag) -> Option<(u32, u32)> {
    match &e.get_field(tag, In::PRIMARY)?.value {
        Value::Rational(v) => v.first().map(|r| (r.num, r.denom)),
        _ => None,
    }
}

/// The print density EXIF states (X/YResolution, ResolutionUnit).
pub(super) fn density(e: &Exif) -> Option<Density> {
    let unit = e
        .get_field(Tag::ResolutionUnit, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0));
    Density::from_exif(
        rational(e, Tag::XResolution)?,
        rational(e, Tag::YResolution)?,
        unit,
    )
}

/// A field's value as the bytes it was stored as (bytes, text, or 32-bit words in the file's
/// byte order, as IPTC in TIFF often is); `None` for other types.
pub(super) fn value_bytes(v: &Value, little_endian: bool) -> Option<Vec<u8>> {
    match v {
        Value::Byte(b) | Value::Undefined(b, _) if !b.is_empty() => Some(b.clone()),
        Value::Ascii(parts) => Some(parts.concat()),
        Value::Long(words) => Some(
            words
                .iter()
                .flat_map(|w| {
                    if little_endian {
                        w.to_le_bytes()
                    } else {
                        w.to_be_bytes()
                    }
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The fields worth copying: the primary image's, less the structure tags and those whose
/// type the writer cannot write (unknown types), each tag once.
fn copyable(e: &Exif) -> impl Iterator<Item = &Field> {
    let mut seen = HashSet::new();
    e.fields().filter(move |f| {
        f.ifd_num == In::PRIMARY
            && !(f.tag.context() == Context::Tiff && STRUCTURE.contains(&f.tag.number()))
            && !matches!(f.value, Value::Unknown(..))
            && seen.insert(f.tag)
    })
}

fn encode(fields: &[Field], little_endian: bool) -> Result<Vec<u8>, String> {
    let mut w = Writer::new();
    for f in fields {
        w.push_field(f);
    }
    let mut out = Cursor::new(Vec::new());
    w.write(&mut out, little_endian)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A TIFF's metadata tags as plain EXIF, unchanged otherwise (the fixes come later).
pub(super) fn plain(e: &Exif) -> Result<Vec<u8>, String> {
    let fields: Vec<Field> = copyable(e).cloned().collect();
    encode(&fields, e.little_endian())
}

/// The result's X and Y resolution, from the source's scaled by the upscale of each axis.
/// Resolution is per stored axis: a turned result takes the other axis's value.
pub(super) fn resolution(e: &Exif, g: &Geometry) -> Option<((u32, u32), (u32, u32))> {
    let (sx, sy) = (rational(e, Tag::XResolution), rational(e, Tag::YResolution));
    let (x, y) = (sx.or(sy)?, sy.or(sx)?);
    let (x, y) = if g.swapped() { (y, x) } else { (x, y) };
    Some((g.scale_rational(x, true), g.scale_rational(y, false)))
}

/// The EXIF for the result: the source's, fixed for the result's pixels (see the module doc).
pub(super) fn fixed(e: &Exif, g: &Geometry, opts: &Options) -> Result<Vec<u8>, String> {
    let replaced = [
        Tag::Orientation,
        Tag::XResolution,
        Tag::YResolution,
        Tag::PixelXDimension,
        Tag::PixelYDimension,
        Tag::Software,
    ];
    let mut fields: Vec<Field> = copyable(e)
        .filter(|f| !(opts.strip_gps && f.tag.context() == Context::Gps))
        .filter(|f| !replaced.contains(&f.tag))
        .cloned()
        .collect();
    let field = |tag, value| Field {
        tag,
        ifd_num: In::PRIMARY,
        value,
    };
    if let Some(o) = e.get_field(Tag::Orientation, In::PRIMARY) {
        let value = if g.upright() {
            Value::Short(vec![1])
        } else {
            o.value.clone()
        };
        fields.push(field(Tag::Orientation, value));
    }
    if let Some(res) = resolution(e, g) {
        for (tag, (num, denom)) in [(Tag::XResolution, res.0), (Tag::YResolution, res.1)] {
            fields.push(field(tag, Value::Rational(vec![Rational { num, denom }])));
        }
    }
    fields.push(field(Tag::PixelXDimension, Value::Long(vec![g.result.0])));
    fields.push(field(Tag::PixelYDimension, Value::Long(vec![g.result.1])));
    let software = opts.software.as_bytes().to_vec();
    fields.push(field(Tag::Software, Value::Ascii(vec![software])));
    encode(&fields, e.little_endian())
}
