//! The steps shared by the daemon's folder tasks and `scan_once`: which directories each
//! watch must never enter, confirming due files (stat + open for reading, off the runtime
//! threads) and queueing stable files through the store, which alone decides what is new.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::scan::stat_file;
use super::stability::{Stat, Tracker, Verdict};
use crate::config::WatchConfig;
use crate::media::{FileId, mtime_ns};
use crate::store::{EnqueueOutcome, Known, NewJob, Store, StoreError};

/// Most files per `enqueue_many` transaction, so the pipeline never waits long on the lock.
const CHUNK: usize = 1000;

/// A watch plus the directories under it that it must never ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderSpec {
    pub cfg: WatchConfig,
    pub excluded: Vec<PathBuf>,
}

/// Every watch with its exclusions: the output, done and failed folders of EVERY watch (one
/// watch's output inside another's folder must not be fed back in) and watch folders nested
/// inside it (they belong to their own, more specific watch).
pub(crate) fn specs(watches: &[WatchConfig]) -> Vec<FolderSpec> {
    watches
        .iter()
        .map(|w| {
            let mut excluded: Vec<PathBuf> = watches
                .iter()
                .flat_map(|o| {
                    o.written_dirs()
                        .chain((o.path != w.path).then_some(o.path.as_path()))
                })
                .filter(|d| d.starts_with(&w.path) && *d != w.path)
                .map(Path::to_path_buf)
                .collect();
            excluded.sort();
            excluded.dedup();
            FolderSpec {
                cfg: w.clone(),
                excluded,
            }
        })
        .collect()
}

/// The due files' outcome.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Stable and readable: to be queued.
    pub ready: Vec<(PathBuf, Stat)>,
    /// Stable but could not be opened for reading.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
    pub gone: Vec<PathBuf>,
}

/// Stats (and tries to open) every file whose check is due, and lets the tracker decide.
pub(crate) async fn check_due(tracker: &mut Tracker) -> Checked {
    let due = tracker.take_due(Instant::now());
    let mut out = Checked::default();
    if due.is_empty() {
        return out;
    }
    let probed = tokio::task::spawn_blocking(move || {
        due.into_iter()
            .map(|p| {
                let stat = stat_file(&p);
                // Opening proves the file is readable now (permissions, SMB locks surface as
                // EACCES); it raises no change event (reads are filtered).
                let open = stat.map(|_| File::open(&p).map(drop));
                (p, stat, open)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let now = Instant::now();
    for (p, stat, open) in probed {
        match tracker.confirm(&p, stat, now) {
            Verdict::Stable(s) => match open {
                Some(Ok(())) => out.ready.push((p, s)),
                Some(Err(e)) => out.unreadable.push((p, e)),
                None => out.gone.push(p),
            },
            Verdict::Gone => out.gone.push(p),
            Verdict::Waiting | Verdict::Unknown => {}
        }
    }
    out
}

/// Queues `ready` files of `cfg` (in chunks); outcomes in input order.
pub(crate) async fn enqueue(
    store: &Store,
    cfg: &WatchConfig,
    ready: &[(PathBuf, Stat)],
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let mut out = Vec::with_capacity(ready.len());
    for chunk in ready.chunks(CHUNK) {
        let ids = file_ids(chunk.to_vec()).await;
        let jobs = chunk
            .iter()
            .zip(ids)
            .map(|((p, s), file_id)| NewJob {
                source_path: p.clone(),
                source_root: cfg.path.clone(),
                output_dir: cfg.output.clone(),
                repair: cfg.repair,
                rgb: cfg.rgb,
                size: s.size,
                mtime_ns: s.mtime_ns,
                file_id,
                force: false,
            })
            .collect();
        out.extend(store.enqueue_many_as(jobs, Known::AnySettings).await?);
    }
    let queued = out
        .iter()
        .filter(|o| matches!(o, EnqueueOutcome::Queued(_)))
        .count();
    // One line per file for ordinary drops; a summary for a mass drop.
    if queued <= 20 {
        for ((p, _), o) in ready.iter().zip(&out) {
            if let EnqueueOutcome::Queued(id) = o {
                tracing::info!("queued {} as job {id} ({})", p.display(), cfg.repair);
            }
        }
    } else {
        tracing::info!(
            "queued {queued} files from {} ({})",
            cfg.path.display(),
            cfg.repair
        );
    }
    Ok(out)
}

/// The device and inode of each file, recorded with its job so that disposition can tell it
/// from a file saved later under the same name. `None` where the file no longer has the size
/// and mtime found stable (it changed again: disposition then goes by size, mtime and hash).
async fn file_ids(files: Vec<(PathBuf, Stat)>) -> Vec<Option<FileId>> {
    let n = files.len();
    let ids = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|(p, s)| {
                let m = std::fs::metadata(p).ok()?;
                (m.len() == s.size && mtime_ns(&m) == s.mtime_ns).then(|| FileId::of(&m))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    // A panicked task (never expected) leaves the ids unknown rather than failing the intake.
    if ids.len() == n { ids } else { vec![None; n] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::Repair;

    #[test]
    fn exclusions_cover_every_watch_and_nested_folders() {
        let mut a = WatchConfig::new("/w", Repair::Sr, "/w/out");
        a.failed_dir = Some("/w/failed".into());
        let mut b = WatchConfig::new("/w/nested", Repair::Colour, "/elsewhere");
        b.after = super::super::After::Move;
        b.done_dir = Some("/w/nested/done".into());
        let c = WatchConfig::new("/x", Repair::Sr, "/w/from-x");
        let s = specs(&[a, b, c]);
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            s[0].excluded,
            p(&[
                "/w/failed",
                "/w/from-x",
                "/w/nested",
                "/w/nested/done",
                "/w/out"
            ])
        );
        assert_eq!(s[1].excluded, p(&["/w/nested/done"]));
        assert!(s[2].excluded.is_empty());
    }
}
