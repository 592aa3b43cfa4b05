//! Content identity: (content SHA-256, repair wire value, colour). Lets the pipeline copy an
//! existing result instead of paying again, or wait while an identical job is in flight.

use super::error::SqlContext;
use super::jobs::rgb_text;
use super::queries::Bind;
use super::{Identity, Job, JobId, State, Store, StoreError};

impl Store {
    /// Records the content hash (64 hex digits) of a queued job. Not a transition: no event.
    pub async fn set_content_hash(&self, id: JobId, sha256: &str) -> Result<(), StoreError> {
        self.set_hash(id, State::Queued, sha256, "content hash")
            .await
    }

    /// The most recent done job with this identity and an output on record.
    pub async fn find_done_by_identity(&self, ident: &Identity) -> Result<Option<Job>, StoreError> {
        let rgb = rgb_text(ident.rgb);
        let mut v = self
            .select_jobs(
                "SELECT {cols} FROM jobs WHERE content_sha256 = ? AND repair = ? AND rgb IS ? \
                 AND state = 'done' AND output_path IS NOT NULL ORDER BY id DESC LIMIT 1",
                [
                    Bind::Str(&ident.content_sha256),
                    Bind::Str(ident.repair.wire()),
                    Bind::OptStr(rgb.as_deref()),
                ],
                "looking for an identical finished job",
            )
            .await?;
        Ok(v.pop())
    }

    /// Whether ANOTHER job (not `excluding`) with this identity is uploading, processing or
    /// downloading, or is queued and hashed with a lower id (so it goes first). The caller
    /// should then wait and later copy that job's output instead of paying twice.
    pub async fn identity_in_flight(
        &self,
        ident: &Identity,
        excluding: JobId,
    ) -> Result<bool, StoreError> {
        let rgb = rgb_text(ident.rgb);
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE content_sha256 = ? AND repair = ? \
             AND rgb IS ? AND id != ? AND (state IN ('uploading', 'processing', 'downloading') \
             OR (state = 'queued' AND id < ?)))",
        )
        .bind(&ident.content_sha256)
        .bind(ident.repair.wire())
        .bind(rgb)
        .bind(excluding.0)
        .bind(excluding.0)
        .fetch_one(&mut *self.reader("using the queue database").await?)
        .await
        .ctx(format!("looking for jobs identical to job {excluding}"))?;
        Ok(found)
    }
}
