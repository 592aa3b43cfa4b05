//! One watch folder's task: waits for the folder to exist, watches it (inotify events, or
//! polling on network/FUSE filesystems and when inotify runs out of watches), scans it fully
//! at start, every `rescan_interval` (or `poll_interval` when polling) and whenever events
//! were lost, feeds what it sees into the stability tracker, and queues files that settled.
//!
//! Each folder has its own task, so a hung network mount stalls only its own folder. A cache
//! of the versions already queued (`known`, loaded from the store at start, pruned by each
//! full scan) keeps rescans of thousands of unchanged files from touching the database.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use humantime::format_duration;
use notify::Event;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::events::{Interest, interpret, out_of_watches};
use super::ignore::Ignore;
use super::intake::{FolderSpec, check_due, enqueue};
use super::known::KnownFiles;
use super::mode::{Mode, next_events};
use super::scan::{Seen, stat_paths, walk_dir};
use super::stability::{Stat, Tracker};
use crate::config::{PollMode, WatchConfig};
use crate::media::blocking;
use crate::store::{EnqueueOutcome, Store};

/// How soon a missing or broken folder is looked at again (or `rescan_interval`, if shorter).
const MISSING_RETRY: Duration = Duration::from_secs(10);
/// A folder that arrived is walked at once and again this much later: notify adds its watch
/// after passing the event on, so a file created in between is seen by neither.
const REWALK_AFTER: Duration = Duration::from_secs(2);

enum End {
    Shutdown,
    RootLost(String),
}

/// The folder's identity, so a folder deleted and re-created is noticed and re-watched.
type RootId = (u64, u64);

fn root_id(path: &Path) -> Result<RootId, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok((m.dev(), m.ino())),
        Ok(_) => Err("is not a directory".into()),
        Err(e) => Err(e.to_string()),
    }
}

struct Folder {
    cfg: WatchConfig,
    ignore: Arc<Ignore>,
    store: Store,
    on_enqueued: Arc<Notify>,
    known: KnownFiles,
    tracker: Tracker,
    /// Files already reported as unreadable (reported once, retried at each full scan).
    warned: HashSet<PathBuf>,
    /// Arrived folders to walk once more, in time order.
    rewalk: VecDeque<(Instant, PathBuf)>,
    first: Option<oneshot::Sender<()>>,
}

/// Runs one watch folder until `token` is cancelled. `first` fires after the first full scan
/// (or the first finding that the folder is missing or broken).
pub(crate) async fn run(
    spec: FolderSpec,
    store: Store,
    on_enqueued: Arc<Notify>,
    token: CancellationToken,
    first: Option<oneshot::Sender<()>>,
) {
    let cfg = spec.cfg;
    let ignore = match Ignore::new(&cfg.path, &cfg.ignore, spec.excluded) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            tracing::error!(
                "watch folder {} is not watched: an ignore glob is invalid ({e}); fix its `ignore` list and reload",
                cfg.path.display()
            );
            return;
        }
    };
    let known = match store.known_versions(&cfg.path).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("{e}; every file found will be checked against the queue instead");
            HashMap::new()
        }
    };
    let mut f = Folder {
        tracker: Tracker::new(cfg.stable_for),
        known: KnownFiles::new(known),
        cfg,
        ignore,
        store,
        on_enqueued,
        warned: HashSet::new(),
        rewalk: VecDeque::new(),
        first,
    };
    f.run(token).await;
}

