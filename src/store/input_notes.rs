//! What was done to a job's input before its upload (converted, downscaled, the first page of
//! several), kept in its events as `input: …` rows that change no state, and where the
//! converted copies live: a folder next to the database.

use std::collections::HashMap;
use std::path::PathBuf;

use sqlx::Row;

use super::error::SqlContext;
use super::{JobId, SqliteStore, StoreError};

/// The prefix of an input note's `detail` in `events`.
const PREFIX: &str = "input: ";

impl SqliteStore {
    /// The folder of this queue's converted copies: `<database>-converted`, beside the
    /// database (like SQLite's `-wal`), so two queues in one state directory never share it.
    pub fn converted_dir(&self) -> PathBuf {
        self.local_file("converted")
    }

    /// `<database>-<name>`: a file (or folder) of this queue's own, beside the database.
    pub fn local_file(&self, name: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push("-");
        p.push(name);
        PathBuf::from(p)
    }

    /// Records `note` in job `id`'s events (state unchanged), once; see [`SqliteStore::note`].
    pub async fn note_input(&self, id: JobId, note: &str) -> Result<(), StoreError> {
        self.note(id, &format!("{PREFIX}{note}")).await
    }

    /// The latest input note of every job that has one, without its prefix.
    pub async fn input_notes(&self) -> Result<HashMap<JobId, String>, StoreError> {
        let context = "reading how inputs were converted";
        let rows = sqlx::query(
            "SELECT job_id, substr(detail, ?) FROM events WHERE detail LIKE ? ORDER BY id",
        )
        .bind(PREFIX.len() as i64 + 1)
        .bind(format!("{PREFIX}%"))
        .fetch_all(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        let mut out = HashMap::new();
        for r in rows {
            let id: i64 = r.try_get(0).ctx(context)?;
            let note: String = r.try_get(1).ctx(context)?;
            out.insert(JobId(id), note);
        }
        Ok(out)
    }
}
