//! The drop-folder watcher of `hili run`: finds photos dropped into the `[[watch]]` folders
//! and queues each settled file version exactly once. Three layers, as in the tools users
//! trust: inotify events (including files and whole folders moved in), a stability wait
//! (size and mtime unchanged for `stable_for` and the file opens for reading, so nothing is
//! uploaded half-written), and full scans (at start, every `rescan_interval`, at once when
//! events were lost; instead of events on network/FUSE filesystems or when inotify runs out
//! of watches; a folder that cannot be watched by events is polled, with a log line saying so).
//! A watch folder that is a symbolic link is watched at its target. The store alone decides
//! whether a file version is new; an in-memory cache of what was queued keeps rescans cheap.
//! Each folder runs in its own task: a missing or broken one is logged and retried while the
//! others go on.
//!
//! It never processes anything itself: it enqueues and pokes `on_enqueued`.

mod events;
mod folder;
pub mod fstype;
mod ignore;
mod intake;
mod known;
mod mode;
mod once;
mod scan;
pub mod stability;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// The tables are the config file's; re-exported so the watcher's users find them here too.
pub use crate::config::{After, PollMode, WatchConfig};
pub use ignore::Ignore;
pub use once::scan_once;

use crate::store::{Store, StoreError};
use intake::{FolderSpec, specs};

/// What [`scan_once`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files found (not ignored), new or already known.
    pub seen: u64,
    /// Files newly queued.
    pub enqueued: u64,
    /// Entries skipped by the ignore rules (an ignored directory counts once).
    pub ignored: u64,
    /// Missing folders, unreadable entries and files that would not open.
    pub errors: u64,
    /// Files still being written when the wait ended: left for the next scan.
    pub still_changing: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch folder {}: an ignore glob is invalid ({source}); fix its `ignore` list in the config", folder.display())]
    Ignore {
        folder: PathBuf,
        #[source]
        source: globset::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running watcher: one task per folder under a supervisor that applies reloads.
pub struct Watcher {
    reload: mpsc::UnboundedSender<Vec<WatchConfig>>,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts watching (must be called inside a tokio runtime). Each folder's first action
    /// is a full scan; `on_enqueued.notify_one()` follows every batch that queued a file.
    pub fn start(
        watches: Vec<WatchConfig>,
        store: Store,
        shutdown: CancellationToken,
        on_enqueued: Arc<Notify>,
    ) -> Watcher {
        let (reload, reload_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let sup = Supervisor {
            store,
            on_enqueued,
            shutdown,
            running: Vec::new(),
        };
        let task = tokio::spawn(sup.run(watches, reload_rx, ready_tx));
        Watcher {
            reload,
            ready,
            task,
        }
    }

    /// Resolves once every folder of the initial list has been walked once (or found missing
    /// or broken), or the watcher stopped. Files found by that walk may still be waiting to
    /// settle: it means "nothing dropped while hili was down is unknown any more".
    pub async fn first_scan_done(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Replaces the watch list (SIGHUP). Unchanged folders keep running undisturbed; removed
    /// ones stop; new or changed ones start with a full scan.
    pub fn reload(&self, watches: Vec<WatchConfig>) {
        let _ = self.reload.send(watches);
    }

    /// Waits for every folder task to finish (after `shutdown` was cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("the folder watcher stopped abnormally: {e}");
        }
    }
}

struct Running {
    spec: FolderSpec,
    token: CancellationToken,
    handle: JoinHandle<()>,
}

/// How long a stopping folder task may take (a scan of a hung network mount never ends).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Cancels a folder task and waits for it, at most [`STOP_WAIT`]; then abandons it (its
/// blocking walk may still be stuck in the kernel, but nothing is queued after this).
async fn stop_folder(r: Running) {
    r.token.cancel();
    let abort = r.handle.abort_handle();
    if tokio::time::timeout(STOP_WAIT, r.handle).await.is_err() {
        abort.abort();
        tracing::warn!(
            "watch folder {} did not stop within {STOP_WAIT:?} (a hung network mount?): abandoned",
            r.spec.cfg.path.display()
        );
    }
}

struct Supervisor {
    store: Store,
    on_enqueued: Arc<Notify>,
    shutdown: CancellationToken,
    running: Vec<Running>,
}

impl Supervisor {
    async fn run(
        mut self,
        watches: Vec<WatchConfig>,
        mut reload: mpsc::UnboundedReceiver<Vec<WatchConfig>>,
        ready: watch::Sender<bool>,
    ) {
        let firsts = self.apply(&watches, true).await;
        tokio::spawn(async move {
            // A folder task that ends early drops its sender: that counts as done too.
            for rx in firsts {
                let _ = rx.await;
            }
            let _ = ready.send(true);
        });
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                list = reload.recv() => match list {
                    Some(list) => {
                        self.apply(&list, false).await;
                    }
                    None => {
                        self.shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        for r in self.running.drain(..) {
            stop_folder(r).await;
        }
    }

    /// Stops folders no longer wanted (waiting for them, so two tasks never share a folder),
    /// then starts the new ones.
    async fn apply(
        &mut self,
        watches: &[WatchConfig],
        initial: bool,
    ) -> Vec<oneshot::Receiver<()>> {
        let wanted = specs(watches);
        let (keep, stop): (Vec<_>, Vec<_>) = self
            .running
            .drain(..)
            .partition(|r| wanted.contains(&r.spec));
        let stopped = stop.len();
        for r in stop {
            stop_folder(r).await;
        }
        self.running = keep;
        let mut firsts = Vec::new();
        let mut started = 0;
        for spec in wanted {
            if self.running.iter().any(|r| r.spec == spec) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            firsts.push(rx);
            let token = self.shutdown.child_token();
            let handle = tokio::spawn(folder::run(
                spec.clone(),
                self.store.clone(),
                self.on_enqueued.clone(),
                token.clone(),
                Some(tx),
            ));
            self.running.push(Running {
                spec,
                token,
                handle,
            });
            started += 1;
        }
        if !initial {
            tracing::info!(
                "watch list reloaded: {} folders ({started} started, {stopped} stopped)",
                self.running.len()
            );
        }
        firsts
    }
}
