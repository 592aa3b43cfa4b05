//! The decoded job and event rows, and the lossless encodings they use in SQLite: paths as
//! their raw OS bytes (BLOB), repair types as wire values, colours as "R,G,B".

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{JobId, State, StoreError};
use crate::media::FileId;
use crate::repair::{Repair, Rgb};

/// Every column of `jobs`, decoded. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub source_path: PathBuf,
    pub source_root: PathBuf,
    pub output_dir: PathBuf,
    pub repair: Repair,
    pub rgb: Option<Rgb>,
    pub size: u64,
    pub mtime_ns: i64,
    /// The source's device and inode when queued (`None` for jobs queued before they were).
    pub file_id: Option<FileId>,
    /// Lowercase hex SHA-256 of the content, once hashed.
    pub content_sha256: Option<String>,
    /// The state, with what it must carry (see [`Stage`]).
    pub stage: Stage,
    /// Upload attempts so far (each `begin_upload` adds one; a user `retry` resets it).
    pub attempts: u32,
    /// No upload before this instant (backoff).
    pub not_before_ms: i64,
    /// Credits left when the last upload's credit epoch opened (for reconciliation).
    pub credits_before: Option<u64>,
    /// The credit epoch of the last upload intent (`None` before epochs existed).
    pub epoch: Option<super::EpochId>,
    pub output_path: Option<PathBuf>,
    pub output_sha256: Option<String>,
    /// Why the job was last failed, held or requeued.
    pub reason: Option<String>,
    /// At least one credit was charged for this job.
    pub credit_spent: bool,
    /// How many credits were charged for this job (re-uploads add more).
    pub charges: u32,
    /// Enqueued with `--force`: process even if an identical result exists.
    pub force: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub processing_since_ms: Option<i64>,
    pub next_poll_at_ms: Option<i64>,
}

/// The service's handle on an uploaded photo: its id (`mdf`), and the address of its result
/// when the service gave one with the upload's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub mdf: String,
    pub img_url: Option<String>,
}

/// A job's state with what that state must have: a job in `processing` or `downloading` always
/// has the service's photo, so "downloading without an mdf" cannot be represented (a row that
/// says so does not decode: [`StoreError::Corrupt`]). `done`, `failed` and `held` keep the photo
/// when the job had one (a held job's result can still be fetched); the other states have none
/// (a job back in `queued` has its result columns cleared by the state machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Uploading,
    Processing(Photo),
    Downloading(Photo),
    Done(Option<Photo>),
    Failed(Option<Photo>),
    Held(Option<Photo>),
    Skipped,
}

impl Stage {
    /// Decodes the `state`, `mdf` and `img_url` columns; `Err` names what is missing.
    fn decode(state: State, mdf: Option<String>, img_url: Option<String>) -> Result<Stage, String> {
        let photo = mdf.map(|mdf| Photo { mdf, img_url });
        let required = |photo: Option<Photo>| photo.ok_or(format!("{state} without an mdf"));
        Ok(match state {
            State::Queued => Stage::Queued,
            State::Uploading => Stage::Uploading,
            State::Processing => Stage::Processing(required(photo)?),
            State::Downloading => Stage::Downloading(required(photo)?),
            State::Done => Stage::Done(photo),
            State::Failed => Stage::Failed(photo),
            State::Held => Stage::Held(photo),
            State::Skipped => Stage::Skipped,
        })
    }

    /// The state, without what it carries.
    pub fn state(&self) -> State {
        match self {
            Stage::Queued => State::Queued,
            Stage::Uploading => State::Uploading,
            Stage::Processing(_) => State::Processing,
            Stage::Downloading(_) => State::Downloading,
            Stage::Done(_) => State::Done,
            Stage::Failed(_) => State::Failed,
            Stage::Held(_) => State::Held,
            Stage::Skipped => State::Skipped,
        }
    }

    /// The service's photo, in the states that have one.
    pub fn photo(&self) -> Option<&Photo> {
        match self {
            Stage::Processing(p) | Stage::Downloading(p) => Some(p),
            Stage::Done(p) | Stage::Failed(p) | Stage::Held(p) => p.as_ref(),
            Stage::Queued | Stage::Uploading | Stage::Skipped => None,
        }
    }
}

/// What makes two jobs produce the same result: content, repair type and colour.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub content_sha256: String,
    pub repair: Repair,
    pub rgb: Option<Rgb>,
}

impl Job {
    /// The job's state.
    pub fn state(&self) -> State {
        self.stage.state()
    }

    /// The service's id of the uploaded photo, once the upload was answered.
    pub fn mdf(&self) -> Option<&str> {
        self.stage.photo().map(|p| p.mdf.as_str())
    }

    /// The service's URL of the result, once known.
    pub fn img_url(&self) -> Option<&str> {
        self.stage.photo().and_then(|p| p.img_url.as_deref())
    }

    /// The job's identity, once its content is hashed.
    pub fn identity(&self) -> Option<Identity> {
        self.content_sha256.as_ref().map(|h| Identity {
            content_sha256: h.clone(),
            repair: self.repair,
            rgb: self.rgb,
        })
    }
}

/// One row of the append-only audit trail. `from` is `None` for the row written at enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub job: JobId,
    pub from: Option<State>,
    pub to: State,
    pub at_ms: i64,
    pub detail: Option<String>,
}

/// The columns of `jobs`, in the order [`decode_job`] does not care about (it reads by name).
pub(crate) const JOB_COLUMNS: &str = "id, source_path, source_root, output_dir, repair, rgb, \
    size, mtime_ns, content_sha256, state, attempts, not_before, credits_before, mdf, img_url, \
    output_path, output_sha256, reason, credit_spent, charges, force, created_at, updated_at, \
    processing_since, next_poll_at, source_dev, source_ino, epoch";

