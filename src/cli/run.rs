//! `hili run`: takes the run lock, opens the queue (refused when an output folder belongs to
//! another queue: `pipeline::queue`), builds the client, runs the pipeline with a progress
//! display, and prints the summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::ConfigProblem;
use super::Exit;
use super::args::RunArgs;
use crate::api::client::ApiClient;
use crate::config::Config;
use crate::pipeline::{self, Ctx, Progress, RunOptions, Settings, Snapshot, Summary};
use crate::store::{RunLock, State};

/// The API client the configuration describes.
pub(super) fn client(config: &Config) -> anyhow::Result<ApiClient> {
    let opts = config.client_options().map_err(ConfigProblem)?;
    ApiClient::new(opts).context("could not build the HTTP client")
}

pub(super) async fn run(
    config: &Config,
    config_path: Option<&std::path::Path>,
    args: RunArgs,
) -> anyhow::Result<Exit> {
    // The client first: a configuration error (no secret, bad URL) must not leave behind a
    // freshly created, empty database.
    let api = client(config)?;
    // One process drives a queue (see `store::RunLock`); held until this function returns.
    let _lock = RunLock::acquire(&config.database_path())?;
    let outputs: Vec<PathBuf> = config.watch.iter().map(|w| w.output.clone()).collect();
    let store = pipeline::queue::open(&config.database_path(), &outputs).await?;
    // Before the scan below, so `hili report --last-run` lists the jobs it queues.
    store.mark_run_started().await?;
    let shutdown = super::stop_on_signal();
    let ctx = Ctx::new(store, api, Settings::from_config(config), shutdown);
    if !args.once {
        let progress: Arc<dyn Progress> = Arc::new(Quiet);
        let summary =
            crate::daemon::run(ctx.clone(), config, config_path.map(Into::into), progress).await?;
        ctx.store.close().await;
        print_summary(&summary);
        return Ok(Exit::Ok);
    }
    // `--once` also scans every watch folder once, waiting for files to settle.
    if !config.watch.is_empty() {
        ctx.set_dispositions(crate::daemon::dispositions(&config.watch));
        let report = crate::watch::scan_once(&config.watch, &ctx.store).await?;
        tracing::info!(
            "scanned {} watch folder(s): {} file(s) seen, {} queued",
            config.watch.len(),
            report.seen,
            report.enqueued
        );
    }
    let opts = RunOptions {
        once: true,
        exit_when_blocked: true,
    };
    let summary = run_with_progress(ctx, opts).await?;
    Ok(exit_code(&summary))
}

/// Runs the pipeline with a progress bar on a terminal, then prints the summary.
pub(super) async fn run_with_progress(ctx: Arc<Ctx>, opts: RunOptions) -> anyhow::Result<Summary> {
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(Bar::new())
    } else {
        Arc::new(Quiet)
    };
    let summary = pipeline::run(ctx.clone(), opts, progress.clone()).await?;
    ctx.store.close().await;
    print_summary(&summary);
    Ok(summary)
}

pub(super) fn exit_code(s: &Summary) -> Exit {
    if s.cannot_run {
        Exit::Config
    } else if s.failed > 0 || s.held > 0 || s.unfinished > 0 {
        Exit::JobsNeedAttention
    } else {
        Exit::Ok
    }
}

fn print_summary(s: &Summary) {
    println!(
        "{} done, {} failed, {} held, {} unfinished; {} credit(s) spent in {:.1}s",
        s.done,
        s.failed,
        s.held,
        s.unfinished,
        s.credits_spent,
        s.elapsed.as_secs_f64()
    );
    if s.skipped > 0 {
        println!(
            "{} skipped: not photos to process (see `hili jobs --state skipped`)",
            s.skipped
        );
    }
    match &s.blocked {
        Some(why) if s.cannot_run => eprintln!("hili: cannot run: {why}"),
        Some(why) => println!("stopped early: {why}"),
        None => {}
    }
    if s.failed > 0 || s.held > 0 {
        println!("see `hili status` for the reasons and how to resolve them");
    }
}

/// Progress on a terminal: done/total, in flight, credits spent, ETA.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} done  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar(bar)
    }
}

impl Progress for Bar {
    fn update(&self, s: &Snapshot) {
        let total: u64 = s.counts.values().sum();
        self.0.set_length(total);
        self.0.set_position(s.count(State::Done));
        let mut msg = format!(
            "{} in flight, {} failed, {} held, {} credit(s) spent",
            s.in_flight,
            s.count(State::Failed),
            s.count(State::Held),
            s.credits_spent
        );
        if let Some(p) = &s.paused {
            msg.push_str(" — ");
            msg.push_str(p);
        }
        self.0.set_message(msg);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// No terminal: the per-job log lines are the progress.
struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &Snapshot) {}
}
