//! Provenance and fixity reads: the rows `hili export` lists (one per job, or one per event
//! with what a PREMIS event needs), the done results of an output folder that its manifest
//! lists, and the name of the software that writes events (`agent`, migration 0007).
//!
//! An event's PREMIS type is the state machine's edge name: every pair of states is joined by
//! at most one edge (a unit test checks), so the pair the `events` row records names it.

use std::path::{Path, PathBuf};

use super::error::SqlContext;
use super::jobs::{Columns, JOB_COLUMNS, bytes_path, decode_event, decode_job, path_bytes};
use super::state::EDGES;
use super::{Event, Job, SqliteStore, State, StoreError};
use crate::repair::Repair;

/// The software that writes events, with its version: each events row carries it.
pub const AGENT: &str = concat!("hili/", env!("CARGO_PKG_VERSION"));

/// The type of an event that notes what was done with a job's source (its state unchanged).
pub(super) const SOURCE_DISPOSITION: &str = "source_disposition";
/// The type of an event that notes how a job's input was prepared (converted, downscaled).
pub(super) const INPUT: &str = "input_preparation";
/// The type of any other note (a warning of a stage; the state unchanged).
pub(super) const NOTE: &str = "note";
/// The type of the event written when a job is queued.
pub(super) const ENQUEUE: &str = "enqueue";

/// One job as `hili export` lists it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub job: Job,
    /// When the service's answer to the (last) charged upload was recorded.
    pub uploaded_at_ms: Option<i64>,
    /// The first credit count seen at or after that answer: the credits left once this job was
    /// charged (exact with `upload_concurrency = 1` and no other client on the account).
    pub credits_after: Option<u64>,
}

/// One event of a job's audit trail, with what a PREMIS event needs.
#[derive(Debug, Clone)]
pub struct ProvenanceEvent {
    pub event: Event,
    /// The edge name (`uploaded`, `finish`, …), [`ENQUEUE`], or for a note that changed no
    /// state [`SOURCE_DISPOSITION`], [`INPUT`] or [`NOTE`].
    pub kind: &'static str,
    /// The software that wrote it ([`AGENT`] of that time); `None` for rows older than the
    /// column.
    pub agent: Option<String>,
    /// The object: the job's photo and its SHA-256 (once hashed).
    pub source_path: PathBuf,
    pub source_sha256: Option<String>,
    pub repair: Repair,
}

/// The PREMIS type of an event that moved a job `from` → `to` (see the module comment); a
/// note that changed no state is typed by its detail's prefix.
pub fn event_type(from: Option<State>, to: State, detail: Option<&str>) -> &'static str {
    match from {
        None => ENQUEUE,
        Some(f) if f == to => match detail.unwrap_or("") {
            d if d.starts_with("source: ") => SOURCE_DISPOSITION,
            d if d.starts_with("input: ") => INPUT,
            _ => NOTE,
        },
        Some(f) => EDGES
            .iter()
            .find(|e| e.to == to && e.from.contains(&f))
            .map_or("transition", |e| e.name),
    }
}

/// Makes the `agent` the enqueue trigger writes this build's [`AGENT`], inside the enqueue's
/// own transaction (so its rows name the process that wrote them); a no-op when it already is.
pub(crate) async fn set_agent(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('agent', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE value != ?1",
    )
    .bind(AGENT)
    .execute(conn)
    .await
    .ctx("recording hili's version with the enqueued files")?;
    Ok(())
}

impl SqliteStore {
    /// Every job changed (`updated_at`) at or after `since_ms` (all without it), by id, with
    /// its upload time and the credits seen after it.
    pub async fn export_jobs(&self, since_ms: Option<i64>) -> Result<Vec<ExportRow>, StoreError> {
        let context = "reading the jobs to export";
        let sql = format!(
            "SELECT {JOB_COLUMNS}, (SELECT MAX(e.at) FROM events AS e WHERE e.job_id = jobs.id \
             AND e.to_state = 'processing' AND e.from_state != 'processing') AS uploaded_at \
             FROM jobs WHERE updated_at >= ? ORDER BY id"
        );
        let mut conn = self.reader(context).await?;
        let rows = sqlx::query(&sql)
            .bind(since_ms.unwrap_or(i64::MIN))
            .fetch_all(&mut *conn)
            .await
            .ctx(context)?;
        let seen: Vec<(i64, i64)> =
            sqlx::query_as("SELECT at, credits_left FROM credit_observations ORDER BY at, id")
                .fetch_all(&mut *conn)
                .await
                .ctx("reading the credit counts seen")?;
        drop(conn);
        rows.iter()
            .map(|row| export_row(row, &seen, context))
            .collect()
    }

