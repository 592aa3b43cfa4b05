//! `hili run`, the long-running daemon: recovers the queue, watches the `[[watch]]` folders,
//! and processes until stopped. It wires the rooms together and talks to systemd; the work
//! itself is the watcher's (finding files) and the pipeline's (moving jobs).
//!
//! - `READY=1` once start-up recovery and the first scan of every folder are done;
//! - `STATUS=` every few seconds: queue counts and credits left;
//! - `WATCHDOG=1` at half the watchdog interval, from the same loop that serves signals, so a
//!   stuck runtime stops the pings;
//! - SIGHUP reloads the watch list from the configuration file;
//! - SIGINT/SIGTERM: `STOPPING=1`, no new uploads, requests in flight finish within
//!   `shutdown_grace`; a second signal exits at once (the store is consistent at every instant).

pub mod notify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::pipeline::dispose::Disposition;
use crate::pipeline::{self, Ctx, Progress, RunOptions, Summary};
use crate::store::State;
use crate::watch::{WatchConfig, Watcher};
use notify::Notifier;

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("the pipeline task ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The disposition rules of the watch folders, for the pipeline.
pub fn dispositions(watches: &[WatchConfig]) -> Vec<Disposition> {
    watches
        .iter()
        .map(|w| Disposition {
            root: w.path.clone(),
            after: w.after,
            done_dir: w.done_dir.clone(),
            failed_dir: w.failed_dir.clone(),
        })
        .collect()
}

/// Runs until `shutdown` is cancelled. `config_path` is re-read on SIGHUP.
pub async fn run(
    ctx: Arc<Ctx>,
    config: &Config,
    config_path: Option<PathBuf>,
    progress: Arc<dyn Progress>,
) -> Result<Summary, DaemonError> {
    let notifier = Notifier::from_env();
    let shutdown = ctx.shutdown.clone();
    ctx.set_dispositions(dispositions(&config.watch));
    if config.watch.is_empty() {
        tracing::warn!(
            "no [[watch]] folders are configured: processing jobs added with `hili add` only"
        );
    }
    let watcher = Watcher::start(
        config.watch.clone(),
        ctx.store.clone(),
        shutdown.clone(),
        ctx.control.waker(),
    );
    let opts = RunOptions {
        once: false,
        exit_when_blocked: false,
    };
    let mut pipe = tokio::spawn(pipeline::run(ctx.clone(), opts, progress));

    // The loop borrows the watcher (readiness); it ends before the watcher is joined.
    let summary = {
        let mut hup = signal(SignalKind::hangup()).ok();
        let ready = async {
            ctx.control.recovered().await;
            watcher.first_scan_done().await;
        };
        tokio::pin!(ready);
        let mut is_ready = false;
        let mut status = tokio::time::interval(STATUS_EVERY);
        let watchdog_every = notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(watchdog_every);

        loop {
            tokio::select! {
                res = &mut pipe => break res??,
                () = &mut ready, if !is_ready => {
                    is_ready = true;
                    notifier.ready();
                    send_status(&ctx, &notifier).await;
                    tracing::info!("ready: watching {} folder(s)", config.watch.len());
                }
                _ = status.tick(), if is_ready => send_status(&ctx, &notifier).await,
                _ = watchdog.tick() => notifier.watchdog(),
                Some(()) = recv_hup(&mut hup) => reload(&ctx, &watcher, config_path.as_deref()),
                () = shutdown.cancelled() => {
                    notifier.stopping();
                    notifier.status("stopping: letting requests in flight finish");
                    break (&mut pipe).await??;
                }
            }
        }
    };
    notifier.stopping();
    watcher.join().await;
    Ok(summary)
}

async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP: re-reads the configuration and replaces the watch list and disposition rules. A
/// configuration that no longer parses is reported and the old one kept.
fn reload(ctx: &Ctx, watcher: &Watcher, path: Option<&Path>) {
    match Config::load(path) {
        Ok(config) => {
            tracing::info!(
                "SIGHUP: reloaded the watch list ({} folder(s))",
                config.watch.len()
            );
            ctx.set_dispositions(dispositions(&config.watch));
            watcher.reload(config.watch);
        }
        Err(e) => {
            tracing::error!("SIGHUP: the configuration did not load, keeping the old one: {e}")
        }
    }
}

async fn send_status(ctx: &Ctx, notifier: &Notifier) {
    let Ok(counts) = ctx.store.counts().await else {
        return;
    };
    let c = |s| counts.get(&s).copied().unwrap_or(0);
    let credits = match ctx.store.latest_credits().await {
        Ok(Some((_, n))) => format!("{n} credits left"),
        _ => "credits not seen yet".to_string(),
    };
    let paused = match ctx.control.paused() {
        Some((p, _)) => format!("; {}", pipeline::pause_note::describe_pause(ctx, &p).await),
        None => String::new(),
    };
    notifier.status(&format!(
        "{} queued, {} uploading, {} processing, {} downloading, {} done, {} failed, {} held; {credits}{paused}",
        c(State::Queued),
        c(State::Uploading),
        c(State::Processing),
        c(State::Downloading),
        c(State::Done),
        c(State::Failed),
        c(State::Held),
    ));
}
