//! `hili run`: takes the run lock, opens the queue (refused when an output folder belongs to
//! another queue: `pipeline::queue`), builds the client, runs the pipeline with a progress
//! display, and prints the summary.

use std::path::PathBuf;
use std::sync::Arc;

use super::Exit;
use super::args::RunArgs;
use super::progress::{self, Bar};
use crate::config::Config;
use crate::pipeline::{self, Ctx, Progress, RunOptions, Snapshot, Summary};
use crate::store::RunLock;

pub(super) async fn run(
    config: &Config,
    config_path: Option<&std::path::Path>,
    args: RunArgs,
) -> anyhow::Result<Exit> {
    // The client first: a configuration error (no secret, bad URL) must not leave behind a
    // freshly created, empty database.
    let api = super::client::client(config)?;
    // One process drives a queue (see `store::RunLock`); held until this function returns.
    let queue = config.queue_location()?;
    let _lock = RunLock::acquire_for(&queue)?;
    let outputs: Vec<PathBuf> = config.watch.iter().map(|w| w.output.clone()).collect();
    let store = pipeline::queue::open(&queue, &outputs).await?;
    // On a shared queue: this node's name is its own, and its watch folders marked shared
    // are any node's.
    store.join().await?;
    store.share_roots(
        config
            .watch
            .iter()
            .filter(|w| w.shared)
            .map(|w| w.path.clone())
            .collect(),
    );
    // Before the scan below, so `hili report --last-run` lists the jobs it queues.
    store.mark_run_started().await?;
    let shutdown = super::stop_on_signal();
    let ctx = Ctx::new(
        store,
        api,
        super::money::run_settings(config, &args),
        shutdown,
    );
    if !args.once {
        let progress: Arc<dyn Progress> = Arc::new(Quiet);
        let summary =
            crate::daemon::run(ctx.clone(), config, config_path.map(Into::into), progress).await?;
        ctx.store.close().await;
        print_summary(&summary);
        super::money::print_spent(config, summary.credits_spent);
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
    let summary = run_and_summarise(ctx, opts, args.json).await?;
    if !args.json {
        super::money::print_spent(config, summary.credits_spent);
    }
    Ok(exit_code(&summary))
}

/// Runs the pipeline with a progress bar on a terminal, then prints the summary.
pub(super) async fn run_with_progress(ctx: Arc<Ctx>, opts: RunOptions) -> anyhow::Result<Summary> {
    run_and_summarise(ctx, opts, false).await
}

/// Runs the pipeline, then prints the summary: as text, or with `json` as one JSON object.
async fn run_and_summarise(ctx: Arc<Ctx>, opts: RunOptions, json: bool) -> anyhow::Result<Summary> {
    let bar = match progress::wanted() {
        // The run's jobs are those that end after this mark, or are still to end.
        true => Some(Arc::new(Bar::start(
            ctx.store.clone(),
            ctx.store.last_event_id().await?,
        ))),
        false => None,
    };
    let shown: Arc<dyn Progress> = match &bar {
        Some(b) => b.clone(),
        None => Arc::new(Quiet),
    };
    let summary = pipeline::run(ctx.clone(), opts, shown).await;
    if let (Some(b), Ok(s)) = (&bar, &summary) {
        b.finish(s);
    }
    drop(bar);
    let summary = summary?;
    ctx.store.close().await;
    match json {
        true => println!("{}", summary_json(&summary)),
        false => print_summary(&summary),
    }
    if let Some(why) = summary.blocked.as_ref().filter(|_| summary.cannot_run) {
        eprintln!("hili: cannot run: {why}");
    }
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
    if let Some(why) = s.blocked.as_ref().filter(|_| !s.cannot_run) {
        println!("stopped early: {why}");
    }
    if s.failed > 0 || s.held > 0 {
        println!(
            "see `hili status` for the reasons and how to resolve them (every failed job: `hili jobs --state failed`)"
        );
    }
}

/// `hili run --once --json`: this run's summary as one object.
fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "jobs": s.done + s.failed + s.held + s.skipped + s.unfinished,
        "done": s.done,
        "failed": s.failed,
        "held": s.held,
        "skipped": s.skipped,
        "unfinished": s.unfinished,
        "credits_spent": s.credits_spent,
        "elapsed_s": (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "stopped_early": s.blocked,
        "cannot_run": s.cannot_run,
        "exit_code": exit_code(s).code(),
    })
}

/// No terminal: the per-job log lines are the progress.
struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &Snapshot) {}
}
