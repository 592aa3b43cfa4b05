//! Image kinds the service accepts, recognised by their magic bytes (never by the file name).

use std::fmt;

/// An image format the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Jpeg,
    Png,
}

/// The JPEG start-of-image marker followed by the first byte of the next marker.
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

impl ImageKind {
    /// The file extension used for outputs of this kind, without the dot.
    pub fn ext(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
        }
    }

    /// The MIME type sent with the upload.
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
        }
    }

    /// A human name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "JPEG",
            ImageKind::Png => "PNG",
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Recognises JPEG and PNG by their first bytes. Needs at least 3 bytes for JPEG, 8 for PNG.
pub fn sniff(head: &[u8]) -> Option<ImageKind> {
    if head.starts_with(JPEG_MAGIC) {
        Some(ImageKind::Jpeg)
    } else if head.starts_with(PNG_MAGIC) {
        Some(ImageKind::Png)
    } else {
        None
    }
}

/// Names a few formats people commonly mistake for photos the service takes, so the refusal
/// can say what the file actually is (and that converting it would help).
pub(crate) fn describe_other(head: &[u8]) -> &'static str {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "a GIF image"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "a WebP image"
    } else if at(4, b"ftypheic") || at(4, b"ftypheix") || at(4, b"ftypmif1") {
        "a HEIC image"
    } else if at(4, b"ftypavif") {
        "an AVIF image"
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        "a TIFF or camera raw image"
    } else if at(0, b"BM") {
        "a BMP image"
    } else if at(0, b"%PDF") {
        "a PDF document"
    } else if at(0, &[0xFF, 0xD8]) {
        "a damaged JPEG (no marker after the start of image)"
    } else if !head.is_empty()
        && head
            .iter()
            .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "text"
    } else {
        "an unknown format"
    }
}

/// The kind of an image file on disk, by its first bytes.
pub fn sniff_file(path: &std::path::Path) -> std::io::Result<Option<ImageKind>> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(sniff(&head[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageKind::Jpeg));
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageKind::Png)
        );
        assert_eq!(sniff(b"\x89PNG\r\n"), None, "PNG signature cut short");
        assert_eq!(sniff(&[0xFF, 0xD8]), None, "JPEG needs a marker after SOI");
        assert_eq!(sniff(b"hello, I am text"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn names_and_extensions() {
        assert_eq!(ImageKind::Jpeg.ext(), "jpg");
        assert_eq!(ImageKind::Png.ext(), "png");
        assert_eq!(ImageKind::Jpeg.mime(), "image/jpeg");
        assert_eq!(ImageKind::Png.mime(), "image/png");
        assert_eq!(ImageKind::Png.to_string(), "PNG");
    }

    #[test]
    fn describes_other_formats() {
        assert_eq!(describe_other(b"GIF89a...."), "a GIF image");
        assert_eq!(describe_other(b"RIFF\0\0\0\0WEBPVP8 "), "a WebP image");
        assert_eq!(describe_other(b"\0\0\0\x18ftypheic"), "a HEIC image");
        assert_eq!(describe_other(b"just some words\n"), "text");
        assert_eq!(describe_other(&[0, 1, 2, 3]), "an unknown format");
    }
}
