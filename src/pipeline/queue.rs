//! Opening the queue for a run: the queue must be the one that wrote the outputs. Every output
//! directory (of the `[[watch]]` folders and of the queue's jobs) may hold a `.hili-queue`
//! marker with the id of the queue that wrote there. A different id means the database was
//! lost, damaged and replaced, or is another queue's: the run is refused rather than upload
//! (and pay for) every photo again, with what to do. The library owns this rule, so every
//! entry point that runs the pipeline (`hili run`, `--once`, the daemon) gets it.

use std::path::PathBuf;

use crate::store::{Location, Store, StoreError};

/// Why the queue could not be opened for a run.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Foreign(Box<ForeignQueue>),
    #[error("could not read {}: {source}; check the output directory's permissions", .path.display())]
    Marker {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An output directory marked by another queue than the one about to run.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dir} holds results of another hili queue: its marker {marker} names queue {other}, but \
     the queue database {db} is {ours}. Starting would upload (and pay for) photos again whose \
     results may already be there. If the database was deleted or damaged, stop and restore \
     {db} from a backup; if you mean to start afresh with this database (or this directory \
     is shared on purpose), delete {marker} and run again",
    dir = .dir.display(), marker = .marker.display(), db = .db.display()
)]
pub struct ForeignQueue {
    pub dir: PathBuf,
    pub marker: PathBuf,
    pub other: String,
    pub db: PathBuf,
    /// "missing", or "queue <id>".
    pub ours: String,
}

/// The first of `dirs` whose marker names a queue other than `own` (`None`: any marker).
fn foreign_marker(
    dirs: &[PathBuf],
    own: Option<&str>,
) -> Result<Option<(PathBuf, String)>, QueueError> {
    for dir in dirs {
        let found = crate::media::read_marker(dir).map_err(|source| QueueError::Marker {
            path: crate::media::marker_path(dir),
            source,
        })?;
        if let Some(other) = found
            && Some(other.as_str()) != own
        {
            return Ok(Some((dir.clone(), other)));
        }
    }
    Ok(None)
}

/// Opens the queue database at `db`, refusing (before creating anything) when an output
/// directory — of `outputs` (the watch folders') or of the queue's jobs — carries another
/// queue's marker. See the module doc.
pub async fn open(queue: &Location, outputs: &[PathBuf]) -> Result<Store, QueueError> {
    let db = PathBuf::from(queue.shown());
    let mut dirs: Vec<PathBuf> = outputs.to_vec();
    let refuse = |dir: PathBuf, other: String, ours: String| ForeignQueue {
        marker: crate::media::marker_path(&dir),
        dir,
        other,
        db: db.clone(),
        ours,
    };
    if queue.sqlite_path().is_some_and(|p| !p.exists())
        && let Some((dir, other)) = foreign_marker(&dirs, None)?
    {
        let ours = "missing (it would be created empty)".to_string();
        return Err(QueueError::Foreign(Box::new(refuse(dir, other, ours))));
    }
    let store = Store::open_at(queue).await?;
    let own = store.queue_id().await?;
    dirs.extend(store.output_dirs().await?);
    dirs.sort();
    dirs.dedup();
    if let Some((dir, other)) = foreign_marker(&dirs, Some(&own))? {
        let jobs = store.job_count().await.unwrap_or(0);
        store.close().await;
        let ours = format!("queue {own} ({jobs} job(s))");
        return Err(QueueError::Foreign(Box::new(refuse(dir, other, ours))));
    }
    Ok(store)
}
