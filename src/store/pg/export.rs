//! Provenance and fixity reads on the shared queue: the rows `hili export` lists (one per
//! job, or one per event with what a PREMIS event needs) and the done results of an output
//! folder that its manifest lists — the SQLite side's `export.rs`, translated. The export
//! covers the whole queue (every node's jobs; each events row also names its node).

use std::path::{Path, PathBuf};

use super::PgStore;
use crate::store::error::SqlContext;
use crate::store::export::{export_row, provenance_event};
use crate::store::jobs::{JOB_COLUMNS, bytes_path, path_bytes};
use crate::store::{ExportRow, ProvenanceEvent, StoreError};

impl PgStore {
    /// Every job changed (`updated_at`) at or after `since_ms` (all without it), by id, with
    /// its upload time and the credits seen after it.
    pub async fn export_jobs(&self, since_ms: Option<i64>) -> Result<Vec<ExportRow>, StoreError> {
        let context = "reading the jobs to export";
        let sql = format!(
            "SELECT {JOB_COLUMNS}, (SELECT MAX(e.at) FROM events AS e WHERE e.job_id = jobs.id \
             AND e.to_state = 'processing' AND e.from_state != 'processing') AS uploaded_at \
             FROM jobs WHERE updated_at >= $1 ORDER BY id"
        );
        // One snapshot for both reads, so the credit counts match the jobs (other nodes write
        // while this reads).
        let mut tx = self.begin(context).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .ctx(context)?;
        let rows = sqlx::query(&sql)
            .bind(since_ms.unwrap_or(i64::MIN))
            .fetch_all(&mut *tx)
            .await
            .ctx(context)?;
        let seen: Vec<(i64, i64)> =
            sqlx::query_as("SELECT at, credits_left FROM credit_observations ORDER BY at, id")
                .fetch_all(&mut *tx)
                .await
                .ctx("reading the credit counts seen")?;
        tx.commit().await.ctx(context)?;
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
             WHERE e.at >= $1 ORDER BY e.job_id, e.id",
        )
        .bind(since_ms.unwrap_or(i64::MIN))
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        rows.iter()
            .map(|row| provenance_event(row, context))
            .collect()
    }

    /// The done results of jobs queued with `output_dir` as their output folder, as (result
    /// path, SHA-256) sorted by path (BYTEA sorts bytewise, as SQLite's BLOB): what that
    /// folder's manifest lists.
    pub async fn done_results_in(
        &self,
        output_dir: &Path,
    ) -> Result<Vec<(PathBuf, String)>, StoreError> {
        let context = format!("listing the results in {}", output_dir.display());
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT output_path, output_sha256 FROM jobs WHERE state = 'done' \
             AND output_dir = $1 AND output_path IS NOT NULL AND output_sha256 IS NOT NULL \
             ORDER BY output_path",
        )
        .bind(path_bytes(output_dir))
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        Ok(rows.into_iter().map(|(p, s)| (bytes_path(p), s)).collect())
    }

    /// Every output folder that holds at least one done result.
    pub async fn result_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let context = "listing the output folders with results";
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT DISTINCT output_dir FROM jobs WHERE state = 'done' ORDER BY output_dir",
        )
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        Ok(rows.into_iter().map(bytes_path).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use crate::repair::Repair;

    use super::*;
    use crate::store::AGENT;
    use crate::store::export::{ENQUEUE, SOURCE_DISPOSITION};
    use crate::store::pg::sources::tests::{insert_job, two_nodes};
    use crate::store::state::State;

    #[tokio::test]
    async fn jobs_carry_their_upload_time_and_the_credits_seen_after_it() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let sent = insert_job(&a, b"/in/1.jpg", "processing", Some("node-a")).await;
        let idle = insert_job(&b, b"/in/2.jpg", "queued", Some("node-b")).await;
        a.execute(&format!(
            "UPDATE jobs SET mdf = 'm1', updated_at = 3000 WHERE id = {sent}; \
             INSERT INTO events (job_id, from_state, to_state, at) VALUES \
             ({sent}, 'queued', 'uploading', 1500), ({sent}, 'uploading', 'processing', 2000), \
             ({sent}, 'processing', 'processing', 2600); \
             INSERT INTO credit_observations (at, credits_left) VALUES \
             (1900, 100), (2000, 99), (2500, 98)"
        ))
        .await
        .unwrap();
        let rows = b.export_jobs(None).await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.job.id, r.uploaded_at_ms, r.credits_after))
            .collect();
        assert_eq!(got, [(sent, Some(2000), Some(99)), (idle, None, None)]);
        let since = a.export_jobs(Some(1500)).await.unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].job.id, sent);
        assert_eq!(since[0].job.state(), State::Processing);
    }

    #[tokio::test]
    async fn events_are_typed_by_their_edge_and_name_their_object() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let second = insert_job(&b, b"/in/2.jpg", "done", None).await;
        a.execute(&format!(
            "UPDATE jobs SET content_sha256 = 'cd' WHERE id = {second}; \
             INSERT INTO events (job_id, from_state, to_state, at, agent) VALUES \
             ({second}, 'downloading', 'done', 5000, 'hili/9')"
        ))
        .await
        .unwrap();
        b.mark_disposed(second, Some("kept")).await.unwrap();
        let all = a.export_events(None).await.unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|e| (e.event.job, e.kind, e.agent.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (second, ENQUEUE, Some("hili")),
                (second, "finish", Some("hili/9")),
                (second, SOURCE_DISPOSITION, Some(AGENT)),
            ]
        );
        assert!(all.iter().all(|e| e.source_path == Path::new("/in/2.jpg")
            && e.source_sha256.as_deref() == Some("cd")
            && e.repair == Repair::Sr));
        let since = a.export_events(Some(5000)).await.unwrap();
        assert_eq!(since.len(), 2);
        assert_eq!(since[1].event.detail.as_deref(), Some("source: kept"));
    }

    #[tokio::test]
    async fn done_results_are_listed_per_output_folder_in_byte_order() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        insert_job(&a, b"/in/\xff.jpg", "done", Some("node-a")).await;
        insert_job(&b, b"/in/b.jpg", "done", Some("node-b")).await;
        insert_job(&a, b"/in/a.jpg", "done", None).await;
        let elsewhere = insert_job(&a, b"/in/c.jpg", "done", None).await;
        insert_job(&a, b"/in/d.jpg", "failed", None).await;
        a.execute(&format!(
            "UPDATE jobs SET output_dir = convert_to('/out2', 'UTF8') WHERE id = {elsewhere}"
        ))
        .await
        .unwrap();
        let listed = a.done_results_in(Path::new("/out")).await.unwrap();
        let paths: Vec<&[u8]> = listed
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes())
            .collect();
        assert_eq!(paths, [&b"/out/a.jpg"[..], b"/out/b.jpg", b"/out/\xff.jpg"]);
        assert!(listed.iter().all(|(_, sha)| sha == &"ab".repeat(32)));
        assert!(
            a.done_results_in(Path::new("/none"))
                .await
                .unwrap()
                .is_empty()
        );
        let dirs = b.result_dirs().await.unwrap();
        assert_eq!(dirs, [PathBuf::from("/out"), PathBuf::from("/out2")]);
    }
}
