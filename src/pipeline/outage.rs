//! Riding out a shared queue's database outage. While PostgreSQL answers, the supervisor keeps
//! in memory the paid jobs this node works (`JobStore::paid_here`, read again every
//! [`REMEMBER`], and those the stages take as they take them). When a look at the queue fails because the database is away, those jobs go on
//! without it: each is polled until its result is ready, and the result is fetched into its
//! output file as the download stage would — but nothing is written to the queue. Each stored
//! result is appended to a journal on this machine ([`Journal`], fsynced, so a kill or a stop
//! does not forget it) and, once the database answers again, recorded as the stages would have
//! (`processing → downloading → done`, the metadata note, the manifest). Results expire an hour
//! after processing: an outage no longer costs them. Uploads do not ride: none is sent without
//! a durable intent.
//!
//! Safe because the guarded transitions stay the authority. If another node finished a job
//! meanwhile (this node's leases ran out while only it was cut off), the `done` recorded first
//! wins and the other copy is removed (`download::outrun`); if the job moved on otherwise, or
//! the service's photo is no longer the one fetched, the file is kept and named in the log.
//! Only on a shared queue: a queue of its own is on this machine's disk, and its errors are not
//! outages to ride out.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::client::JobStatus;
use crate::api::error::ApiError;
use crate::store::{JobId, Paid, State, StoreError};

use super::download::{self, Fetched};
use super::gate::Priority;
use super::{Ctx, blocking, now_ms, poll};

/// How often the paid jobs held in memory are read again while the database answers.
pub(super) const REMEMBER: Duration = Duration::from_secs(1);

/// The journal's name beside the queue (`JobStore::local_file`).
const JOURNAL: &str = "landed.jsonl";

/// A result fetched while the database was away, not yet recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Landed {
    pub job: i64,
    /// The service's photo the result is of: a job uploaded again since is not this result's.
    pub mdf: String,
    /// The output file, as raw bytes (a path need not be UTF-8).
    pub path: Vec<u8>,
    pub sha256: String,
    /// The metadata warning to note on the job, if any.
    pub warning: Option<String>,
}

impl Landed {
    fn path(&self) -> PathBuf {
        PathBuf::from(std::ffi::OsString::from_vec(self.path.clone()))
    }
}

/// The results fetched but not yet recorded: in memory, and one JSON line each in a file beside
/// the queue, synced before the result counts as landed.
pub(super) struct Journal {
    file: PathBuf,
    entries: Mutex<Vec<Landed>>,
    /// One writer at a time: lines appended by several fetches at once must not interleave
    /// (found by the kill test: two entries merged into one line that does not parse).
    writing: tokio::sync::Mutex<()>,
}

impl Journal {
    /// The journal at `file`, with what an earlier life of this process left in it. Lines
    /// that do not parse (a line cut short by a power cut) are skipped: their results are
    /// fetched again.
    pub(super) async fn open(file: PathBuf) -> Journal {
        let path = file.clone();
        let text = blocking(move || std::fs::read_to_string(&path))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let entries = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Landed>(l).ok())
            .collect();
        Journal {
            file,
            entries: Mutex::new(entries),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn entries(&self) -> Vec<Landed> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a landed result, synced to disk. A journal that cannot be written is logged: the
    /// result is still recorded from memory when the database returns; only a stop before then
    /// would fetch it once more (a second copy beside the first, no credit).
    async fn append(&self, landed: Landed) {
        let mut line = serde_json::to_string(&landed).unwrap_or_default();
        line.push('\n');
        let _writing = self.writing.lock().await;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(landed);
        let file = self.file.clone();
        let written = blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)?;
            f.write_all(line.as_bytes())?;
            f.sync_data()
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!(
                "could not write the journal of results fetched while the queue was away ({}); \
                 they are recorded from memory when it is back",
                self.file.display()
            );
        }
    }

    /// Keeps only the entries not in `recorded`, on disk too (rewritten whole, renamed into
    /// place; removed when empty).
    async fn forget(&self, recorded: &HashSet<i64>) {
        let _writing = self.writing.lock().await;
        let left: Vec<Landed> = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|l| !recorded.contains(&l.job));
            entries.clone()
        };
        let file = self.file.clone();
        let written = blocking(move || -> std::io::Result<()> {
            if left.is_empty() {
                return match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let mut tmp = file.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let mut f = std::fs::File::create(&tmp)?;
            for l in &left {
                writeln!(f, "{}", serde_json::to_string(l).unwrap_or_default())?;
            }
            f.sync_data()?;
            std::fs::rename(&tmp, &file)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            // Harmless: an entry recorded already is found done next time and dropped.
            tracing::warn!(
                "could not rewrite the journal of results fetched while the queue was away ({})",
                self.file.display()
            );
        }
    }
}

