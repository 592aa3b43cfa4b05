//! The supervisor: runs start-up recovery, then schedules the stages. Each loop it asks the
//! store for due work — polls first, then downloads, then uploads — and spawns one task per job
//! within each stage's concurrency, so results (which expire an hour after processing) are never
//! stuck behind a backlog of uploads. It sleeps until a task ends, the next job falls due, a
//! pause ends, or a stop is requested; on stop it lets requests in flight finish within the
//! grace period.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::store::{Job, JobId, State};

use super::control::Pause;
use super::{Ctx, PipelineError, download, now_ms, poll, recover, upload};

/// At most this many status polls at once (they are cheap; the gate limits the rate anyway).
const POLL_CONCURRENCY: usize = 8;
/// Longest sleep between looks at the store, so jobs added by another process are seen.
const IDLE_LOOK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Exit when the queue is empty (`hili run --once`) instead of waiting for more work.
    pub once: bool,
    /// With `once`: also exit when the only work left is uploads blocked by a pause (no
    /// credits, budget reached, token rejected), instead of waiting for the pause to end.
    pub exit_when_blocked: bool,
}

/// What the progress display shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counts: BTreeMap<State, u64>,
    pub in_flight: usize,
    pub credits_spent: u64,
    pub paused: Option<String>,
}

impl Snapshot {
    pub fn count(&self, s: State) -> u64 {
        self.counts.get(&s).copied().unwrap_or(0)
    }
}

/// Receives progress while a run goes on (a progress bar, log lines, or nothing).
pub trait Progress: Send + Sync {
    fn update(&self, snapshot: &Snapshot);
}

/// The end of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Jobs that reached each final state during this run.
    pub done: u64,
    pub failed: u64,
    pub held: u64,
    /// Jobs still queued or in flight when the run ended.
    pub unfinished: u64,
    pub credits_spent: u64,
    pub elapsed: Duration,
    /// Set when the run ended because uploads were paused.
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Upload,
    Poll,
    Download,
}

/// Runs the pipeline until the queue is drained (`once`) or `ctx.shutdown` is cancelled.
pub async fn run(
    ctx: Arc<Ctx>,
    opts: RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let started_ms = now_ms();
    match recover::startup(&ctx).await {
        Ok(()) | Err(PipelineError::Shutdown) => {}
        Err(e) => return Err(e),
    }
    ctx.control.set_recovered();

    let mut tasks: JoinSet<(Stage, JobId, Result<(), PipelineError>)> = JoinSet::new();
    let mut active: HashSet<JobId> = HashSet::new();
    let mut running = [0usize; 3];
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    let mut blocked = None;

    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        let now = now_ms();
        let pause = ctx.control.paused().map(|p| p.0);
        let whole_paused = pause == Some(Pause::BadToken);

        if !whole_paused {
            let free = POLL_CONCURRENCY - running[Stage::Poll as usize];
            if free > 0 {
                let jobs = ctx
                    .store
                    .due_polls_limited(now, free + active.len())
                    .await?;
                spawn_all(
                    &ctx,
                    &mut tasks,
                    &mut active,
                    &mut running,
                    Stage::Poll,
                    jobs,
                    free,
                );
            }
            let free = ctx.settings.download_concurrency - running[Stage::Download as usize];
            if free > 0 {
                let jobs = ctx.store.due_downloads(now, free + active.len()).await?;
                spawn_all(
                    &ctx,
                    &mut tasks,
                    &mut active,
                    &mut running,
                    Stage::Download,
                    jobs,
                    free,
                );
            }
        }
        if pause.is_none() {
            let free = ctx.settings.upload_concurrency - running[Stage::Upload as usize];
            if free > 0 {
                let jobs = ctx
                    .store
                    .next_uploadable(now, (free + active.len()) as u32)
                    .await?;
                spawn_all(
                    &ctx,
                    &mut tasks,
                    &mut active,
                    &mut running,
                    Stage::Upload,
                    jobs,
                    free,
                );
            }
        }

        super::dispose::pass(&ctx).await?;

        if last_progress.elapsed() >= Duration::from_millis(200) {
            report(&ctx, &*progress, tasks.len(), pause.as_ref()).await;
            last_progress = Instant::now();
        }

        if opts.once && tasks.is_empty() {
            let counts = ctx.store.counts().await?;
            let c = |s| counts.get(&s).copied().unwrap_or(0);
            let in_flight = c(State::Uploading) + c(State::Processing) + c(State::Downloading);
            if in_flight == 0 && c(State::Queued) == 0 {
                break;
            }
            if let Some(p) = &pause {
                let stuck = *p == Pause::BadToken || (opts.exit_when_blocked && in_flight == 0);
                if stuck {
                    blocked = Some(p.message().to_string());
                    break;
                }
            }
        }

        // Sleep until the next job falls due. Work already due but not started waits for a
        // free slot (a task ending wakes us) or for a pause to end (within IDLE_LOOK).
        let wait = match ctx.store.next_due_ms().await? {
            Some(at) if at > now_ms() => {
                Duration::from_millis((at - now_ms()) as u64).min(IDLE_LOOK)
            }
            _ => IDLE_LOOK,
        };
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                finish_task(done, &mut active, &mut running);
                // Collect whatever else finished meanwhile before looking at the store again.
                while let Some(done) = tasks.try_join_next() {
                    finish_task(done, &mut active, &mut running);
                }
            }
            _ = ctx.control.woken() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    if !tasks.is_empty() {
        drain(&ctx, &mut tasks).await;
    }
    super::dispose::pass(&ctx).await?;
    if ctx.control.spent() > 0 {
        record_final_credits(&ctx).await;
    }
    report(
        &ctx,
        &*progress,
        0,
        ctx.control.paused().map(|p| p.0).as_ref(),
    )
    .await;

    let outcomes = ctx.store.outcomes_since(started_ms).await?;
    let counts = ctx.store.counts().await?;
    let c = |s| counts.get(&s).copied().unwrap_or(0);
    Ok(Summary {
        done: outcomes.get(&State::Done).copied().unwrap_or(0),
        failed: outcomes.get(&State::Failed).copied().unwrap_or(0),
        held: outcomes.get(&State::Held).copied().unwrap_or(0),
        unfinished: c(State::Queued)
            + c(State::Uploading)
            + c(State::Processing)
            + c(State::Downloading),
        credits_spent: ctx.control.spent(),
        elapsed: started.elapsed(),
        blocked,
    })
}

