//! `hili run --once`: one full scan of every watch folder, waiting for what it found to
//! settle. The rule: every file not already queued is stat'ed, then stat'ed again
//! `stable_for` later (one wait shared by all files, not one per file); files unchanged and
//! readable are queued. A file that changed keeps being re-checked each `stable_for` until
//! it settles, but the whole wait ends `4 × stable_for` after the scan: files still being
//! written then are left for the next run (`ScanReport::still_changing`), never uploaded
//! half-written. An mtime that is already old does NOT skip the second stat (copies can
//! carry an old mtime while their data is still arriving).

use tokio::time::{Instant, sleep_until};

use super::ignore::Ignore;
use super::intake::{FolderSpec, check_due, enqueue, specs};
use super::scan::walk_dir;
use super::stability::Tracker;
use super::{ScanReport, WatchConfig, WatchError};
use crate::store::{EnqueueOutcome, Store};

/// One full scan of `watches`, queueing files once they are stable (see the module doc).
/// Missing folders are logged and counted in `errors`; only a store failure is an error.
pub async fn scan_once(watches: &[WatchConfig], store: &Store) -> Result<ScanReport, WatchError> {
    let mut report = ScanReport::default();
    let mut pending = Vec::new();
    for spec in specs(watches) {
        if let Some(found) = scan_folder(spec, store, &mut report).await? {
            pending.push(found);
        }
    }
    loop {
        let next = pending
            .iter_mut()
            .filter_map(|(_, t, deadline)| t.next_due().filter(|d| d <= deadline))
            .min();
        let Some(next) = next else { break };
        sleep_until(next).await;
        for (cfg, tracker, _) in &mut pending {
            let checked = check_due(tracker).await;
            for (p, e) in &checked.unreadable {
                tracing::warn!(
                    "{} cannot be opened for reading ({e}): not queued; fix its permissions",
                    p.display()
                );
                report.errors += 1;
            }
            if checked.ready.is_empty() {
                continue;
            }
            let outcomes = enqueue(store, cfg, &checked.ready).await?;
            report.enqueued += outcomes
                .iter()
                .filter(|o| matches!(o, EnqueueOutcome::Queued(_)))
                .count() as u64;
        }
    }
    for (cfg, tracker, _) in &pending {
        if !tracker.is_empty() {
            tracing::info!(
                "watch folder {}: {} files are still being written; left for the next run",
                cfg.path.display(),
                tracker.len()
            );
        }
        report.still_changing += tracker.len() as u64;
    }
    Ok(report)
}

/// Walks one watch folder and starts tracking the files not already queued: its settings,
/// its tracker and when its wait ends. `None` when the folder cannot be walked (counted in
/// `report.errors`).
async fn scan_folder(
    spec: FolderSpec,
    store: &Store,
    report: &mut ScanReport,
) -> Result<Option<(WatchConfig, Tracker, Instant)>, WatchError> {
    let cfg = spec.cfg;
    let ignore = Ignore::new(&cfg.path, &cfg.ignore, spec.excluded).map_err(|source| {
        WatchError::Ignore {
            folder: cfg.path.clone(),
            source,
        }
    })?;
    let known = store.known_versions(&cfg.path).await?;
    let (path, rec) = (cfg.path.clone(), cfg.recursive);
    let walked = tokio::task::spawn_blocking(move || walk_dir(&path, &ignore, rec)).await;
    let walked = match walked {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            tracing::warn!(
                "watch folder {} cannot be scanned ({e}): skipped; create it or fix the [[watch]] path",
                cfg.path.display()
            );
            report.errors += 1;
            return Ok(None);
        }
        Err(e) => {
            tracing::error!("scanning {} failed: {e}", cfg.path.display());
            report.errors += 1;
            return Ok(None);
        }
    };
    report.seen += walked.files.len() as u64;
    report.ignored += walked.ignored;
    report.errors += walked.errors;
    let now = Instant::now();
    let mut tracker = Tracker::new(cfg.stable_for);
    for (p, stat) in walked.files {
        if known.get(&p) != Some(&(stat.size, stat.mtime_ns)) {
            tracker.observe(p, stat, now);
        }
    }
    let deadline = now + cfg.stable_for * 4;
    Ok(Some((cfg, tracker, deadline)))
}