/// What the supervisor keeps to ride out an outage; see the module documentation.
pub(super) struct Outage {
    enabled: bool,
    /// The paid jobs this node works, as last read.
    known: HashMap<JobId, Paid>,
    read_at: Option<Instant>,
    /// Jobs ridden now, and those ridden (or tried) during this outage: not started twice.
    riding: HashSet<JobId>,
    tried: HashSet<JobId>,
    tasks: JoinSet<JobId>,
    /// Ends the ride's waits: when the database is back, or the run stops (a child of its
    /// shutdown, made anew for each ride).
    stop: CancellationToken,
    shutdown: CancellationToken,
    /// The ride's download slots (`download_concurrency`).
    slots: Arc<Semaphore>,
    journal: Arc<Journal>,
}

impl Outage {
    pub(super) async fn new(ctx: &Ctx) -> Outage {
        let journal = Journal::open(ctx.store.local_file(JOURNAL)).await;
        Outage {
            enabled: ctx.store.node().is_some(),
            known: HashMap::new(),
            read_at: None,
            riding: HashSet::new(),
            tried: HashSet::new(),
            tasks: JoinSet::new(),
            stop: ctx.shutdown.child_token(),
            shutdown: ctx.shutdown.clone(),
            slots: Arc::new(Semaphore::new(ctx.settings.download_concurrency.max(1))),
            journal: Arc::new(journal),
        }
    }

