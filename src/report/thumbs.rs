//! The pictures of a report: for one file, its size in bytes and pixels and a small JPEG of it
//! ([`LONG_SIDE`] px on its long side at most). Thumbnails are made once and kept in a cache
//! folder beside the queue database, named by the content's SHA-256 and the thumbnail size, so
//! a second report of the same jobs decodes nothing: it reads the cached files. A cached file
//! that is not a whole JPEG (cut short by a crash) is made again. Everything here blocks.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// The long side of a thumbnail, in pixels (smaller pictures are kept at their size).
pub const LONG_SIDE: u32 = 480;
/// JPEG quality of thumbnails: small files (a report of thousands embeds them all), no visible
/// blocks at the size shown.
const QUALITY: u8 = 75;

/// A file a report shows, and what identifies the photo the job processed.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub path: PathBuf,
    /// Names the cached thumbnail: the content's SHA-256 (or, before a file was hashed, one
    /// of its path, size and mtime).
    pub key: String,
    /// The size and mtime (ns) the job recorded for this file: a file at the path that differs
    /// is another photo now, and is not shown as this job's.
    pub expect: Option<(u64, i64)>,
}

/// A small JPEG and its own size in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Thumb {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// One picture as the report shows it.
#[derive(Debug, Clone)]
pub(crate) struct Picture {
    pub bytes: Option<u64>,
    pub pixels: Option<(u32, u32)>,
    /// The thumbnail, or why there is none (said to the reader).
    pub thumb: Result<Thumb, String>,
    /// The thumbnail was made now, not read from the cache.
    pub made: bool,
}

/// The picture of `w`, from the cache in `cache` when it is there (made and cached otherwise).
pub(crate) fn picture(w: &Wanted, cache: &Path) -> Picture {
    let cached = cache.join(format!("{}-{LONG_SIDE}.jpg", w.key));
    let meta = fs::metadata(&w.path).ok().filter(|m| m.is_file());
    let current = meta.as_ref().is_some_and(|m| {
        w.expect
            .is_none_or(|(size, mtime)| m.len() == size && crate::media::mtime_ns(m) == mtime)
    });
    let (bytes, pixels) = match &meta {
        Some(m) if current => (Some(m.len()), dimensions(&w.path)),
        _ => (w.expect.map(|e| e.0), None),
    };
    let mut pic = Picture {
        bytes,
        pixels,
        thumb: Err(String::new()),
        made: false,
    };
    if let Some(t) = read_cached(&cached) {
        pic.thumb = Ok(t);
    } else if meta.is_none() {
        pic.thumb = Err("no longer at this path".into());
    } else if !current {
        pic.thumb = Err("the file at this path has changed since; not shown".into());
    } else {
        pic.thumb = make(&w.path);
        if let Ok(t) = &pic.thumb {
            pic.made = true;
            // A cache that cannot be written costs the next report time, not this one.
            if let Err(e) = write_cached(&cached, &t.jpeg) {
                tracing::debug!("cannot cache the thumbnail {}: {e}", cached.display());
            }
        }
    }
    pic
}

/// Width and height from the file's header (the pixels are not decoded).
fn dimensions(path: &Path) -> Option<(u32, u32)> {
    ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// A cached thumbnail, if it is a whole JPEG.
fn read_cached(path: &Path) -> Option<Thumb> {
    let jpeg = fs::read(path).ok()?;
    if !(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) && jpeg.ends_with(&[0xFF, 0xD9])) {
        return None;
    }
    let mut reader = ImageReader::new(Cursor::new(&jpeg));
    reader.set_format(image::ImageFormat::Jpeg);
    let (width, height) = reader.into_dimensions().ok()?;
    Some(Thumb {
        jpeg,
        width,
        height,
    })
}

/// Writes a cache file whole or not at all: a temp file renamed over the name.
fn write_cached(path: &Path, jpeg: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".tmp-{:016x}.jpg", rand::random::<u64>()));
    let res = fs::write(&temp, jpeg).and_then(|()| fs::rename(&temp, path));
    if res.is_err() {
        let _ = fs::remove_file(&temp);
    }
    res
}

