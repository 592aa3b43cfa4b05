//! The operator's hooks around a run: `/metrics` served while it lasts (`[metrics]`), and the
//! `[notify] on_finish` command told when it ends (`--once`) or whenever a daemon's batch
//! drains. [`run`] wraps the supervisor, so every way of running the pipeline gets them and
//! the scheduler itself knows nothing of either.

use std::sync::Arc;

use super::supervisor::{self, Progress, RunOptions, Summary};
use super::{Ctx, PipelineError, on_finish};
use crate::metrics::server::{self, Served, Sources};

/// Runs the pipeline (see [`supervisor::run`]) with the hooks the settings ask for.
pub async fn run(
    ctx: Arc<Ctx>,
    opts: RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, PipelineError> {
    // Cancelled with the run's token (a stop signal), or when the run is over.
    let stop = ctx.shutdown.child_token();
    let served = serve_metrics(&ctx, &stop).await?;
    let batches = (!opts.once && !ctx.settings.notify.on_finish.is_empty())
        .then(|| tokio::spawn(on_finish::watch_batches(ctx.clone(), stop.clone())));
    let result = supervisor::run(ctx.clone(), opts, progress).await;
    stop.cancel();
    if let Some(batches) = batches
        && let Err(e) = batches.await
    {
        tracing::warn!("the on_finish watcher ended abnormally: {e}");
    }
    if opts.once
        && let Ok(summary) = &result
    {
        on_finish::after_once(&ctx, summary).await;
    }
    if let Some(served) = served {
        served.stop().await;
    }
    result
}

async fn serve_metrics(
    ctx: &Arc<Ctx>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<Served>, PipelineError> {
    let Some(addr) = ctx.settings.metrics.listen_addr() else {
        return Ok(None);
    };
    let spent_of = ctx.clone();
    let sources = Sources {
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        spent: Box::new(move || spent_of.control.spent()),
    };
    Ok(Some(server::start(addr, sources, stop.clone()).await?))
}
