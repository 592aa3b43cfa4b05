//! The supervisor: runs start-up recovery, then schedules the stages. Each loop it asks the
//! store for due work — polls first, then downloads, then uploads — and spawns one task per job
//! within each stage's concurrency, so results (which expire an hour after processing) are never
//! stuck behind a backlog of uploads. It sleeps until a task ends, the next job falls due, a
//! pause ends, or a stop is requested; on stop it lets requests in flight finish within the
//! grace period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::store::{DueLimits, Job, JobId, Paid, State};

use super::control::Pause;
use super::outage::Outage;
use super::pause_note::{REPUBLISH, publish_pause};
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
    /// Jobs not processed on purpose (hili's own results, superseded): not a failure.
    pub skipped: u64,
    /// Jobs still queued or in flight when the run ended.
    pub unfinished: u64,
    pub credits_spent: u64,
    pub elapsed: Duration,
    /// Set when the run ended because uploads were paused.
    pub blocked: Option<String>,
    /// The run ended because the service refuses the configuration or is not there at all
    /// (`blocked` says which): waiting will not help, a person must act.
    pub cannot_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Upload,
    Poll,
    Download,
}

/// One job for one stage, with what that stage needs of it.
enum Task {
    Upload(Job),
    Poll(Paid),
    Download(Paid),
}

impl Task {
    fn id(&self) -> JobId {
        match self {
            Task::Upload(job) | Task::Poll(Paid { job, .. }) | Task::Download(Paid { job, .. }) => {
                job.id
            }
        }
    }
}