/// Decodes `path` (upright, as its EXIF orientation says), scales it to fit [`LONG_SIDE`] and
/// encodes it as a JPEG; transparent pixels are shown over white.
fn make(path: &Path) -> Result<Thumb, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot be shown: {e}");
    let mut decoder = ImageReader::open(path)
        .map_err(|e| cannot(&e))?
        .with_guessed_format()
        .map_err(|e| cannot(&e))?
        .into_decoder()
        .map_err(|e| cannot(&e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| cannot(&e))?;
    img.apply_orientation(orientation);
    if img.width().max(img.height()) > LONG_SIDE {
        img = img.thumbnail(LONG_SIDE, LONG_SIDE);
    }
    let rgb = over_white(&img);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, QUALITY)
        .encode_image(&rgb)
        .map_err(|e| cannot(&e))?;
    Ok(Thumb {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
}

/// The picture as 8-bit RGB, blended over white where it is transparent (JPEG has no alpha).
fn over_white(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend =
            |c: u8| ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a))) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn wanted(path: &Path) -> Wanted {
        let m = fs::metadata(path).unwrap();
        Wanted {
            path: path.to_path_buf(),
            key: "k".repeat(64),
            expect: Some((m.len(), crate::media::mtime_ns(&m))),
        }
    }

    #[test]
    fn a_thumbnail_is_made_once_then_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (src, cache) = (dir.path().join("big.png"), dir.path().join("cache"));
        fs::create_dir(&cache).unwrap();
        RgbaImage::from_fn(1200, 600, |x, y| Rgba([x as u8, y as u8, 7, 255]))
            .save(&src)
            .unwrap();
        let w = wanted(&src);
        let first = picture(&w, &cache);
        let t = first.thumb.clone().unwrap();
        assert!(first.made);
        assert_eq!((t.width, t.height), (LONG_SIDE, LONG_SIDE / 2));
        assert_eq!(first.pixels, Some((1200, 600)));
        assert_eq!(first.bytes, Some(fs::metadata(&src).unwrap().len()));
        let files: Vec<_> = fs::read_dir(&cache).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file, no temp left");

        let second = picture(&w, &cache);
        assert!(!second.made);
        assert_eq!(second.thumb.unwrap(), t);

        // A cache file cut short is made again.
        let cached = cache.join(format!("{}-{LONG_SIDE}.jpg", w.key));
        fs::write(&cached, &t.jpeg[..t.jpeg.len() / 2]).unwrap();
        let third = picture(&w, &cache);
        assert!(third.made);
        assert_eq!(fs::read(&cached).unwrap(), t.jpeg);
    }

    #[test]
    fn a_small_picture_keeps_its_size_and_transparency_shows_white() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("small.png");
        RgbaImage::from_pixel(40, 30, Rgba([0, 0, 0, 0]))
            .save(&src)
            .unwrap();
        let pic = picture(&wanted(&src), dir.path());
        let t = pic.thumb.unwrap();
        assert_eq!((t.width, t.height), (40, 30));
        let back = image::load_from_memory(&t.jpeg).unwrap().to_rgb8();
        assert!(back.get_pixel(20, 15).0.iter().all(|&c| c > 240));
    }

    #[test]
    fn a_missing_changed_or_unreadable_file_says_why_and_a_cached_one_is_still_shown() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.jpg");
        fs::write(&src, b"not a picture at all").unwrap();
        let w = wanted(&src);
        let pic = picture(&w, dir.path());
        assert!(pic.thumb.unwrap_err().starts_with("cannot be shown"));
        assert_eq!(pic.bytes, Some(20));

        fs::write(&src, b"another file, longer than before").unwrap();
        let changed = picture(&w, dir.path());
        assert!(changed.thumb.unwrap_err().contains("changed since"));
        assert_eq!((changed.bytes, changed.pixels), (Some(20), None));

        fs::remove_file(&src).unwrap();
        let gone = picture(&w, dir.path());
        assert_eq!(gone.thumb.unwrap_err(), "no longer at this path");

        // The photo moved away after its report: the cached thumbnail still shows it.
        let photo = RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]));
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 80)
            .encode_image(&photo)
            .unwrap();
        write_cached(
            &dir.path().join(format!("{}-{LONG_SIDE}.jpg", w.key)),
            &jpeg,
        )
        .unwrap();
        let t = picture(&w, dir.path()).thumb.unwrap();
        assert_eq!((t.width, t.height), (8, 8));
    }
}
