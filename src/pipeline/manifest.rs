//! Keeps each output folder's `manifest-sha256.txt` (`[output] manifest = true`) equal to the
//! store: the done results of the jobs queued with that folder as their output, sorted. It is
//! rebuilt from the store and replaced atomically (`media::manifest`) after each result lands
//! and once at start-up, so a crash between a result's `done` and its manifest write leaves at
//! worst that entry missing, which the next write restores; never a torn file.
//!
//! Writers of one folder are serialised in this process, and coalesce: a result that lands
//! while its folder's manifest is being written is picked up by the next write, and a write
//! that starts after a result was recorded makes that result's own write unnecessary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::media::manifest;
use crate::store::Job;

use super::{Ctx, PipelineError, blocking};

/// One output folder's writers.
#[derive(Default)]
struct Folder {
    /// Writes asked for so far (each landed result asks once).
    asked: AtomicU64,
    /// Held while the manifest is rebuilt and written: how many asks the last write covered.
    covered: tokio::sync::Mutex<u64>,
}

/// The folders of this process. A handful (one per output folder), kept for the process's life.
static FOLDERS: LazyLock<Mutex<HashMap<PathBuf, Arc<Folder>>>> = LazyLock::new(Mutex::default);

fn folder(dir: &Path) -> Arc<Folder> {
    let mut all = FOLDERS.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(dir.to_path_buf()).or_default().clone()
}

/// After `job`'s result is recorded done: brings its output folder's manifest up to date.
/// A manifest that cannot be written is logged, not fatal (the result itself is safe, and the
/// next result or start writes the manifest again).
pub async fn result_landed(ctx: &Ctx, job: &Job) {
    if ctx.settings.manifest {
        update(ctx, &job.output_dir).await;
    }
}

/// At start-up: every output folder with results gets its manifest written (or confirmed).
pub async fn refresh_all(ctx: &Ctx) -> Result<(), PipelineError> {
    if ctx.settings.manifest {
        for dir in ctx.store.result_dirs().await? {
            update(ctx, &dir).await;
        }
    }
    Ok(())
}

async fn update(ctx: &Ctx, dir: &Path) {
    let f = folder(dir);
    // This result is recorded already, so any write whose store read begins after this line
    // lists it.
    let ask = f.asked.fetch_add(1, Ordering::SeqCst) + 1;
    let mut covered = f.covered.lock().await;
    if *covered >= ask {
        return;
    }
    let covers = f.asked.load(Ordering::SeqCst);
    match rewrite(ctx, dir).await {
        Ok(()) => *covered = covers,
        Err(e) => tracing::warn!(
            "could not update the manifest of {}: {e}; the results are safe, and the manifest \
             is written again after the next result and at the next start",
            dir.display()
        ),
    }
}

async fn rewrite(ctx: &Ctx, dir: &Path) -> Result<(), String> {
    let results = ctx
        .store
        .done_results_in(dir)
        .await
        .map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    blocking(move || {
        let entries = manifest::entries_in(&dir, results);
        // A folder that does not exist has no results to list (all moved away by hand).
        if !dir.is_dir() {
            return Ok(false);
        }
        manifest::write(&dir, &entries)
    })
    .await
    .map_err(|e| e.to_string())?
    .map(|_| ())
    .map_err(|e| e.to_string())
}