fn spawn_all(
    ctx: &Arc<Ctx>,
    tasks: &mut JoinSet<(Stage, JobId, Result<(), PipelineError>)>,
    active: &mut HashSet<JobId>,
    running: &mut [usize; 3],
    stage: Stage,
    jobs: Vec<Job>,
    mut free: usize,
) {
    for job in jobs {
        if free == 0 {
            break;
        }
        if !active.insert(job.id) {
            continue;
        }
        free -= 1;
        running[stage as usize] += 1;
        let ctx = ctx.clone();
        let id = job.id;
        tasks.spawn(async move {
            let res = match stage {
                Stage::Upload => upload::run(&ctx, job).await,
                Stage::Poll => poll::run(&ctx, job).await,
                Stage::Download => download::run(&ctx, job).await,
            };
            (stage, id, res)
        });
    }
}

fn finish_task(
    done: Result<(Stage, JobId, Result<(), PipelineError>), tokio::task::JoinError>,
    active: &mut HashSet<JobId>,
    running: &mut [usize; 3],
) {
    match done {
        Ok((stage, id, res)) => {
            active.remove(&id);
            running[stage as usize] -= 1;
            match res {
                Ok(()) | Err(PipelineError::Shutdown) => {}
                Err(e) => tracing::error!(job = %id, "{stage:?} step failed, will retry: {e}"),
            }
        }
        // A panicking task is a bug; its job stays in a state that recovery continues from.
        Err(e) => tracing::error!("a pipeline task ended abnormally: {e}"),
    }
}

/// Lets work in flight finish within the grace period, then abandons it. Abandoning is safe: an
/// upload cut short is reconciled at the next start, a download is simply done again.
async fn drain(ctx: &Ctx, tasks: &mut JoinSet<(Stage, JobId, Result<(), PipelineError>)>) {
    let grace = ctx.settings.shutdown_grace;
    if ctx.shutdown.is_cancelled() {
        tracing::info!(
            "stopping: letting {} request(s) in flight finish (up to {grace:?})",
            tasks.len()
        );
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} request(s) still in flight after {grace:?}: abandoned, the next start recovers them",
            tasks.len()
        );
        tasks.shutdown().await;
    }
}

/// Reads the credits once more at the end of a run that spent some, so `hili status` shows
/// what the account has now. Best effort: a failure only leaves an older figure.
async fn record_final_credits(ctx: &Ctx) {
    ctx.gate.acquire(super::gate::Priority::High).await;
    match tokio::time::timeout(ctx.settings.timeout, ctx.api.credits()).await {
        Ok(Ok(n)) => {
            if let Err(e) = ctx.store.record_credits(n).await {
                tracing::warn!("could not record the credits left: {e}");
            }
        }
        Ok(Err(e)) => tracing::info!("could not read the credits left at the end of the run: {e}"),
        Err(_) => tracing::info!("reading the credits left at the end of the run timed out"),
    }
}

async fn report(ctx: &Ctx, progress: &dyn Progress, in_flight: usize, pause: Option<&Pause>) {
    if let Ok(counts) = ctx.store.counts().await {
        progress.update(&Snapshot {
            counts,
            in_flight,
            credits_spent: ctx.control.spent(),
            paused: pause.map(|p| p.message().to_string()),
        });
    }
}
