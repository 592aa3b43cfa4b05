//! The pre-upload input check: everything that can be known about a photo without sending it,
//! so no credit is spent on input bound to fail. [`probe`] reads metadata first (never opening
//! a FIFO or a device for reading, which could block), then at most the image header; the
//! upload's [`check_size`] then looks at the whole file: its size, and its structure through
//! to the end (a truncated photo is refused, see `complete.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::MAX_SIDE;
use super::complete::{Incomplete, check_complete};
use super::header::{self, HeaderError};
use super::kind::{self, ImageKind};

/// What [`probe`] learnt about an acceptable photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Why a file cannot be sent. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: no such file: check the path and add it again", .path.display())]
    NotFound { path: PathBuf },
    #[error("{}: is a symbolic link to a missing file: fix or remove the link", .path.display())]
    BrokenSymlink { path: PathBuf },
    #[error("{}: is a symbolic link loop: point the link at a real photo or remove it", .path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("{}: is a directory, not a photo file: add the photos inside it instead", .path.display())]
    Directory { path: PathBuf },
    #[error("{}: is {what}, not a regular file: copy the photo into a regular file and add that", .path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{}: cannot be read ({source}): check its permissions and add it again", .path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{}: is empty (0 bytes): copy the photo again (it may not have finished copying) and add it again", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: is not a JPEG or PNG image, nor a TIFF, WebP or BMP that hili converts (it looks like {looks_like}): save it as JPEG or PNG and add it again", .path.display())]
    NotAnImage {
        path: PathBuf,
        looks_like: &'static str,
    },
    #[error("{}: the {kind} header is cut short, so the file is damaged or only partly copied: copy it again and add it again", .path.display())]
    TruncatedHeader { path: PathBuf, kind: ImageKind },
    #[error("{}: the {kind} header is damaged ({reason}): export or copy the photo again and add it again", .path.display())]
    BadHeader {
        path: PathBuf,
        kind: ImageKind,
        reason: &'static str,
    },
    #[error("{}: is {width}×{height} px; the service accepts at most {MAX_SIDE} px per side: resize it and add it again, or set [input] oversize = \"downscale\" to let hili fit it within {MAX_SIDE} px", .path.display())]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{}: is {size} bytes, far more than any {width}×{height} px image can need (at most {max}): the file is damaged or padded (e.g. pre-allocated or sparse): export or copy the photo again and add it again", .path.display())]
    ImplausibleSize {
        path: PathBuf,
        size: u64,
        width: u32,
        height: u32,
        max: u64,
    },
    #[error("{}: truncated: {what}; the photo was only partly copied, downloaded or saved: copy the complete photo again and add it again", .path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{}: damaged: {what}; export or copy the photo again and add it again", .path.display())]
    Damaged { path: PathBuf, what: String },
    #[error("{}: is a HEIC image, which hili cannot decode and the service does not take: export it as JPEG (on the phone: Settings › Camera › Formats › Most Compatible; on a computer, e.g. `heif-convert photo.heic photo.jpg`) and add that", .path.display())]
    Heic { path: PathBuf },
    #[error("{}: is a camera raw file ({what}); hili does not develop raw files: export a JPEG or a 16-bit TIFF from your raw converter and add that", .path.display())]
    CameraRaw { path: PathBuf, what: String },
    #[error("{}: the {format} image cannot be converted ({reason}): open it in an image editor, save it as PNG or JPEG and add that", .path.display())]
    Unconvertible {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{}: could not be checked ({source}): fix the problem and add it again", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl InputError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::NotFound { path }
            | InputError::BrokenSymlink { path }
            | InputError::SymlinkLoop { path }
            | InputError::Directory { path }
            | InputError::NotRegular { path, .. }
            | InputError::Unreadable { path, .. }
            | InputError::Empty { path }
            | InputError::NotAnImage { path, .. }
            | InputError::TruncatedHeader { path, .. }
            | InputError::BadHeader { path, .. }
            | InputError::TooLarge { path, .. }
            | InputError::ImplausibleSize { path, .. }
            | InputError::Truncated { path, .. }
            | InputError::Damaged { path, .. }
            | InputError::Heic { path }
            | InputError::CameraRaw { path, .. }
            | InputError::Unconvertible { path, .. }
            | InputError::Io { path, .. } => path,
        }
    }
}

/// Maps a metadata or open failure to the error a user can act on.
fn classify(path: &Path, e: io::Error) -> InputError {
    let path = path.to_path_buf();
    if e.raw_os_error() == Some(libc::ELOOP) {
        return InputError::SymlinkLoop { path };
    }
    match e.kind() {
        io::ErrorKind::NotFound => {
            let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                InputError::BrokenSymlink { path }
            } else {
                InputError::NotFound { path }
            }
        }
        io::ErrorKind::PermissionDenied => InputError::Unreadable { path, source: e },
        _ => InputError::Io { path, source: e },
    }
}