impl Folder {
    fn name(&self) -> std::path::Display<'_> {
        self.cfg.path.display()
    }

    fn first_done(&mut self) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(());
        }
    }

    async fn run(&mut self, token: CancellationToken) {
        let retry = self.cfg.rescan_interval.min(MISSING_RETRY);
        // Why the folder is unusable, once reported (so a long outage logs once).
        let mut absent: Option<String> = None;
        loop {
            let path = self.cfg.path.clone();
            let id = blocking(move || root_id(&path))
                .await
                .ok()
                .unwrap_or_else(|| Err("could not be checked".into()));
            let id = match id {
                Ok(id) => id,
                Err(why) => {
                    if absent.as_deref() != Some(why.as_str()) {
                        tracing::warn!(
                            "watch folder {} {why}: retrying every {}; create it or fix the [[watch]] path (other folders go on)",
                            self.name(),
                            format_duration(retry)
                        );
                        absent = Some(why);
                    }
                    self.first_done();
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = sleep(retry) => continue,
                    }
                }
            };
            if absent.take().is_some() {
                tracing::info!("watch folder {} is available: scanning it", self.name());
            }
            let mut mode = Mode::start(&self.cfg).await;
            match self.active(&mut mode, id, &token).await {
                End::Shutdown => return,
                End::RootLost(why) => {
                    tracing::warn!(
                        "watch folder {} {why}: watching it again once it is back",
                        self.name()
                    );
                    absent = Some(why);
                }
            }
        }
    }

    /// Watches a present folder until shutdown or until the folder disappears.
    async fn active(&mut self, mode: &mut Mode, id: RootId, token: &CancellationToken) -> End {
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                if let Err(why) = self.full_scan(id).await {
                    self.first_done();
                    return End::RootLost(why);
                }
                self.first_done();
                let interval = match mode {
                    Mode::Events { .. } => self.cfg.rescan_interval,
                    Mode::Poll { interval } => *interval,
                };
                next_scan = Instant::now() + interval;
            }
            while let Some((at, _)) = self.rewalk.front()
                && *at <= Instant::now()
            {
                if let Some((_, dir)) = self.rewalk.pop_front() {
                    self.walk_into(dir).await;
                }
            }
            self.settle().await;
            let wake = [
                self.tracker.next_due(),
                self.rewalk.front().map(|(at, _)| *at),
            ]
            .into_iter()
            .flatten()
            .fold(next_scan, Instant::min);
            let batch = tokio::select! {
                biased;
                _ = token.cancelled() => return End::Shutdown,
                b = next_events(mode) => b,
                _ = sleep_until(wake) => continue,
            };
            let Some(batch) = batch else {
                // The notify thread is gone: poll from now on.
                *mode = Mode::events_failed(
                    &self.cfg,
                    &notify::Error::generic("the event thread stopped"),
                );
                continue;
            };
            match self.on_events(batch, mode).await {
                Ok(true) => next_scan = Instant::now(),
                Ok(false) => {}
                Err(()) => {
                    let path = self.cfg.path.clone();
                    match blocking(move || root_id(&path)).await.ok() {
                        Some(Ok(now)) if now == id => {}
                        Some(Ok(_)) => {
                            return End::RootLost("was replaced by another folder".into());
                        }
                        Some(Err(why)) => return End::RootLost(why),
                        None => {}
                    }
                }
            }
        }
    }

    /// Handles a batch of events. Ok(true): a full scan is needed now. Err: the folder itself
    /// was removed or moved (check it).
    async fn on_events(
        &mut self,
        batch: Vec<notify::Result<Event>>,
        mode: &mut Mode,
    ) -> Result<bool, ()> {
        let mut rescan = false;
        let mut root_touched = false;
        let mut paths: HashMap<PathBuf, bool> = HashMap::new();
        for res in batch {
            let ev = match res {
                Ok(ev) => ev,
                Err(e) if out_of_watches(&e) => {
                    if self.cfg.poll == PollMode::Auto {
                        *mode = Mode::events_failed(&self.cfg, &e);
                    } else {
                        tracing::warn!(
                            "watch folder {}: inotify ran out of watches ({e}); new subfolders may be seen only at the next rescan. \
                             Raise `fs.inotify.max_user_watches` (sysctl) or set poll = \"auto\"",
                            self.name()
                        );
                    }
                    rescan = true;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        "watch folder {}: event error ({e}); rescanning",
                        self.name()
                    );
                    rescan = true;
                    continue;
                }
            };
            match interpret(&ev) {
                Interest::Rescan => {
                    tracing::info!(
                        "watch folder {}: events were lost (queue overflow); rescanning",
                        self.name()
                    );
                    rescan = true;
                }
                Interest::Paths { paths: ps, arrived } => {
                    for p in ps {
                        if p == self.cfg.path {
                            root_touched |= ev.kind.is_remove()
                                || matches!(
                                    ev.kind,
                                    notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                                );
                            continue;
                        }
                        if self.ignore.skips_path(&p) {
                            continue;
                        }
                        *paths.entry(p).or_default() |= arrived;
                    }
                }
                Interest::None => {}
            }
        }
        if root_touched {
            return Err(());
        }
        if !paths.is_empty() {
            self.look_at(paths).await;
        }
        Ok(rescan)
    }

    /// Stats event paths: files go to the tracker, arrived directories are walked.
    async fn look_at(&mut self, paths: HashMap<PathBuf, bool>) {
        let seen = blocking(move || stat_paths(paths))
            .await
            .ok()
            .unwrap_or_default();
        let now = Instant::now();
        let mut dirs = Vec::new();
        for (p, arrived, s) in seen {
            match s {
                Seen::File(stat) => self.observe(p, stat, now),
                Seen::Dir if arrived && self.cfg.recursive => dirs.push(p),
                Seen::Dir => {}
                Seen::Gone => {
                    self.tracker.forget(&p);
                    self.known.forget(&p);
                }
            }
        }
        for dir in dirs {
            // Files inside a folder created or moved in may predate the watch on it.
            self.rewalk
                .push_back((Instant::now() + REWALK_AFTER, dir.clone()));
            self.walk_into(dir).await;
        }
    }

    /// Walks a folder under the watch folder into the tracker.
    async fn walk_into(&mut self, dir: PathBuf) {
        let ig = self.ignore.clone();
        let d = dir.clone();
        match blocking(move || walk_dir(&d, &ig, true)).await.ok() {
            Some(Ok(w)) => {
                let now = Instant::now();
                for (p, stat) in w.files {
                    self.observe(p, stat, now);
                }
            }
            Some(Err(e)) => tracing::debug!("{}: not walked ({e})", dir.display()),
            None => {}
        }
    }

    /// A fresh stat: unknown or changed versions wait to settle; queued ones are skipped.
    fn observe(&mut self, path: PathBuf, stat: Stat, now: Instant) {
        if !self.known.seen(&path, stat) {
            self.tracker.observe(path, stat, now);
        }
    }

    /// Walks the whole folder. Err: the folder is gone or was replaced.
    async fn full_scan(&mut self, id: RootId) -> Result<(), String> {
        let (path, ig, rec) = (
            self.cfg.path.clone(),
            self.ignore.clone(),
            self.cfg.recursive,
        );
        let started = Instant::now();
        let res = blocking(move || {
            let now = root_id(&path)?;
            let walked = walk_dir(&path, &ig, rec).map_err(|e| e.to_string())?;
            Ok::<_, String>((now, walked))
        })
        .await
        .ok()
        .unwrap_or_else(|| Err("could not be scanned".into()));
        let (now_id, walked) = res?;
        if now_id != id {
            return Err("was replaced by another folder".into());
        }
        self.known.start_scan();
        let now = Instant::now();
        let files = walked.files.len();
        for (p, stat) in walked.files {
            self.observe(p, stat, now);
        }
        self.known.end_scan();
        self.warned.retain(|p| self.tracker.contains(p));
        tracing::debug!(
            "watch folder {}: scanned {files} files ({} ignored, {} unreadable) in {:?}; {} waiting to settle",
            self.name(),
            walked.ignored,
            walked.errors,
            started.elapsed(),
            self.tracker.len()
        );
        Ok(())
    }

    /// Checks due files and queues those that settled.
    async fn settle(&mut self) {
        let checked = check_due(&mut self.tracker).await;
        for p in checked.gone {
            self.known.forget(&p);
        }
        for (p, e) in checked.unreadable {
            if self.warned.insert(p.clone()) {
                tracing::warn!(
                    "{} cannot be opened for reading ({e}): not queued; it is retried at each rescan, fix its permissions",
                    p.display()
                );
            }
        }
        if checked.ready.is_empty() {
            return;
        }
        match enqueue(&self.store, &self.cfg, &checked.ready).await {
            Ok(outcomes) => {
                let mut queued = false;
                for ((p, stat), o) in checked.ready.into_iter().zip(outcomes) {
                    queued |= matches!(o, EnqueueOutcome::Queued(_));
                    self.warned.remove(&p);
                    self.known.insert(p, stat);
                }
                if queued {
                    self.on_enqueued.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(
                    "watch folder {}: cannot queue {} files ({e}); trying again in {}",
                    self.name(),
                    checked.ready.len(),
                    format_duration(self.cfg.stable_for)
                );
                let now = Instant::now();
                for (p, stat) in checked.ready {
                    self.tracker.observe(p, stat, now);
                }
            }
        }
    }
}