/// Runs the pipeline until the queue is drained (`once`) or `ctx.shutdown` is cancelled.
pub async fn run(
    ctx: Arc<Ctx>,
    opts: RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, PipelineError> {
    let started = (Instant::now(), now_ms());
    // On a shared queue: this node's heartbeat (and its share of the rate) from the start.
    let beating = tokio::spawn(super::fleet::heartbeats(ctx.clone()));
    recover_waiting_out_the_database(&ctx, opts).await?;
    ctx.control.set_recovered();

    let mut workers = Workers::default();
    // A shared queue's paid work, kept to go on while its database is away (`outage`).
    let mut outage = Outage::new(&ctx).await;
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    // The pause last written for `hili status`, and when.
    let mut published: (Option<Pause>, Instant) = (None, Instant::now());
    publish_pause(&ctx, None).await;

    let ended = loop {
        if ctx.shutdown.is_cancelled() {
            break None;
        }
        if opts.once
            && let Some(why) = unreachable(&ctx)
        {
            tracing::error!("{why}");
            // Requests still waiting on the service (a lost answer being reconciled) stop
            // too: what they leave in flight is recovered at the next start.
            ctx.shutdown.cancel();
            break Some((why, true));
        }
        let pause = ctx.control.paused().map(|p| p.0);
        if pause != published.0 || (pause.is_some() && published.1.elapsed() >= REPUBLISH) {
            publish_pause(&ctx, pause.as_ref()).await;
            published = (pause.clone(), Instant::now());
        }
        // Results fetched during an outage are recorded before any upload is taken on: one of
        // them copied into a watch folder meanwhile is then known as hili's own result.
        outage.record(&ctx).await;
        // A database hiccup (busy beyond busy_timeout, disk full) must not end a daemon that
        // runs for months: log it and look again shortly. Job state is safe in the store.
        let wait = match step(&ctx, &mut workers, pause.as_ref(), &mut outage).await {
            Ok(wait) => {
                outage.answered(&ctx).await;
                wait
            }
            Err(e) => {
                tracing::error!("scheduling failed, retrying in {IDLE_LOOK:?}: {e}");
                if matches!(&e, PipelineError::Store(s) if s.is_transient()) {
                    outage.ride(&ctx, &workers.active);
                }
                IDLE_LOOK
            }
        };
        if last_progress.elapsed() >= Duration::from_millis(200) {
            report(&ctx, &*progress, workers.tasks.len(), pause.as_ref()).await;
            last_progress = Instant::now();
        }
        if opts.once && workers.tasks.is_empty() {
            match once_is_over(&ctx, opts, pause.as_ref()).await? {
                Over::No => {}
                Over::Drained => break None,
                Over::Blocked(why, needs_a_person) => break Some((why, needs_a_person)),
            }
        }
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break None,
            Some(done) = workers.tasks.join_next(), if !workers.tasks.is_empty() => {
                workers.finish(done, &mut outage);
                // Collect whatever else finished meanwhile before looking at the store again.
                while let Some(done) = workers.tasks.try_join_next() {
                    workers.finish(done, &mut outage);
                }
            }
            _ = ctx.control.woken() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    };
    let wound = wind_down(&ctx, workers.tasks, &*progress).await;
    outage.end(&ctx).await;
    beating.abort();
    super::fleet::leave(&ctx).await;
    wound?;
    summarise(&ctx, started, ended).await
}

/// Start-up recovery; a database that is away (a shared queue's server restarting) is waited
/// for, as the running pipeline waits for it, rather than ending a daemon that systemd would
/// only start again. A `--once` run gives up after `max_attempts` tries.
async fn recover_waiting_out_the_database(
    ctx: &Ctx,
    opts: RunOptions,
) -> Result<(), PipelineError> {
    let mut tries = 0;
    loop {
        match recover::startup(ctx, opts.once).await {
            Ok(()) | Err(PipelineError::Shutdown) => return Ok(()),
            Err(PipelineError::Store(e))
                if e.is_transient() && !(opts.once && tries >= ctx.settings.max_attempts) =>
            {
                tries += 1;
                tracing::warn!(
                    "start-up recovery could not reach the queue ({e}); trying again in {IDLE_LOOK:?}"
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(IDLE_LOOK) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a `--once` run (with no task running) is over.
enum Over {
    No,
    /// Nothing queued or in flight is left.
    Drained,
    /// Only work a pause holds back is left: why, and whether only a person can lift it.
    Blocked(String, bool),
}

async fn once_is_over(
    ctx: &Ctx,
    opts: RunOptions,
    pause: Option<&Pause>,
) -> Result<Over, PipelineError> {
    let counts = ctx.store.counts_here().await?;
    let c = |s| counts.get(&s).copied().unwrap_or(0);
    // With no task running, a job still in `uploading` is one whose lost answer could not be
    // reconciled: only the next start moves it, so it does not keep this run.
    let in_flight = c(State::Processing) + c(State::Downloading);
    if in_flight == 0 && c(State::Queued) == 0 {
        return Ok(Over::Drained);
    }
    Ok(match pause {
        Some(p) if p.needs_a_person() || (opts.exit_when_blocked && in_flight == 0) => {
            Over::Blocked(p.message(), p.needs_a_person())
        }
        _ => Over::No,
    })
}

/// The end of every run: requests in flight finish (within the grace), sources are disposed
/// of, the pause note is cleared, the credits are read once more if any were spent, and the
/// progress display gets its last frame.
async fn wind_down(
    ctx: &Ctx,
    mut tasks: JoinSet<TaskResult>,
    progress: &dyn Progress,
) -> Result<(), PipelineError> {
    if !tasks.is_empty() {
        drain(ctx, &mut tasks).await;
    }
    super::dispose::pass(ctx).await?;
    publish_pause(ctx, None).await;
    if ctx.control.spent() > 0 {
        record_final_credits(ctx).await;
    }
    let pause = ctx.control.paused().map(|p| p.0);
    report(ctx, progress, 0, pause.as_ref()).await;
    Ok(())
}

/// The run's [`Summary`]: outcomes since it started, what is left, and why it ended early.
async fn summarise(
    ctx: &Ctx,
    (started, started_ms): (Instant, i64),
    ended: Option<(String, bool)>,
) -> Result<Summary, PipelineError> {
    let outcomes = ctx.store.outcomes_since(started_ms).await?;
    let counts = ctx.store.counts_here().await?;
    let c = |s| counts.get(&s).copied().unwrap_or(0);
    let outcome = |s| outcomes.get(&s).copied().unwrap_or(0);
    let (blocked, cannot_run) = match ended {
        Some((why, needs_a_person)) => (Some(why), needs_a_person),
        None => (None, false),
    };
    Ok(Summary {
        done: outcome(State::Done),
        failed: outcome(State::Failed),
        held: outcome(State::Held),
        skipped: outcome(State::Skipped),
        unfinished: c(State::Queued)
            + c(State::Uploading)
            + c(State::Processing)
            + c(State::Downloading),
        credits_spent: ctx.control.spent(),
        elapsed: started.elapsed(),
        blocked,
        cannot_run,
    })
}

/// Why a `--once` run must end now because the service is not there at all: `max_attempts`
/// requests in a row could not connect. A daemon waits such an outage out instead.
fn unreachable(ctx: &Ctx) -> Option<String> {
    let (n, last) = ctx.api.unanswered_streak();
    (n >= ctx.settings.max_attempts.max(1)).then(|| {
        format!(
            "no answer from the API at {}: {n} requests in a row could not connect (last: {}); \
             check api.base_url and the network, then run again",
            ctx.api.base_url(),
            last.unwrap_or_default()
        )
    })
}

type TaskResult = (Stage, JobId, Result<(), PipelineError>);

/// How long a job whose step failed with an error (not a handled API failure) rests before
/// it is tried again, so a persistent problem cannot spin the loop.
const COOLDOWN: Duration = Duration::from_secs(5);

/// The tasks in flight, which jobs they hold, and how many per stage.
#[derive(Default)]
struct Workers {
    tasks: JoinSet<TaskResult>,
    active: HashSet<JobId>,
    running: [usize; 3],
    /// Jobs whose last step failed, and when they may be tried again.
    resting: HashMap<JobId, Instant>,
}

impl Workers {
    /// Free slots of a stage.
    fn free(&self, ctx: &Ctx, stage: Stage) -> usize {
        let limit = match stage {
            // One more job per slot checks and hashes its photo while the slot's upload is in
            // flight; the sending itself is limited in `upload::run`.
            Stage::Upload => ctx.settings.upload_concurrency * 2,
            Stage::Poll => POLL_CONCURRENCY,
            Stage::Download => ctx.settings.download_concurrency,
        };
        limit.saturating_sub(self.running[stage as usize])
    }

    /// The jobs the store must leave out of its answer: those a task holds, and those
    /// resting after an error.
    fn busy(&self) -> Vec<JobId> {
        self.active
            .iter()
            .chain(self.resting.keys())
            .copied()
            .collect()
    }

    /// Starts a stage's due jobs in its free slots (the store left out the busy ones; the
    /// check here only guards against a job being started twice).
    fn start(&mut self, ctx: &Arc<Ctx>, stage: Stage, jobs: Vec<Task>) {
        let free = self.free(ctx, stage);
        let mut started = 0;
        for task in jobs {
            let id = task.id();
            if started == free {
                break;
            }
            if self.resting.contains_key(&id) || !self.active.insert(id) {
                continue;
            }
            started += 1;
            self.running[stage as usize] += 1;
            let ctx = ctx.clone();
            self.tasks.spawn(async move {
                let res = match task {
                    Task::Upload(job) => upload::run(&ctx, job).await,
                    Task::Poll(work) => poll::run(&ctx, work).await,
                    Task::Download(work) => download::run(&ctx, work).await,
                };
                (stage, id, res)
            });
        }
    }

    fn finish(&mut self, done: Result<TaskResult, tokio::task::JoinError>, outage: &mut Outage) {
        match done {
            Ok((stage, id, res)) => {
                self.active.remove(&id);
                self.running[stage as usize] -= 1;
                match res {
                    Ok(()) if stage == Stage::Download => outage.forget(id),
                    Ok(()) | Err(PipelineError::Shutdown) => {}
                    Err(e) => {
                        tracing::error!(job = %id, "{stage:?} step failed, again in {COOLDOWN:?}: {e}");
                        self.resting.insert(id, Instant::now() + COOLDOWN);
                    }
                }
            }
            // A panicking task is a bug; its job stays in a state that recovery continues from.
            Err(e) => tracing::error!("a pipeline task ended abnormally: {e}"),
        }
    }
}

/// One look at the store: starts due work — polls and downloads before uploads, since results
/// expire — carries out source dispositions, and says how long to sleep.
async fn step(
    ctx: &Arc<Ctx>,
    workers: &mut Workers,
    pause: Option<&Pause>,
    outage: &mut Outage,
) -> Result<Duration, PipelineError> {
    let rested = Instant::now();
    workers.resting.retain(|_, until| *until > rested);
    // One look at the store for every stage; a paused stage asks for nothing.
    let results_flow = !pause.is_some_and(Pause::needs_a_person);
    let limits = DueLimits {
        polls: if results_flow {
            workers.free(ctx, Stage::Poll)
        } else {
            0
        },
        downloads: if results_flow {
            workers.free(ctx, Stage::Download)
        } else {
            0
        },
        uploads: if pause.is_none() {
            workers.free(ctx, Stage::Upload)
        } else {
            0
        },
    };
    let now = now_ms();
    let mut busy = workers.busy();
    busy.extend(outage.busy());
    let due = ctx.store.due_work(now, limits, &busy).await?;
    outage.note(&due.polls);
    outage.note(&due.downloads);
    workers.start(
        ctx,
        Stage::Poll,
        due.polls.into_iter().map(Task::Poll).collect(),
    );
    let downloads = due.downloads.into_iter().map(Task::Download).collect();
    workers.start(ctx, Stage::Download, downloads);
    workers.start(
        ctx,
        Stage::Upload,
        due.uploads.into_iter().map(Task::Upload).collect(),
    );
    super::dispose::pass(ctx).await?;
    // Sleep until the next job falls due. Work already due but not started waits for a free
    // slot (a task ending wakes us) or for a pause to end (within IDLE_LOOK).
    Ok(match due.next_due_ms {
        Some(at) if at > now_ms() => Duration::from_millis((at - now_ms()) as u64).min(IDLE_LOOK),
        _ => IDLE_LOOK,
    })
}

/// Lets work in flight finish within the grace period, then abandons it. Abandoning is safe: an
/// upload cut short is reconciled at the next start, a download is simply done again.
async fn drain(ctx: &Ctx, tasks: &mut JoinSet<TaskResult>) {
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
/// what the account has now. Nothing is in flight any more, so the reading closes the credit
/// epoch (see `epochs`): what the account lost beyond this run's uploads is counted as spent
/// elsewhere now, not mixed into the next run's. Best effort: a failure only leaves an older
/// figure.
async fn record_final_credits(ctx: &Ctx) {
    // The turn before the reading: on a shared queue other nodes' uploads end first.
    let turn = match ctx.epochs.settle_turn().await {
        Ok(turn) => turn,
        Err(e) => {
            tracing::info!("could not close the credit epoch at the end of the run: {e}");
            return;
        }
    };
    ctx.gate.acquire(super::gate::Priority::High).await;
    match tokio::time::timeout(ctx.settings.timeout, ctx.api.credits()).await {
        Ok(Ok(n)) => {
            if let Err(e) = super::recover::close_epoch(ctx, &turn, n).await {
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
            paused: pause.map(Pause::message),
        });
    }
}