    /// Every event at or after `since_ms` (all without it), by job and then in order.
    pub async fn export_events(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<ProvenanceEvent>, StoreError> {
        let context = "reading the events to export";
        let rows = sqlx::query(
            "SELECT e.id, e.job_id, e.from_state, e.to_state, e.at, e.detail, e.agent, \
             j.source_path, j.content_sha256, j.repair \
             FROM events AS e JOIN jobs AS j ON j.id = e.job_id \
             WHERE e.at >= ? ORDER BY e.job_id, e.id",
        )
        .bind(since_ms.unwrap_or(i64::MIN))
        .fetch_all(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        rows.iter()
            .map(|row| provenance_event(row, context))
            .collect()
    }

    /// The done results of jobs queued with `output_dir` as their output folder, as (result
    /// path, SHA-256) sorted by path: what that folder's manifest lists.
    pub async fn done_results_in(
        &self,
        output_dir: &Path,
    ) -> Result<Vec<(PathBuf, String)>, StoreError> {
        let context = format!("listing the results in {}", output_dir.display());
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT output_path, output_sha256 FROM jobs WHERE state = 'done' \
             AND output_dir = ? AND output_path IS NOT NULL AND output_sha256 IS NOT NULL \
             ORDER BY output_path",
        )
        .bind(path_bytes(output_dir))
        .fetch_all(&mut *self.reader(&context).await?)
        .await
        .ctx(context)?;
        Ok(rows.into_iter().map(|(p, s)| (bytes_path(p), s)).collect())
    }

    /// Every output folder that holds at least one done result.
    pub async fn result_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let context = "listing the output folders with results";
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT DISTINCT output_dir FROM jobs WHERE state = 'done'")
                .fetch_all(&mut *self.reader(context).await?)
                .await
                .ctx(context)?;
        Ok(rows.into_iter().map(bytes_path).collect())
    }
}

/// One row of `hili export`, from either backend: the job, when it was uploaded, and the
/// first credit count seen at or after that (`seen`: (at, credits left), by time).
pub(crate) fn export_row(
    row: &impl Columns,
    seen: &[(i64, i64)],
    context: &str,
) -> Result<ExportRow, StoreError> {
    let job = decode_job(row)?;
    let uploaded_at_ms = row.opt_int("uploaded_at").ctx(context)?;
    let credits_after = uploaded_at_ms.and_then(|t| {
        let i = seen.partition_point(|(at, _)| *at < t);
        seen.get(i).map(|(_, n)| (*n).max(0) as u64)
    });
    Ok(ExportRow {
        job,
        uploaded_at_ms,
        credits_after,
    })
}

/// One event of `hili export --events` with what a PREMIS event needs, from either backend.
pub(crate) fn provenance_event(
    row: &impl Columns,
    context: &str,
) -> Result<ProvenanceEvent, StoreError> {
    let event = decode_event(row)?;
    let repair_s = row.text("repair").ctx(context)?;
    let repair = Repair::from_wire(&repair_s).ok_or_else(|| StoreError::Corrupt {
        job: event.job,
        detail: format!("repair type {repair_s:?}"),
    })?;
    Ok(ProvenanceEvent {
        kind: event_type(event.from, event.to, event.detail.as_deref()),
        agent: row.opt_text("agent").ctx(context)?,
        source_path: bytes_path(row.bytes("source_path").ctx(context)?),
        source_sha256: row.opt_text("content_sha256").ctx(context)?,
        repair,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_of_states_names_one_edge() {
        for (i, a) in EDGES.iter().enumerate() {
            for b in &EDGES[i + 1..] {
                let shared = a.from.iter().any(|f| b.from.contains(f));
                assert!(
                    !(shared && a.to == b.to),
                    "edges {} and {} join the same states: an event's type would be ambiguous; \
                     store the edge name in `events`",
                    a.name,
                    b.name
                );
            }
        }
        let t = |from, to, detail| event_type(from, to, detail);
        assert_eq!(
            t(Some(State::Uploading), State::Processing, None),
            "uploaded"
        );
        assert_eq!(
            t(Some(State::Held), State::Processing, None),
            "adopt_answer_held"
        );
        assert_eq!(t(None, State::Queued, Some("enqueued")), ENQUEUE);
        let done = Some(State::Done);
        assert_eq!(
            t(done, State::Done, Some("source: moved")),
            SOURCE_DISPOSITION
        );
        assert_eq!(
            t(Some(State::Queued), State::Queued, Some("input: TIFF")),
            INPUT
        );
        assert_eq!(t(done, State::Done, Some("metadata: not copied")), NOTE);
    }
}
