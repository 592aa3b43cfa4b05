//! The simulator's image work: recognising JPEG/PNG by magic bytes, reading dimensions from
//! the header alone (a 300 MB upload is never loaded to learn its size), and turning an
//! upload into a plausible result for each repair type. All functions here block: call them
//! from `spawn_blocking`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageFormat, ImageReader, Rgba, RgbaImage};

use crate::repair::{Repair, Rgb};

/// Uploads accepted by the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub(super) fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
        }
    }
}

const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Recognises the format from the first bytes of the file.
pub(crate) fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if head.starts_with(&PNG_MAGIC) {
        Some(Format::Png)
    } else {
        None
    }
}

/// Width and height from the header; `Ok(None)` when the header is not readable.
pub(crate) fn header_dimensions(path: &Path, format: Format) -> io::Result<Option<(u32, u32)>> {
    let mut r = BufReader::new(File::open(path)?);
    match format {
        Format::Png => {
            // Signature (8), chunk length (4), "IHDR" (4), width (4), height (4).
            let mut h = [0u8; 24];
            if r.read_exact(&mut h).is_err() || &h[12..16] != b"IHDR" {
                return Ok(None);
            }
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            Ok(Some((be(&h[16..20]), be(&h[20..24]))))
        }
        Format::Jpeg => jpeg_dimensions(&mut r),
    }
}

/// Walks the JPEG marker segments up to the first start-of-frame, seeking over the rest.
fn jpeg_dimensions(r: &mut (impl Read + Seek)) -> io::Result<Option<(u32, u32)>> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?; // SOI, already checked by sniff
    loop {
        let mut byte = [0u8; 1];
        // Markers are 0xFF followed by a non-0xFF code; extra 0xFF are fill bytes.
        loop {
            if r.read(&mut byte)? == 0 {
                return Ok(None);
            }
            if byte[0] == 0xFF {
                break;
            }
        }
        let marker = loop {
            if r.read(&mut byte)? == 0 {
                return Ok(None);
            }
            if byte[0] != 0xFF {
                break byte[0];
            }
        };
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue; // markers without a length
        }
        if r.read_exact(&mut b).is_err() {
            return Ok(None);
        }
        let len = u16::from_be_bytes(b) as i64;
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof {
            let mut f = [0u8; 5]; // precision, height, width
            if r.read_exact(&mut f).is_err() {
                return Ok(None);
            }
            let h = u16::from_be_bytes([f[1], f[2]]) as u32;
            let w = u16::from_be_bytes([f[3], f[4]]) as u32;
            return Ok(Some((w, h)));
        }
        if len < 2 || marker == 0xD9 || marker == 0xDA {
            return Ok(None); // end of image or scan data before any frame header
        }
        r.seek(SeekFrom::Current(len - 2))?;
    }
}

/// Fully decodes the upload; an error here is the vendor's 9009.
pub(crate) fn decode(path: &Path, format: Format) -> image::ImageResult<DynamicImage> {
    let mut reader = ImageReader::new(BufReader::new(File::open(path)?));
    reader.set_format(format.image_format());
    reader.decode()
}

/// Applies `repair` the way the sim imitates it.
pub(crate) fn apply(img: DynamicImage, repair: Repair, rgb: Option<Rgb>) -> DynamicImage {
    match repair {
        Repair::Sr => upscale(&img),
        Repair::Repair => upscale(&DynamicImage::ImageRgba8(imageops::blur(
            &img.to_rgba8(),
            0.8,
        ))),
        Repair::Colour => upscale(&DynamicImage::ImageRgba8(warm_tint(&img.to_rgba8()))),
        Repair::Bg => DynamicImage::ImageRgba8(replace_background(
            img.to_rgba8(),
            rgb.unwrap_or(Rgb(255, 255, 255)),
        )),
    }
}

fn upscale(img: &DynamicImage) -> DynamicImage {
    img.resize_exact(img.width() * 2, img.height() * 2, FilterType::Lanczos3)
}

/// A sepia-like colouring of the greyscale picture: obviously "colourised", deterministic.
fn warm_tint(img: &RgbaImage) -> RgbaImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [r, g, b, a] = p.0;
        let l = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
        let c = |x: f32| x.clamp(0.0, 255.0) as u8;
        *p = Rgba([c(l * 1.07 + 20.0), c(l * 0.95 + 8.0), c(l * 0.78), a]);
    }
    out
}

/// Euclidean RGB distance under which a pixel counts as background.
const BG_THRESHOLD: f32 = 60.0;

/// Replaces pixels close to the average border colour by `rgb`.
fn replace_background(mut img: RgbaImage, rgb: Rgb) -> RgbaImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return img;
    }
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            for (acc, v) in sum.iter_mut().zip(p.0) {
                *acc += v as f64;
            }
            n += 1.0;
        }
    }
    let bg = sum.map(|s| (s / n) as f32);
    for p in img.pixels_mut() {
        let d: f32 = (0..3).map(|i| (p.0[i] as f32 - bg[i]).powi(2)).sum();
        if d.sqrt() <= BG_THRESHOLD {
            *p = Rgba([rgb.0, rgb.1, rgb.2, p.0[3]]);
        }
    }
    img
}

/// Writes `img` to `path` in `format` (JPEG has no alpha, so it is dropped there).
pub(crate) fn encode(img: &DynamicImage, format: Format, path: &Path) -> image::ImageResult<()> {
    let mut w = BufWriter::new(File::create(path)?);
    match format {
        Format::Jpeg => {
            DynamicImage::ImageRgb8(img.to_rgb8()).write_to(&mut w, ImageFormat::Jpeg)?
        }
        Format::Png => img.write_to(&mut w, ImageFormat::Png)?,
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn encoded(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = RgbaImage::from_fn(w, h, |x, y| Rgba([x as u8, y as u8, 90, 255]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(img).to_rgb8())
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn header_dimensions_of_jpeg_and_png_with_trailing_junk() {
        let dir = tempfile::tempdir().unwrap();
        for (fmt, f) in [
            (ImageFormat::Jpeg, Format::Jpeg),
            (ImageFormat::Png, Format::Png),
        ] {
            let mut bytes = encoded(70, 33, fmt);
            assert_eq!(sniff(&bytes), Some(f));
            bytes.extend(std::iter::repeat_n(7u8, 100_000));
            let p = dir.path().join("x");
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(header_dimensions(&p, f).unwrap(), Some((70, 33)));
        }
        assert_eq!(sniff(b"hello"), None);
    }

    #[test]
    fn transforms_have_expected_sizes_and_effects() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(20, 10, |x, y| {
            if (5..15).contains(&x) && (3..7).contains(&y) {
                Rgba([200, 10, 10, 255])
            } else {
                Rgba([0, 0, 250, 255])
            }
        }));
        for r in [Repair::Sr, Repair::Repair, Repair::Colour] {
            let out = apply(img.clone(), r, None);
            assert_eq!((out.width(), out.height()), (40, 20), "{r}");
        }
        let out = apply(img, Repair::Bg, Some(Rgb(255, 255, 0))).to_rgba8();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 0, 255]);
        assert_eq!(out.get_pixel(10, 5).0, [200, 10, 10, 255]);
    }
}