    /// The jobs the stages must leave alone: those ridden now and those whose fetched result
    /// waits to be recorded.
    pub(super) fn busy(&self) -> impl Iterator<Item = JobId> + '_ {
        let landed: Vec<JobId> = self
            .journal
            .entries()
            .into_iter()
            .map(|l| JobId(l.job))
            .collect();
        self.riding.iter().copied().chain(landed)
    }

    /// Paid jobs the stages are about to work: known at once, not only at the next reading
    /// (a photo uploaded just before the outage would otherwise be left out of the ride).
    pub(super) fn note(&mut self, paid: &[Paid]) {
        if self.enabled {
            for p in paid {
                self.known.insert(p.job.id, p.clone());
            }
        }
    }

    /// A download the stages finished: no longer one to ride.
    pub(super) fn forget(&mut self, id: JobId) {
        self.known.remove(&id);
    }

    /// The database answered: ends a ride, records what it fetched, and reads the paid jobs
    /// again when they are older than [`REMEMBER`].
    pub(super) async fn answered(&mut self, ctx: &Ctx) {
        if !self.riding.is_empty() || !self.tasks.is_empty() {
            self.end_ride().await;
            tracing::info!(
                "the queue database answers again: recording the results fetched meanwhile"
            );
        }
        self.record(ctx).await;
        if self.enabled && self.read_at.is_none_or(|t| t.elapsed() >= REMEMBER) {
            match ctx.store.paid_here().await {
                Ok(paid) => {
                    tracing::debug!(paid = paid.len(), "paid jobs kept in memory");
                    self.known = paid.into_iter().map(|p| (p.job.id, p)).collect();
                    self.read_at = Some(Instant::now());
                }
                Err(e) => tracing::debug!("could not read this node's paid jobs: {e}"),
            }
        }
    }

    /// The database is away: starts riding every known paid job that no stage task holds
    /// (`active`) and that was not ridden yet in this outage.
    pub(super) fn ride(&mut self, ctx: &Arc<Ctx>, active: &HashSet<JobId>) {
        if !self.enabled {
            return;
        }
        while let Some(done) = self.tasks.try_join_next() {
            if let Ok(id) = done {
                self.riding.remove(&id);
            }
        }
        let landed: HashSet<i64> = self.journal.entries().iter().map(|l| l.job).collect();
        let start: Vec<Paid> = self
            .known
            .values()
            .filter(|p| {
                let id = p.job.id;
                !active.contains(&id) && !self.tried.contains(&id) && !landed.contains(&id.0)
            })
            .cloned()
            .collect();
        tracing::debug!(
            known = self.known.len(),
            held_by_stages = active.len(),
            tried = self.tried.len(),
            starting = start.len(),
            "the queue database is away"
        );
        if start.is_empty() {
            return;
        }
        tracing::warn!(
            "the queue database is away: polling and fetching {} paid photo(s) from memory; \
             their results are recorded when it is back (no upload starts meanwhile)",
            start.len()
        );
        for paid in start {
            let id = paid.job.id;
            self.riding.insert(id);
            self.tried.insert(id);
            let (ctx, stop) = (ctx.clone(), self.stop.clone());
            let (slots, journal) = (self.slots.clone(), self.journal.clone());
            self.tasks.spawn(async move {
                ride_one(&ctx, paid, &stop, &slots, &journal).await;
                id
            });
        }
    }

    /// The end of a run: the ride stops (fetches under way finish), and what it fetched is
    /// recorded if the database answers; if not, the journal keeps it for the next start.
    pub(super) async fn end(&mut self, ctx: &Ctx) {
        self.end_ride().await;
        self.record(ctx).await;
    }

    /// Stops the ride's waits and waits for its fetches under way.
    async fn end_ride(&mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.riding.clear();
        self.tried.clear();
        self.stop = self.shutdown.child_token();
    }

    /// Records each landed result; stops at the first the database cannot take (away again):
    /// the rest waits in the journal. Nothing to do (no query) when the journal is empty.
    pub(super) async fn record(&mut self, ctx: &Ctx) {
        let entries = self.journal.entries();
        if entries.is_empty() {
            return;
        }
        let mut recorded = HashSet::new();
        for landed in &entries {
            match record_one(ctx, landed).await {
                Err(e) if e.is_transient() => {
                    tracing::info!("recording the results fetched meanwhile waits: {e}");
                    break;
                }
                // Recorded, or settled otherwise (logged where it was): out of the journal.
                _ => {
                    recorded.insert(landed.job);
                }
            }
        }
        self.journal.forget(&recorded).await;
    }
}

/// Records one landed result as the stages would have. `Ok` also when the job turned out to
/// have moved on (then `download::outrun` removed or kept the file, and said so).
async fn record_one(ctx: &Ctx, landed: &Landed) -> Result<(), StoreError> {
    let id = JobId(landed.job);
    let path = landed.path();
    let Some(job) = ctx.store.get(id).await? else {
        tracing::warn!(job = %id, "the job was removed from the queue; its result is kept at {}", path.display());
        return Ok(());
    };
    let same_photo = matches!(
        &job.stage,
        crate::store::Stage::Processing(p) | crate::store::Stage::Downloading(p) if p.mdf == landed.mdf
    );
    if !same_photo && job.state() != State::Done {
        tracing::warn!(
            job = %id,
            "the job moved on while the queue was away (now {}); the result fetched meanwhile is kept at {}",
            job.state(),
            path.display()
        );
        return Ok(());
    }
    if job.state() == State::Processing {
        ctx.store.begin_download(id).await?;
    }
    match ctx
        .store
        .finish(id, State::Downloading, &path, &landed.sha256)
        .await
    {
        Ok(()) => {
            if let Some(w) = &landed.warning {
                ctx.store.note(id, w).await?;
            }
            super::manifest::result_landed(ctx, &job).await;
            ctx.control.clear_failures(id);
            tracing::info!(job = %id, "done (fetched while the queue was away): {}", path.display());
            Ok(())
        }
        Err(e) => {
            let e = download::outrun(ctx, id, &path, e).await;
            if e.is_transient() { Err(e) } else { Ok(()) }
        }
    }
}

