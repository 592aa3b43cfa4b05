//! Test and benchmark photos carrying every kind of metadata hili copies, generated in memory
//! (no binary fixtures): EXIF with date taken, camera, GPS, orientation 6, 600 dpi and an
//! IFD1 thumbnail; an XMP caption (and GPS and orientation properties); IPTC records; an ICC
//! profile; 600 dpi JFIF density or `pHYs`. Assembled with the container crates directly,
//! not with the code under test.

use std::io::Cursor;

use bytes::Bytes;
use exif::experimental::Writer;
use exif::{Field, In, Rational, Tag, Value};
use image::codecs::jpeg::{JpegEncoder, PixelDensity};
use image::{ImageFormat, RgbImage};
use img_parts::jpeg::{Jpeg, JpegSegment};
use img_parts::png::{Png, PngChunk};
use img_parts::{ImageEXIF, ImageICC};

pub const CAMERA_MAKE: &str = "Hilicam";
pub const CAMERA_MODEL: &str = "HC-1950";
pub const DATE_TAKEN: &str = "1952:07:14 10:30:00";
pub const CAPTION: &str = "Grandmother at the lake, summer 1952";
pub const IPTC_CAPTION: &str = "Lake Constance, family album page 12";
/// Dots per inch of the sample's EXIF and container density.
pub const DPI: u32 = 600;

/// IPTC-IIM records: 2:120 Caption/Abstract.
pub fn iptc_records() -> Vec<u8> {
    let text = IPTC_CAPTION.as_bytes();
    let mut r = vec![0x1C, 2, 120];
    r.extend_from_slice(&(text.len() as u16).to_be_bytes());
    r.extend_from_slice(text);
    r
}

/// A small, structurally plausible ICC profile: its size, `acsp` signature, no tags.
pub fn icc_profile() -> Vec<u8> {
    let mut p = vec![0u8; 132];
    p[..4].copy_from_slice(&132u32.to_be_bytes());
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(b"RGB ");
    p[36..40].copy_from_slice(b"acsp");
    p
}

/// An XMP packet with a caption, an orientation and a GPS position.
pub fn xmp_packet() -> Vec<u8> {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF \
         xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n\
         <rdf:Description rdf:about=\"\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\" \
         xmlns:tiff=\"http://ns.adobe.com/tiff/1.0/\" xmlns:exif=\"http://ns.adobe.com/exif/1.0/\" \
         tiff:Orientation=\"6\" exif:GPSLatitude=\"47,36.5N\">\n\
         <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">{CAPTION}</rdf:li></rdf:Alt>\
         </dc:description>\n<exif:GPSLongitude>9,22.1E</exif:GPSLongitude>\n\
         </rdf:Description>\n</rdf:RDF></x:xmpmeta>\n<?xpacket end=\"w\"?>"
    )
    .into_bytes()
}

fn ascii(tag: Tag, s: &str) -> Field {
    field(tag, Value::Ascii(vec![s.as_bytes().to_vec()]))
}

fn field(tag: Tag, value: Value) -> Field {
    Field {
        tag,
        ifd_num: In::PRIMARY,
        value,
    }
}

fn rationals(v: &[(u32, u32)]) -> Value {
    Value::Rational(
        v.iter()
            .map(|&(num, denom)| Rational { num, denom })
            .collect(),
    )
}

/// EXIF (a TIFF structure) for a `w`×`h` photo, with an IFD1 JPEG thumbnail.
pub fn exif(w: u32, h: u32) -> Vec<u8> {
    let fields = [
        ascii(Tag::Make, CAMERA_MAKE),
        ascii(Tag::Model, CAMERA_MODEL),
        ascii(Tag::Software, "Hilicam firmware 1.0"),
        ascii(Tag::DateTimeOriginal, DATE_TAKEN),
        field(Tag::Orientation, Value::Short(vec![6])),
        field(Tag::XResolution, rationals(&[(DPI, 1)])),
        field(Tag::YResolution, rationals(&[(DPI, 1)])),
        field(Tag::ResolutionUnit, Value::Short(vec![2])),
        field(Tag::PixelXDimension, Value::Long(vec![w])),
        field(Tag::PixelYDimension, Value::Long(vec![h])),
        ascii(Tag::GPSLatitudeRef, "N"),
        field(Tag::GPSLatitude, rationals(&[(47, 1), (36, 1), (30, 1)])),
        ascii(Tag::GPSLongitudeRef, "E"),
        field(Tag::GPSLongitude, rationals(&[(9, 1), (22, 1), (6, 1)])),
        Field {
            tag: Tag::Compression,
            ifd_num: In::THUMBNAIL,
            value: Value::Short(vec![6]),
        },
    ];
    let thumb = plain_jpeg(8, 6);
    let mut writer = Writer::new();
    for f in &fields {
        writer.push_field(f);
    }
    writer.set_jpeg(&thumb, In::THUMBNAIL);
    let mut out = Cursor::new(Vec::new());
    writer.write(&mut out, false).expect("sample EXIF is valid");
    out.into_inner()
}

