//! The media room: everything about files and image bytes, nothing about the API or the
//! database. It recognises JPEG and PNG by magic bytes, reads dimensions from headers only,
//! checks input before a credit is spent on it ([`probe`], and [`check_size`], which also
//! walks the whole file's structure so a truncated photo is never sent), hashes content ([`sha256_file`]),
//! names outputs and writes them durably without ever overwriting a different file
//! ([`output_path`], [`unique_destination`], [`AtomicFile`]), and walks the paths given to
//! `hili add` ([`walk`]), keeps the `.hili-queue` marker of output directories
//! ([`ensure_marker`]), and moves sources the way `mv` does, crash-safely ([`mover`]). It
//! decides whether a file is sent as it is, converted first or refused ([`examine`]), and
//! converts it ([`convert()`]). It keeps output folders' fixity manifests ([`manifest`]) and
//! re-hashes many files at once for `hili verify` ([`sha256_files`]). Everything here blocks
//! (std::fs): async callers run it through [`blocking`].

mod atomic;
mod complete;
mod convert;
mod hash;
mod header;
mod input;
mod kind;
pub mod manifest;
mod marker;
pub mod metadata;
pub mod mover;
mod naming;
mod probe;
mod space;
mod walk;

pub use atomic::{
    AtomicFile, TEMP_PREFIX, copy_atomic, remove_stale_temps, remove_temps_older_than, tag_temps,
};
pub use complete::{Incomplete, check_complete, check_complete_bytes};
pub use convert::{ConvertError, Converted, JPEG_QUALITY, clear_converted, convert};
pub use hash::{sha256_bytes, sha256_file, sha256_files, sha256_reader};
pub use input::{Format, Input, Plan, examine, fit_within};
pub use kind::{ImageKind, sniff, sniff_file};
pub use marker::{MARKER_NAME, ensure_marker, marker_path, read_marker};
pub use naming::{
    Destination, MAX_NUMBERED, OutputError, first_numbered, normalise, numbered, output_folder,
    output_path, unique_destination,
};
pub use probe::{InputError, Probe, check_size, probe, read_up_to};
pub use space::{Room, expected_result_bytes, is_no_room, room};
pub use walk::{FileId, Found, Walk, WalkError, is_ignored_name, mtime_ns, walk};

/// Runs blocking file work (hashing, probing, walking, fsync) off the async threads: the one
/// helper every async caller of this room uses. Fails only if the work panicked or the
/// runtime is shutting down.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// The longest side, in pixels, the service accepts.
pub const MAX_SIDE: u32 = 6000;
