//! What hili does with a file before any credit is spent on it: send it as it is (a JPEG or
//! PNG the service takes), convert it first ([`super::convert`]: a TIFF scan, a WebP, a BMP,
//! or a JPEG or PNG over [`MAX_SIDE`] when downscaling is allowed), or refuse it with a reason
//! that says what to do (HEIC and camera raw files, which hili does not decode, among others).
//! [`examine`] reads headers only, so `hili add --dry-run` can ask it of thousands of files.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::MAX_SIDE;
use super::kind::{ImageKind, describe_other};
use super::probe::{InputError, Probe, probe, read_up_to};

/// A format hili reads: the two the service takes, and the three it converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Tiff,
    WebP,
    Bmp,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Tiff => "TIFF",
            Format::WebP => "WebP",
            Format::Bmp => "BMP",
        }
    }

    /// Not taken by the service as it is: always converted.
    pub fn is_converted(self) -> bool {
        !matches!(self, Format::Jpeg | Format::Png)
    }

    pub(crate) fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Tiff => image::ImageFormat::Tiff,
            Format::WebP => image::ImageFormat::WebP,
            Format::Bmp => image::ImageFormat::Bmp,
        }
    }
}

impl From<ImageKind> for Format {
    fn from(k: ImageKind) -> Format {
        match k {
            ImageKind::Jpeg => Format::Jpeg,
            ImageKind::Png => Format::Png,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file that must be converted before it is sent; see [`super::convert::convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub from: Format,
    pub width: u32,
    pub height: u32,
    /// Size of the source in bytes.
    pub size: u64,
    /// The size it is downscaled to (Lanczos), when a side is over [`MAX_SIDE`].
    pub fit: Option<(u32, u32)>,
}

/// What [`examine`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A JPEG or PNG the service takes as it is.
    Direct(Probe),
    /// Converted locally first.
    Convert(Plan),
}

/// Camera raw formats that are TIFF inside: recognised by their extension, since their first
/// bytes are a TIFF's (decoding one as a TIFF would send its small preview, not the photo).
const RAW_EXTENSIONS: &[&str] = &[
    "dng", "nef", "nrw", "arw", "srf", "sr2", "cr2", "pef", "erf", "3fr", "iiq", "mos", "raw",
    "rwl", "srw", "kdc", "dcr", "mrw", "orf", "rw2", "raf", "cr3", "x3f",
];

/// Decides what to do with `path`: see the module. `downscale` is `[input] oversize =
/// "downscale"`; without it a side over [`MAX_SIDE`] is refused ([`InputError::TooLarge`]).
pub fn examine(path: &Path, downscale: bool) -> Result<Input, InputError> {
    match probe(path) {
        Ok(p) => Ok(Input::Direct(p)),
        Err(InputError::TooLarge {
            path,
            width,
            height,
        }) if downscale => {
            let (head, size) = head_of(&path)?;
            let kind = super::kind::sniff(&head).ok_or_else(|| InputError::Io {
                path: path.clone(),
                source: std::io::Error::other("the file changed while it was read"),
            })?;
            Ok(Input::Convert(Plan {
                from: kind.into(),
                width,
                height,
                size,
                fit: Some(fit_within(width, height, MAX_SIDE)),
            }))
        }
        Err(InputError::NotAnImage { path, .. }) => examine_other(&path, downscale),
        Err(e) => Err(e),
    }
}

/// A file that is not a JPEG or PNG: one hili converts, or a refusal naming what it is.
fn examine_other(path: &Path, downscale: bool) -> Result<Input, InputError> {
    let (head, size) = head_of(path)?;
    let from = match sniff_convertible(path, &head)? {
        Some(f) => f,
        None => {
            return Err(InputError::NotAnImage {
                path: path.into(),
                looks_like: describe_other(&head),
            });
        }
    };
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let reader = image::ImageReader::with_format(BufReader::new(file), from.image_format());
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| undecodable(path, from, &e))?;
    let fit = match width > MAX_SIDE || height > MAX_SIDE {
        false => None,
        true if downscale => Some(fit_within(width, height, MAX_SIDE)),
        true => {
            return Err(InputError::TooLarge {
                path: path.into(),
                width,
                height,
            });
        }
    };
    Ok(Input::Convert(Plan {
        from,
        width,
        height,
        size,
        fit,
    }))
}

/// TIFF, WebP or BMP by magic bytes; HEIC and camera raw files are refused here, by name.
fn sniff_convertible(path: &Path, head: &[u8]) -> Result<Option<Format>, InputError> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let raw = |what: &str| InputError::CameraRaw {
        path: path.into(),
        what: what.to_string(),
    };
    // Raw formats with a signature of their own, then TIFF-based ones by extension.
    if at(0, b"FUJIFILMCCD-RAW") {
        return Err(raw("Fujifilm RAF"));
    }
    if at(4, b"ftypcrx ") {
        return Err(raw("Canon CR3"));
    }
    if at(0, b"IIRO") || at(0, b"IIRS") || at(0, b"MMOR") {
        return Err(raw("Olympus ORF"));
    }
    if at(0, b"IIU\0") {
        return Err(raw("Panasonic RW2"));
    }
    let tiff = at(0, b"II*\0") || at(0, b"MM\0*");
    if tiff && at(8, b"CR") {
        return Err(raw("Canon CR2"));
    }
    if tiff && RAW_EXTENSIONS.contains(&ext.as_str()) {
        return Err(raw(&format!(".{ext}")));
    }
    let heic = [
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1",
    ];
    if at(4, b"ftyp") && heic.iter().any(|brand| at(8, *brand)) {
        return Err(InputError::Heic { path: path.into() });
    }
    Ok(if tiff {
        Some(Format::Tiff)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some(Format::WebP)
    } else if at(0, b"BM") {
        Some(Format::Bmp)
    } else {
        None
    })
}

/// The first bytes of the file, and its size.
fn head_of(path: &Path) -> Result<(Vec<u8>, u64), InputError> {
    let mut f = File::open(path).map_err(|e| io_error(path, e))?;
    let size = f.metadata().map_err(|e| io_error(path, e))?.len();
    let mut head = vec![0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(|e| io_error(path, e))?;
    head.truncate(n);
    Ok((head, size))
}

fn io_error(path: &Path, source: std::io::Error) -> InputError {
    InputError::Io {
        path: path.into(),
        source,
    }
}

pub(crate) fn undecodable(path: &Path, format: Format, e: &image::ImageError) -> InputError {
    InputError::Unconvertible {
        path: PathBuf::from(path),
        format: format.name(),
        reason: e.to_string(),
    }
}

/// The largest size of the same proportions within `max`×`max` (each side at least 1 px).
pub fn fit_within(width: u32, height: u32, max: u32) -> (u32, u32) {
    if width <= max && height <= max {
        return (width, height);
    }
    let (long, short) = (width.max(height), width.min(height));
    // Rounded to the nearest pixel, in integers so every platform gets the same size.
    let scaled = ((u64::from(short) * u64::from(max) + u64::from(long) / 2) / u64::from(long))
        .clamp(1, u64::from(max)) as u32;
    if width >= height {
        (max, scaled)
    } else {
        (scaled, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_within_the_longest_side() {
        assert_eq!(fit_within(8000, 6000, 6000), (6000, 4500));
        assert_eq!(fit_within(6000, 8000, 6000), (4500, 6000));
        assert_eq!(fit_within(7001, 3, 6000), (6000, 3));
        assert_eq!(fit_within(100_000, 1, 6000), (6000, 1));
        assert_eq!(fit_within(6000, 6000, 6000), (6000, 6000));
        assert_eq!(fit_within(12, 9, 6000), (12, 9));
    }

    #[test]
    fn heic_and_raw_are_refused_by_name() {
        let p = Path::new("x.jpg");
        let e = sniff_convertible(p, b"\0\0\0\x18ftypheic\0\0\0\0").unwrap_err();
        assert!(matches!(e, InputError::Heic { .. }), "{e}");
        assert!(e.to_string().contains("HEIC"), "{e}");
        let e = sniff_convertible(Path::new("a.NEF"), b"MM\0*\0\0\0\x08\0\0").unwrap_err();
        assert!(e.to_string().contains("camera raw"), "{e}");
        let e = sniff_convertible(p, b"II*\0\x10\0\0\0CR\x02\0").unwrap_err();
        assert!(e.to_string().contains("CR2"), "{e}");
        assert_eq!(
            sniff_convertible(Path::new("scan.tif"), b"II*\0\x08\0\0\0").unwrap(),
            Some(Format::Tiff)
        );
        assert_eq!(
            sniff_convertible(p, b"RIFF\0\0\0\0WEBPVP8L").unwrap(),
            Some(Format::WebP)
        );
        assert_eq!(sniff_convertible(p, b"BM\0\0").unwrap(), Some(Format::Bmp));
        assert_eq!(sniff_convertible(p, b"GIF89a").unwrap(), None);
    }
}