/// Rides one paid job: polls it until its result is ready (unless it was already), then
/// fetches the result, `max_attempts` times at most, and journals it. Anything else (the
/// photo expired, the service refusing) is left for the stages when the database is back.
async fn ride_one(
    ctx: &Ctx,
    paid: Paid,
    stop: &CancellationToken,
    slots: &Semaphore,
    journal: &Journal,
) {
    if paid.job.state() == State::Processing && !ready(ctx, &paid, stop).await {
        return;
    }
    let id = paid.job.id;
    for attempt in 1..=ctx.settings.max_attempts.max(1) {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.acquire() => slot,
        };
        let fetched = download::fetch_result(ctx, &paid.job, &paid.photo).await;
        drop(slot);
        let why = match fetched {
            Ok(Fetched::Stored { path, sha, warning }) => {
                tracing::info!(job = %id, "result fetched while the queue is away: {}", path.display());
                let landed = Landed {
                    job: id.0,
                    mdf: paid.photo.mdf.clone(),
                    path: path.into_os_string().as_bytes().to_vec(),
                    sha256: sha,
                    warning,
                };
                journal.append(landed).await;
                return;
            }
            Ok(Fetched::Expired) => {
                tracing::info!(job = %id, "the result expired at the service: left for when the queue is back");
                return;
            }
            Err(_) => return,
            Ok(Fetched::Api(e)) => e.to_string(),
            Ok(Fetched::Fetch(e)) => e.to_string(),
        };
        let wait = ctx.retry_wait(attempt, Duration::from_secs(60), id);
        tracing::info!(job = %id, "fetching the result failed, again in {wait:?}: {why}");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Polls a processing photo until the service says its result is ready (`true`), or the ride
/// stops or the photo is gone (`false`).
async fn ready(ctx: &Ctx, paid: &Paid, stop: &CancellationToken) -> bool {
    let (id, mdf) = (paid.job.id, paid.photo.mdf.as_str());
    let due = paid.job.next_poll_at_ms.unwrap_or(0);
    let mut wait = Duration::from_millis((due - now_ms()).max(0) as u64);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        ctx.gate.acquire(Priority::High).await;
        wait = match ctx.api.status(mdf).await {
            Ok(JobStatus::Done) => {
                let job = &paid.job;
                ctx.poll_clock
                    .ready(id, poll::due_elapsed(job), poll::elapsed(job));
                return true;
            }
            Ok(JobStatus::Processing) => {
                let interval = ctx.settings.poll_interval;
                ctx.poll_clock
                    .still_processing(id, poll::elapsed(&paid.job), interval)
            }
            Err(ApiError::NotFound { .. }) => {
                tracing::info!(job = %id, "the service no longer has photo {mdf}: left for when the queue is back");
                return false;
            }
            Err(e) => {
                failures += 1;
                let wait = super::backoff::retry_delay(
                    failures,
                    ctx.settings.poll_interval,
                    Duration::from_secs(60),
                    id,
                );
                tracing::info!(job = %id, "status check failed, again in {wait:?}: {e}");
                wait
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(job: i64) -> Landed {
        Landed {
            job,
            mdf: format!("m{job}"),
            path: b"/out/a\xff.jpg".to_vec(),
            sha256: "ab".repeat(32),
            warning: None,
        }
    }

    #[tokio::test]
    async fn the_journal_keeps_landed_results_across_a_restart_until_they_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hili-landed.jsonl");
        let journal = Journal::open(file.clone()).await;
        journal.append(landed(1)).await;
        journal.append(landed(2)).await;
        // A line cut short by a power cut is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"{\"job\":3,\"md")
            .unwrap();

        let again = Journal::open(file.clone()).await;
        assert_eq!(again.entries(), vec![landed(1), landed(2)]);
        assert_eq!(
            again.entries()[0].path(),
            PathBuf::from(std::ffi::OsString::from_vec(b"/out/a\xff.jpg".to_vec()))
        );

        again.forget(&HashSet::from([1])).await;
        assert_eq!(Journal::open(file.clone()).await.entries(), vec![landed(2)]);
        again.forget(&HashSet::from([2])).await;
        assert!(!file.exists(), "an empty journal is removed");
    }
}
