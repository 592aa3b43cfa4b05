//! Local conversion of an input the service does not take as it is (a TIFF scan, a WebP, a
//! BMP, or a photo over 6000 px with `[input] oversize = "downscale"`): decode (a TIFF's first
//! page), fit within the limit (Lanczos), reduce to 8 bits per sample with correct rounding,
//! and encode a lossless PNG — or a JPEG at quality 95 when that PNG would be over the upload
//! limit (a JPEG source that was only downscaled stays a JPEG). Pure, blocking and
//! deterministic: the same source and settings give byte-identical output, so a copy lost to a
//! crash is rebuilt as it was. The source is only read. Where the copy lives and when it goes
//! is the upload stage's business (`pipeline/upload/prepare.rs`).

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageReader};

use super::input::{Format, Plan, undecodable};
use super::kind::ImageKind;
use super::probe::InputError;

/// Quality of the JPEG written when the PNG would be over the upload limit.
pub const JPEG_QUALITY: u8 = 95;

/// The most memory one decode may take: a 16-bit RGBA scan of 16,000 × 16,000 px. More is
/// refused with a reason rather than risking the daemon being killed for memory.
const DECODE_LIMIT: u64 = 2 << 30;

/// The converted copy, written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub path: PathBuf,
    pub kind: ImageKind,
    /// SHA-256 of the copy (what the upload must send).
    pub sha256: String,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    /// Pages in the source (a TIFF may hold several; only the first is converted).
    pub pages: u32,
    /// What was done, in a few words, for the job's events and `hili jobs`.
    pub note: String,
}

/// Why a conversion did not give a file that can be sent.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{}: converted to {width}×{height} px it is still {:.1} MiB as a JPEG at quality {JPEG_QUALITY}, over the upload limit of {:.1} MiB ([input] max_upload_bytes): not sent, no credit spent: raise the limit or reduce the scan, then `hili retry`", .path.display(), mib(*.size), mib(*.limit))]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        size: u64,
        limit: u64,
    },
    #[error("could not write the converted copy of {} into {} ({source}): check that the state directory is writable and has room, then `hili retry`", .path.display(), .dir.display())]
    Write {
        path: PathBuf,
        dir: PathBuf,
        source: io::Error,
    },
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Converts `src` as `plan` says into `dir/<name>.png` (or `.jpg`), replacing a copy left
/// there before; the copy is under `limit` bytes and at most 6000 px per side.
pub fn convert(
    src: &Path,
    plan: &Plan,
    dir: &Path,
    name: &str,
    limit: u64,
) -> Result<Converted, ConvertError> {
    let img = decode(src, plan.from)?;
    let depth = describe(img.color());
    let (w0, h0) = (img.width(), img.height());
    let img = match plan.fit {
        Some((w, h)) if (w, h) != (w0, h0) => img.resize_exact(w, h, FilterType::Lanczos3),
        _ => img,
    };
    let img = to_8bit(img);
    let (width, height) = (img.width(), img.height());
    let encode_err = |e: image::ImageError| undecodable(src, plan.from, &e);
    let (kind, bytes) = match plan.from {
        // A lossy source gains nothing from a lossless copy several times its size.
        Format::Jpeg => (ImageKind::Jpeg, encode_jpeg(&img).map_err(encode_err)?),
        _ => match smallest_png_within(&img, limit).map_err(encode_err)? {
            Some(png) => (ImageKind::Png, png),
            None => (ImageKind::Jpeg, encode_jpeg(&img).map_err(encode_err)?),
        },
    };
    drop(img);
    let size = bytes.len() as u64;
    if size > limit {
        return Err(ConvertError::TooLarge {
            path: src.into(),
            width,
            height,
            size,
            limit,
        });
    }
    let pages = match plan.from {
        Format::Tiff => tiff_pages(src),
        _ => 1,
    };
    let path = write(dir, &format!("{name}.{}", kind.ext()), &bytes).map_err(|source| {
        ConvertError::Write {
            path: src.into(),
            dir: dir.into(),
            source,
        }
    })?;
    let mut note = format!(
        "converted {} {depth} {w0}×{h0} to {kind} 8-bit {width}×{height}",
        plan.from
    );
    if (width, height) != (w0, h0) {
        note.push_str(", downscaled (Lanczos) to fit 6000 px");
    }
    if pages > 1 {
        note.push_str(&format!(
            "; first of {pages} pages, the other pages are not sent"
        ));
    }
    Ok(Converted {
        path,
        kind,
        sha256: super::sha256_bytes(&bytes),
        size,
        width,
        height,
        pages,
        note,
    })
}

fn decode(src: &Path, from: Format) -> Result<DynamicImage, InputError> {
    let file = File::open(src).map_err(|e| InputError::Io {
        path: src.into(),
        source: e,
    })?;
    let mut reader = ImageReader::with_format(BufReader::new(file), from.image_format());
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(DECODE_LIMIT);
    reader.limits(limits);
    reader.decode().map_err(|e| undecodable(src, from, &e))
}

fn describe(c: ColorType) -> &'static str {
    match c {
        ColorType::L8 => "8-bit greyscale",
        ColorType::La8 => "8-bit greyscale+alpha",
        ColorType::Rgb8 => "8-bit RGB",
        ColorType::Rgba8 => "8-bit RGBA",
        ColorType::L16 => "16-bit greyscale",
        ColorType::La16 => "16-bit greyscale+alpha",
        ColorType::Rgb16 => "16-bit RGB",
        ColorType::Rgba16 => "16-bit RGBA",
        ColorType::Rgb32F => "32-bit float RGB",
        ColorType::Rgba32F => "32-bit float RGBA",
        _ => "other",
    }
}