fn pixels(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 120]))
}

/// A JPEG as an encoder writes it: JFIF header, no metadata.
pub fn plain_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, 85);
    enc.set_pixel_density(PixelDensity::dpi(DPI as u16));
    enc.encode_image(&pixels(w, h)).expect("encoding to memory");
    out
}

/// A PNG as an encoder writes it: no metadata.
pub fn plain_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    pixels(w, h)
        .write_to(&mut out, ImageFormat::Png)
        .expect("encoding to memory");
    out.into_inner()
}

/// A `w`×`h` JPEG carrying everything (see the module doc).
pub fn tagged_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut jpeg = Jpeg::from_bytes(plain_jpeg(w, h).into()).expect("own JPEG parses");
    jpeg.set_exif(Some(exif(w, h).into()));
    jpeg.set_icc_profile(Some(icc_profile().into()));
    let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    xmp.extend_from_slice(&xmp_packet());
    let mut app13 = b"Photoshop 3.0\08BIM\x04\x04\0\0".to_vec();
    let records = iptc_records();
    app13.extend_from_slice(&(records.len() as u32).to_be_bytes());
    app13.extend_from_slice(&records);
    let segs = jpeg.segments_mut();
    segs.insert(2, JpegSegment::new_with_contents(0xE1, xmp.into()));
    segs.insert(3, JpegSegment::new_with_contents(0xED, app13.into()));
    jpeg.encoder().bytes().to_vec()
}

/// A `w`×`h` PNG carrying everything (see the module doc); IPTC as a compressed text chunk.
pub fn tagged_png(w: u32, h: u32) -> Vec<u8> {
    let mut png = Png::from_bytes(plain_png(w, h).into()).expect("own PNG parses");
    png.set_exif(Some(exif(w, h).into()));
    png.set_icc_profile(Some(icc_profile().into()));
    let ppm = (DPI as f64 / 0.0254).round() as u32;
    let phys = [&ppm.to_be_bytes()[..], &ppm.to_be_bytes(), &[1]].concat();
    let xmp = [&b"XML:com.adobe.xmp\0\0\0\0\0"[..], &xmp_packet()].concat();
    let raw = format!(
        "\niptc\n{:8}\n{}\n",
        iptc_records().len(),
        hex::encode(iptc_records())
    );
    let ztxt = [
        &b"Raw profile type iptc\0\0"[..],
        &miniz_oxide::deflate::compress_to_vec_zlib(raw.as_bytes(), 6),
    ]
    .concat();
    let chunks = png.chunks_mut();
    for (kind, body) in [(b"pHYs", phys), (b"iTXt", xmp), (b"zTXt", ztxt)] {
        chunks.insert(1, PngChunk::new(*kind, Bytes::from(body)));
    }
    png.encoder().bytes().to_vec()
}

/// What a file carries, read back for assertions: EXIF through the EXIF crate's own container
/// reader, the rest through [`super::Carried`].
pub struct Seen {
    pub exif: Option<exif::Exif>,
    pub xmp: String,
    pub carried: super::Carried,
}

impl Seen {
    pub fn of(file: &[u8]) -> Seen {
        let exif = exif::Reader::new()
            .read_from_container(&mut Cursor::new(file))
            .ok();
        let carried = super::source::read(file).expect("a readable JPEG or PNG");
        let xmp = String::from_utf8_lossy(carried.xmp.as_deref().unwrap_or_default()).into_owned();
        Seen { exif, xmp, carried }
    }

    /// A primary-image EXIF field's value, shown as text (`"\"Hilicam\""`, `6`, `1200/1`).
    pub fn tag(&self, tag: Tag) -> Option<String> {
        let f = self.exif.as_ref()?.get_field(tag, In::PRIMARY)?;
        Some(f.display_value().to_string())
    }

    /// Fields of the IFD1 thumbnail (none once hili has written the EXIF).
    pub fn thumbnail_fields(&self) -> usize {
        self.exif.as_ref().map_or(0, |e| {
            e.fields().filter(|f| f.ifd_num == In::THUMBNAIL).count()
        })
    }

    pub fn has_gps(&self) -> bool {
        self.exif
            .as_ref()
            .is_some_and(|e| e.fields().any(|f| f.tag.context() == exif::Context::Gps))
            || self.xmp.contains("exif:GPS")
    }
}