fn file_type_name(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Checks that `path` is a JPEG or PNG the service can take: a readable, non-empty regular
/// file (symlinks followed) whose header is intact and whose sides are at most [`MAX_SIDE`].
/// Only the header is read, so this is cheap enough for `hili add --dry-run` over thousands of
/// files; a photo truncated after its header passes here and is refused by [`check_size`].
pub fn probe(path: &Path) -> Result<Probe, InputError> {
    // stat, not open: opening a FIFO for reading would block until a writer comes.
    let meta = fs::metadata(path).map_err(|e| classify(path, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(InputError::Directory { path: path.into() });
    }
    if !ft.is_file() {
        return Err(InputError::NotRegular {
            path: path.into(),
            what: file_type_name(ft),
        });
    }
    // O_NONBLOCK: if the file was swapped for a FIFO since the stat, open still returns at
    // once (it changes nothing for regular files), and the fstat below catches the swap.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| classify(path, e))?;
    let meta = file.metadata().map_err(|e| classify(path, e))?;
    if !meta.file_type().is_file() {
        let what = file_type_name(meta.file_type());
        return Err(InputError::NotRegular {
            path: path.into(),
            what,
        });
    }
    let size = meta.len();
    if size == 0 {
        return Err(InputError::Empty { path: path.into() });
    }
    let (kind, width, height) = read_header(path, file)?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(InputError::TooLarge {
            path: path.into(),
            width,
            height,
        });
    }
    Ok(Probe {
        kind,
        width,
        height,
        size,
    })
}

/// Room for metadata and trailers (EXIF, ICC, XMP, a phone's "motion photo" video after the
/// image) on top of the pixels.
const SIZE_SLACK: u64 = 64 << 20;

/// The largest file a `width`×`height` image can plausibly be: 8 bytes per pixel (16-bit RGBA
/// stored uncompressed, worse than any real JPEG or PNG) plus [`SIZE_SLACK`]. A bigger file is
/// damaged or padded, and sending it would only stream gigabytes the service rejects.
fn plausible_size(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * 8 + SIZE_SLACK
}

/// The upload's whole-file check, on top of [`probe`] (the upload stage calls both): refuses a
/// file far larger than an image of its dimensions can be (a sparse or pre-allocated file
/// behind a valid header), which the service would charge for or reject after gigabytes were
/// streamed to it; then walks the file's structure to its end, refusing a truncated or
/// structurally damaged photo (a JPEG without EOI after its scan data, a PNG that ends before
/// IEND or fails a chunk CRC), which the service may charge for refusing. Blocking: it reads
/// the file (up to EOI/IEND), at several GB/s from the page cache (BENCHMARKS.md, section 11).
pub fn check_size(path: &Path, p: &Probe) -> Result<(), InputError> {
    check_plausible_size(path, p)?;
    check_complete(path, p.kind).map_err(|e| match e {
        Incomplete::Truncated(what) => InputError::Truncated {
            path: path.into(),
            what,
        },
        Incomplete::Damaged(what) => InputError::Damaged {
            path: path.into(),
            what,
        },
        Incomplete::Io(e) => classify(path, e),
    })
}

/// The size half of [`check_size`]: cheap (no read), so it runs first.
fn check_plausible_size(path: &Path, p: &Probe) -> Result<(), InputError> {
    let max = plausible_size(p.width, p.height);
    if p.size > max {
        return Err(InputError::ImplausibleSize {
            path: path.into(),
            size: p.size,
            width: p.width,
            height: p.height,
            max,
        });
    }
    Ok(())
}

fn read_header(path: &Path, mut file: File) -> Result<(ImageKind, u32, u32), InputError> {
    let mut head = [0u8; 16];
    let n = read_up_to(&mut file, &mut head).map_err(|e| classify(path, e))?;
    let head = &head[..n];
    let Some(kind) = kind::sniff(head) else {
        let looks_like = kind::describe_other(head);
        return Err(InputError::NotAnImage {
            path: path.into(),
            looks_like,
        });
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| classify(path, e))?;
    let mut r = BufReader::with_capacity(8 << 10, file);
    let dims = match kind {
        ImageKind::Jpeg => header::jpeg_dimensions(&mut r),
        ImageKind::Png => header::png_dimensions(&mut r),
    };
    let path = path.to_path_buf();
    match dims {
        Ok((w, h)) => Ok((kind, w, h)),
        Err(HeaderError::Truncated) => Err(InputError::TruncatedHeader { path, kind }),
        Err(HeaderError::Bad(reason)) => Err(InputError::BadHeader { path, kind, reason }),
        Err(HeaderError::Io(e)) => Err(classify(&path, e)),
    }
}

/// Fills `buf` as far as the file allows; returns how many bytes were read.
pub fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_check_allows_metadata_and_refuses_padding() {
        let p = |size| Probe {
            kind: ImageKind::Jpeg,
            width: 32,
            height: 16,
            size,
        };
        let path = Path::new("x.jpg");
        assert!(check_plausible_size(path, &p(40 << 20)).is_ok());
        let e = check_plausible_size(path, &p(2 << 30)).unwrap_err();
        assert!(matches!(e, InputError::ImplausibleSize { .. }), "{e}");
        assert!(
            e.to_string().starts_with("x.jpg: is 2147483648 bytes"),
            "{e}"
        );
    }
}