/// Eight bits per sample, the same channels. 16-bit samples are rounded to the nearest 8-bit
/// value, round(v × 255 / 65535), by the `image` crate's conversion (tested below).
fn to_8bit(img: DynamicImage) -> DynamicImage {
    let c = img.color();
    let grey = matches!(
        c,
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    match (grey, c.has_alpha()) {
        (true, false) => DynamicImage::ImageLuma8(img.into_luma8()),
        (true, true) => DynamicImage::ImageLumaA8(img.into_luma_alpha8()),
        (false, false) => DynamicImage::ImageRgb8(img.into_rgb8()),
        (false, true) => DynamicImage::ImageRgba8(img.into_rgba8()),
    }
}

/// A PNG of `img` within `limit` bytes, if one is found. Fast compression first (a 24 MP scan
/// in a fraction of the default level's time, BENCHMARKS.md section 13); the default level
/// only when the fast PNG is close enough over the limit that the default's usual gain (about
/// a quarter smaller) could bring it under.
fn smallest_png_within(
    img: &DynamicImage,
    limit: u64,
) -> Result<Option<Vec<u8>>, image::ImageError> {
    let fast = encode_png(img, CompressionType::Fast)?;
    let len = fast.len() as u64;
    if len <= limit {
        return Ok(Some(fast));
    }
    if len / 10 * 7 > limit {
        return Ok(None);
    }
    let png = encode_png(img, CompressionType::Default)?;
    Ok((png.len() as u64 <= limit).then_some(png))
}

fn encode_png(img: &DynamicImage, level: CompressionType) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let enc = PngEncoder::new_with_quality(&mut out, level, PngFilter::Adaptive);
    img.write_with_encoder(enc)?;
    Ok(out)
}

/// JPEG has no alpha channel: it is dropped (a scan's is opaque).
fn encode_jpeg(img: &DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let enc = JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
    match img.color() {
        ColorType::L8 => img.write_with_encoder(enc)?,
        ColorType::La8 => DynamicImage::ImageLuma8(img.to_luma8()).write_with_encoder(enc)?,
        _ => DynamicImage::ImageRgb8(img.to_rgb8()).write_with_encoder(enc)?,
    }
    Ok(out)
}

/// How many pages (IFDs) a TIFF holds; 1 when that cannot be read (the decode decides).
fn tiff_pages(src: &Path) -> u32 {
    let Ok(file) = File::open(src) else {
        return 1;
    };
    let Ok(mut d) = tiff::decoder::Decoder::new(BufReader::new(file)) else {
        return 1;
    };
    let mut pages = 1;
    // Bounded: a damaged file may chain its directories in a loop.
    while d.more_images() && pages < 10_000 {
        if d.next_image().is_err() {
            break;
        }
        pages += 1;
    }
    pages
}

/// Writes `bytes` as `dir/name`, replacing what is there, through a temp file and a rename
/// so the name never holds a partial copy. No fsync: a copy lost to a power cut is rebuilt.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    // Photos are private: the folder is the user's alone, like the database next to it.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dest = dir.join(name);
    let temp = dir.join(format!(".{name}.part"));
    fs::write(&temp, bytes)?;
    fs::rename(&temp, &dest).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })?;
    Ok(dest)
}

/// Removes every file in `dir` (converted copies and partial ones a crash left); the folder
/// itself stays. Returns how many went. A missing folder has nothing to remove.
pub fn clear_converted(dir: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb};

    #[test]
    fn sixteen_bit_samples_round_to_the_nearest_eight_bit_value() {
        let samples = [0u16, 128, 129, 257, 32896, 65406, 65407, 65535];
        let img = ImageBuffer::from_fn(samples.len() as u32, 1, |x, _| Luma([samples[x as usize]]));
        let out = to_8bit(DynamicImage::ImageLuma16(img)).into_luma8();
        let got: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        let want: Vec<u8> = samples
            .iter()
            .map(|&v| (f64::from(v) * 255.0 / 65535.0).round() as u8)
            .collect();
        assert_eq!(got, want);
        assert_eq!(got, [0, 0, 1, 1, 128, 254, 255, 255]);
    }

    #[test]
    fn the_same_source_gives_byte_identical_copies() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("scan.bmp");
        let img = ImageBuffer::from_fn(300, 200, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8]));
        img.save_with_format(&src, image::ImageFormat::Bmp).unwrap();
        let plan = Plan {
            from: Format::Bmp,
            width: 300,
            height: 200,
            size: 0,
            fit: Some((150, 100)),
        };
        let a = convert(&src, &plan, &d.path().join("c"), "a", 20 << 20).unwrap();
        let b = convert(&src, &plan, &d.path().join("c"), "b", 20 << 20).unwrap();
        assert_eq!(fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());
        assert_eq!(a.sha256, b.sha256);
        assert_eq!((a.kind, a.width, a.height), (ImageKind::Png, 150, 100));
        assert!(a.note.contains("downscaled"), "{}", a.note);
        assert_eq!(clear_converted(&d.path().join("c")).unwrap(), 2);
        assert_eq!(clear_converted(&d.path().join("missing")).unwrap(), 0);
    }
}
