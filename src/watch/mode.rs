//! How a folder learns about changes: inotify events through `notify`, or polling (full
//! scans every `poll_interval`) on network and FUSE filesystems, when `poll = true`, and when
//! inotify cannot be had (out of watches: with a warning saying how to raise the limit).

use std::time::Duration;

use humantime::format_duration;
use notify::{Event, RecommendedWatcher};
use tokio::sync::mpsc;

use super::events::{out_of_watches, watch};
use super::fstype::remote_fs;
use crate::config::{PollMode, WatchConfig};
use crate::media::blocking;

/// Events handled per wake-up (the rest wait in the channel).
const EVENT_BATCH: usize = 4096;
const CHANNEL: usize = 1024;

pub(super) type EventRx = mpsc::Receiver<notify::Result<Event>>;

pub(super) enum Mode {
    Events {
        // Kept alive for its inotify watches; dropping it stops them.
        _watcher: RecommendedWatcher,
        rx: EventRx,
    },
    /// Full scans every `interval`, no events.
    Poll { interval: Duration },
}

impl Mode {
    /// Events if possible and wanted, else polling; logs why it polls.
    pub(super) async fn start(cfg: &WatchConfig) -> Mode {
        let poll = Mode::Poll {
            interval: cfg.poll_interval,
        };
        match cfg.poll {
            PollMode::Always => {
                tracing::info!(
                    "watch folder {}: polling every {} (poll = true)",
                    cfg.path.display(),
                    format_duration(cfg.poll_interval)
                );
                return poll;
            }
            PollMode::Auto => {
                let path = cfg.path.clone();
                if let Ok(Some(fs)) = blocking(move || remote_fs(&path)).await {
                    tracing::info!(
                        "watch folder {} is on {fs}, where changes made by other machines raise no events: polling it every {}",
                        cfg.path.display(),
                        format_duration(cfg.poll_interval)
                    );
                    return poll;
                }
            }
            PollMode::Never => {}
        }
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (path, recursive) = (cfg.path.clone(), cfg.recursive);
        // Adding a watch per subdirectory walks the tree: blocking work.
        let started = blocking(move || watch(&path, recursive, tx)).await.ok();
        match started {
            Some(Ok(w)) => {
                tracing::debug!("watch folder {}: watching for events", cfg.path.display());
                Mode::Events { _watcher: w, rx }
            }
            Some(Err(e)) => Mode::events_failed(cfg, &e),
            None => Mode::events_failed(cfg, &notify::Error::generic("the watch task panicked")),
        }
    }

    /// The fallback when events cannot be had: polling (`auto`), or rescans only (`false`).
    pub(super) fn events_failed(cfg: &WatchConfig, e: &notify::Error) -> Mode {
        let (interval, instead) = match cfg.poll {
            PollMode::Never => (cfg.rescan_interval, "poll = false: only the full rescans"),
            _ => (cfg.poll_interval, "polling"),
        };
        if out_of_watches(e) {
            tracing::warn!(
                "watch folder {}: inotify ran out of watches ({e}); using {instead} every {} instead. \
                 To get events, raise the limits: `sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512` \
                 and keep them in /etc/sysctl.d/90-hili.conf, then reload or restart hili",
                cfg.path.display(),
                format_duration(interval)
            );
        } else {
            tracing::warn!(
                "watch folder {}: cannot watch it for events ({e}); using {instead} every {} instead",
                cfg.path.display(),
                format_duration(interval)
            );
        }
        Mode::Poll { interval }
    }
}

/// The next batch of events; never resolves when polling. `None`: the event thread is gone.
pub(super) async fn next_events(mode: &mut Mode) -> Option<Vec<notify::Result<Event>>> {
    let Mode::Events { rx, .. } = mode else {
        return std::future::pending().await;
    };
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < EVENT_BATCH {
        match rx.try_recv() {
            Ok(ev) => batch.push(ev),
            Err(_) => break,
        }
    }
    Some(batch)
}
