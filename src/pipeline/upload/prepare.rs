//! Between the skip and the credit (step 2 of an upload, last part): a source the service does
//! not take as it is is converted (`media::convert`) into a copy in the state directory, next
//! to the database. The copy is named from the source's hash and the job, so a crash rebuilds
//! the same file under the same name; it is removed once the send is over (start-up recovery
//! clears any a crash left). The conversion is recorded in the job's events. A source that
//! cannot be converted fails its job with the reason, before any credit is spent.

use crate::failpoint;
use crate::media::{self, Converted, Plan};
use crate::store::{Job, State};

use crate::pipeline::{Ctx, PipelineError, blocking};

/// The converted copy of `job`'s source, or `None` when the job was failed instead.
pub(super) async fn convert(
    ctx: &Ctx,
    job: &Job,
    sha: &str,
    plan: Plan,
) -> Result<Option<Converted>, PipelineError> {
    let dir = ctx.store.converted_dir();
    let name = format!("{sha}-{}", job.id.0);
    let limit = ctx.settings.max_upload_bytes;
    let src = job.source_path.clone();
    let done = blocking(move || media::convert(&src, &plan, &dir, &name, limit)).await?;
    let c = match done {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(job = %job.id, "{reason}");
            ctx.store
                .fail(job.id, State::Queued, &reason, false)
                .await?;
            return Ok(None);
        }
    };
    ctx.store.note_input(job.id, &c.note).await?;
    if c.pages > 1 {
        tracing::warn!(
            job = %job.id,
            "{}: has {} pages; only the first is sent ({})",
            job.source_path.display(),
            c.pages,
            c.note
        );
    } else {
        tracing::info!(job = %job.id, "{}: {}", job.source_path.display(), c.note);
    }
    failpoint::hit_for("after-convert", &job.source_path);
    Ok(Some(c))
}

/// Removes the converted copy, if there is one. A copy that cannot be removed is only logged:
/// start-up recovery clears the folder.
pub(super) async fn discard(job: &Job, converted: Option<Converted>) {
    let Some(c) = converted else {
        return;
    };
    let path = c.path.clone();
    match blocking(move || std::fs::remove_file(&path)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!(
            job = %job.id,
            "could not remove the converted copy {}: {e}; the next start removes it",
            c.path.display()
        ),
        Err(_) => {}
    }
}