pub(crate) fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

pub(crate) fn bytes_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&b))
}

pub(crate) fn rgb_text(rgb: Option<Rgb>) -> Option<String> {
    rgb.map(|c| c.to_string())
}

/// The typed columns a row of either backend gives (both store the same types: BIGINT or
/// INTEGER, TEXT, BLOB or BYTEA; flags as 0/1 integers), so one decoder reads both.
pub(crate) trait Columns {
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
}

macro_rules! columns {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}

columns!(SqliteRow);
columns!(PgRow);

pub(crate) fn decode_job(row: &impl Columns) -> Result<Job, StoreError> {
    let id = JobId(row.int("id").map_err(|e| StoreError::Sql {
        context: "reading a job id".into(),
        source: e,
    })?);
    let bad = |detail: String| StoreError::Corrupt { job: id, detail };
    let sql = |e: sqlx::Error| bad(e.to_string());

    let repair_s = row.text("repair").map_err(sql)?;
    let repair =
        Repair::from_wire(&repair_s).ok_or_else(|| bad(format!("repair type {repair_s:?}")))?;
    let rgb = match row.opt_text("rgb").map_err(sql)? {
        Some(s) => Some(s.parse::<Rgb>().map_err(|e| bad(format!("colour: {e}")))?),
        None => None,
    };
    let state_s = row.text("state").map_err(sql)?;
    let state = state_s.parse::<State>().map_err(|e| bad(e.to_string()))?;
    let stage = Stage::decode(
        state,
        row.opt_text("mdf").map_err(sql)?,
        row.opt_text("img_url").map_err(sql)?,
    )
    .map_err(bad)?;
    let nonneg =
        |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(format!("negative {what} {v}")));
    let size = nonneg(row.int("size").map_err(sql)?, "size")?;
    let attempts = nonneg(row.int("attempts").map_err(sql)?, "attempts")? as u32;
    let charges = nonneg(row.int("charges").map_err(sql)?, "charges")? as u32;
    let credits_before = match row.opt_int("credits_before").map_err(sql)? {
        Some(v) => Some(nonneg(v, "credits_before")?),
        None => None,
    };

    let dev = row.opt_int("source_dev").map_err(sql)?;
    let ino = row.opt_int("source_ino").map_err(sql)?;
    // Stored as the u64s' bits (see enqueue).
    let file_id = dev.zip(ino).map(|(dev, ino)| FileId {
        dev: dev as u64,
        ino: ino as u64,
    });

    Ok(Job {
        id,
        source_path: bytes_path(row.bytes("source_path").map_err(sql)?),
        source_root: bytes_path(row.bytes("source_root").map_err(sql)?),
        output_dir: bytes_path(row.bytes("output_dir").map_err(sql)?),
        repair,
        rgb,
        size,
        mtime_ns: row.int("mtime_ns").map_err(sql)?,
        file_id,
        content_sha256: row.opt_text("content_sha256").map_err(sql)?,
        stage,
        attempts,
        not_before_ms: row.int("not_before").map_err(sql)?,
        credits_before,
        epoch: row.opt_int("epoch").map_err(sql)?.map(super::EpochId),
        output_path: row.opt_bytes("output_path").map_err(sql)?.map(bytes_path),
        output_sha256: row.opt_text("output_sha256").map_err(sql)?,
        reason: row.opt_text("reason").map_err(sql)?,
        credit_spent: row.int("credit_spent").map_err(sql)? != 0,
        charges,
        force: row.int("force").map_err(sql)? != 0,
        created_at_ms: row.int("created_at").map_err(sql)?,
        updated_at_ms: row.int("updated_at").map_err(sql)?,
        processing_since_ms: row.opt_int("processing_since").map_err(sql)?,
        next_poll_at_ms: row.opt_int("next_poll_at").map_err(sql)?,
    })
}

pub(crate) fn decode_event(row: &impl Columns) -> Result<Event, StoreError> {
    let job = JobId(row.int("job_id").map_err(|e| StoreError::Sql {
        context: "reading an event".into(),
        source: e,
    })?);
    let bad = |detail: String| StoreError::Corrupt { job, detail };
    let sql = |e: sqlx::Error| bad(e.to_string());
    let from = match row.opt_text("from_state").map_err(sql)? {
        Some(s) => Some(s.parse::<State>().map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let to_s = row.text("to_state").map_err(sql)?;
    Ok(Event {
        id: row.int("id").map_err(sql)?,
        job,
        from,
        to: to_s.parse::<State>().map_err(|e| bad(e.to_string()))?,
        at_ms: row.int("at").map_err(sql)?,
        detail: row.opt_text("detail").map_err(sql)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_at_the_service_cannot_lack_its_photo() {
        for state in [State::Processing, State::Downloading] {
            let err = Stage::decode(state, None, Some("http://x/r.jpg".into())).unwrap_err();
            assert_eq!(err, format!("{state} without an mdf"));
        }
    }

    #[test]
    fn each_state_decodes_with_what_it_carries() {
        let photo = || Some("m1".to_string());
        for state in State::ALL {
            let stage = Stage::decode(state, photo(), None).expect("decodes");
            assert_eq!(stage.state(), state);
            let kept = stage.photo().map(|p| p.mdf.as_str());
            // A queued, uploading or skipped job has no result at the service to refer to.
            let expect = match state {
                State::Queued | State::Uploading | State::Skipped => None,
                _ => Some("m1"),
            };
            assert_eq!(kept, expect, "{state}");
        }
    }
}
