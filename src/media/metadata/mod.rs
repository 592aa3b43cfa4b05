//! Carrying a photo's metadata into its result. The service sends back pixels only; this
//! module reads the source's EXIF, XMP, IPTC and ICC profile (from JPEG segments, PNG chunks
//! or TIFF tags), corrects what the processing made wrong (pixel dimensions, the embedded
//! thumbnail, the orientation, the resolution, `Software`), adds a provenance record to the
//! XMP, and writes it all into the result's container (JPEG APPn segments, PNG chunks) without
//! re-encoding a pixel. Pure and blocking: bytes in, bytes out; the caller owns the files.
//! The rules are written down in `docs/metadata.md`.

mod geometry;
mod ifd;
mod iptc;
mod result;
#[doc(hidden)]
pub mod sample;
mod source;
#[cfg(test)]
mod tests;
mod xmp;

use std::time::SystemTime;

pub use geometry::{Density, DensityUnit, Geometry};
pub use source::{Carried, SourceKind};

/// Why a source's metadata could not be carried into its result. The result is kept as the
/// service sent it; the caller notes the reason in the job's events.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the source is not a JPEG, PNG or TIFF file")]
    UnknownSource,
    #[error("the source's {kind} structure cannot be read ({detail})")]
    Source { kind: &'static str, detail: String },
    #[error("the result is not a JPEG or PNG file, or its structure cannot be read ({0})")]
    Result(String),
    #[error("the corrected EXIF could not be written ({0})")]
    ExifWrite(String),
}

/// Who made the result, from what, and when: the provenance record written into the XMP.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The source's file name (no directories: a result may be shared without them).
    pub source_name: String,
    /// Lowercase hex SHA-256 of the source's content.
    pub source_sha256: String,
    /// What was done, e.g. `colour (super-resolution, repair and colourisation)`.
    pub action: String,
    /// The software and service, e.g. `hili 0.1.0 with Hili PhotoEnhance (https://…)`.
    pub agent: String,
    pub when: SystemTime,
}

/// What to carry over and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Drop location: the EXIF GPS IFD and XMP `exif:GPS*` properties.
    pub strip_gps: bool,
    /// The EXIF `Software` value, naming hili and the repair.
    pub software: String,
    pub provenance: Provenance,
}

/// What [`carry_over`] did, for the log and the tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Parts written into the result: `exif`, `xmp`, `iptc`, `icc`, `density`.
    pub written: Vec<&'static str>,
    /// The result's pixels were found already upright, so `Orientation` was reset to 1.
    pub orientation_reset: bool,
    /// Parts of the source that could not be read and were left out, each with the reason.
    pub warnings: Vec<String>,
}

/// Reads the metadata of `source` (a JPEG, PNG or TIFF file's bytes) and writes it, corrected,
/// into `result` (the JPEG or PNG the service sent). Returns the new result bytes.
pub fn carry_over(
    source: &[u8],
    result: &[u8],
    opts: &Options,
) -> Result<(Vec<u8>, Report), MetadataError> {
    let carried = source::read(source)?;
    result::write(&carried, result, opts)
}

/// The kind of an image by its first bytes, TIFF included (the service's formats are in
/// [`super::sniff`]).
pub fn source_kind(head: &[u8]) -> Option<SourceKind> {
    source::kind(head)
}
