//! The download stage's metadata step (`[output] metadata = "copy"`): the source's EXIF, XMP,
//! IPTC and ICC profile are written into the downloaded result while it is still a temp file,
//! before it is placed and its SHA-256 recorded, so the recorded hash is of the final file and
//! a crash in between costs only a download (the temp file is removed at start-up). A source
//! whose metadata cannot be read or written still yields its result, as the service sent it,
//! with a warning in the job's events.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::media::metadata::{self, Options, Provenance};
use crate::media::{self, AtomicFile};
use crate::store::{Job, JobId};

use super::fetch_error::FetchError;
use super::{Ctx, Metadata, PipelineError};

/// What the step needs from the run, taken before the blocking work.
#[derive(Debug, Clone)]
pub(super) struct Carry {
    metadata: Metadata,
    strip_gps: bool,
    /// The service, as the provenance record names it.
    service: String,
}

impl Carry {
    pub(super) fn of(ctx: &Ctx) -> Carry {
        Carry {
            metadata: ctx.settings.metadata,
            strip_gps: ctx.settings.strip_gps,
            service: format!("Hili PhotoEnhance at {}", ctx.api.base_url()),
        }
    }

    /// Carries `job`'s source metadata into `file` (blocking). Returns the warning to note in
    /// the job's events, if any; fails only when the temp file cannot be rewritten.
    pub(super) fn apply(
        &self,
        file: &mut AtomicFile,
        job: &Job,
    ) -> Result<Option<String>, FetchError> {
        if self.metadata == Metadata::None {
            return Ok(None);
        }
        crate::failpoint::hit_for("before-metadata-copy", &job.source_path);
        let src = job.source_path.display();
        let warn = |why: String| {
            let text = format!(
                "metadata of {src} not copied into its result: {why}; the result is kept as the \
                 service sent it (set [output] metadata = \"none\" to skip this step)"
            );
            tracing::warn!(job = %job.id, "{text}");
            Ok(Some(text))
        };
        let source = match std::fs::read(&job.source_path) {
            Ok(b) => b,
            Err(e) => return warn(format!("the source cannot be read ({e})")),
        };
        let sha = media::sha256_bytes(&source);
        if job.content_sha256.as_ref().is_some_and(|s| *s != sha) {
            return warn("the source has changed since it was uploaded".into());
        }
        let dir = file
            .temp_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let werr = |source| FetchError::Write {
            dir: dir.clone(),
            source,
        };
        let result = std::fs::read(file.temp_path()).map_err(werr)?;
        let opts = self.options(job, sha);
        match metadata::carry_over(&source, &result, &opts) {
            Ok((bytes, report)) => {
                file.replace_with(&bytes).map_err(werr)?;
                tracing::debug!(job = %job.id, "metadata carried over: {}", report.written.join(", "));
                if report.warnings.is_empty() {
                    Ok(None)
                } else {
                    let text = format!(
                        "metadata of {src} copied into its result in part: {}",
                        report.warnings.join("; ")
                    );
                    tracing::warn!(job = %job.id, "{text}");
                    Ok(Some(text))
                }
            }
            Err(e) => warn(e.to_string()),
        }
    }

    fn options(&self, job: &Job, sha: String) -> Options {
        let version = env!("CARGO_PKG_VERSION");
        let action = action(job);
        Options {
            strip_gps: self.strip_gps,
            software: format!("hili {version}, {action}"),
            provenance: Provenance {
                source_name: job
                    .source_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source_sha256: sha,
                action,
                agent: format!("hili {version} with {}", self.service),
                when: processed_at(job),
            },
        }
    }
}

/// When the service took the photo (its upload's answer): the provenance record's time. Fixed
/// per result, so a download repeated after a crash between placing the result and recording
/// `done` writes the identical file, which the commit recognises instead of numbering a copy.
fn processed_at(job: &Job) -> SystemTime {
    let ms = job.processing_since_ms.unwrap_or(job.created_at_ms).max(0) as u64;
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The repair, in words: `colour (super-resolution, repair and colourisation)`.
fn action(job: &Job) -> String {
    format!("{} ({})", job.repair, job.repair.in_words(job.rgb))
}

/// Notes the step's warning, if any, in the job's events.
pub(super) async fn note(
    ctx: &Ctx,
    id: JobId,
    warning: Option<String>,
) -> Result<(), PipelineError> {
    if let Some(w) = warning {
        ctx.store.note(id, &w).await?;
    }
    Ok(())
}
