//! The store's interface: [`JobStore`], every operation the pipeline, the watcher and the CLI
//! call, and [`Store`], the cheap handle they hold. The queue in SQLite ([`SqliteStore`]) is
//! one implementation; a second backend (a shared queue on another database) implements this
//! trait and nothing in `pipeline/`, `watch/` or `cli/` changes. How a backend makes its
//! writes durable (SQLite: group commit, `BEGIN IMMEDIATE`, its pragmas) stays behind it.
//!
//! Every transition method is one guarded move of the state machine (`state::EDGES`): it
//! succeeds only from the state the caller names and writes the job's events row with it, or
//! fails with [`StoreError::Conflict`] and changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Closing, DueLimits, DueWork, EnqueueOutcome, Epoch, EpochId, Event, ExportRow, Identity, Job,
    JobFolders, JobId, Known, NewJob, NodeInfo, NodeName, Paid, PgStore, Photo, ProvenanceEvent,
    RunTally, SqliteStore, State, StoreError, UploadIntent, Uploaded,
};
use crate::media::mover::MovePlan;
use crate::repair::{Repair, Rgb};

/// A place held in a shared queue's barrier ([`JobStore::fleet_guard`]); dropping it gives the
/// place back (its connection closes, and the server releases the lock).
pub struct FleetGuard(#[allow(dead_code)] pub(crate) Box<dyn std::any::Any + Send + Sync>);

impl fmt::Debug for FleetGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetGuard")
    }
}

/// An accepted write whose commit may still be under way (see [`JobStore::queue_uploaded`]).
pub type Committing<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Declares the async operations of [`JobStore`] once, and implements them for both backends
/// (the SQLite queue and the shared queue on PostgreSQL) by calling their inherent methods of
/// the same name: one list, no forwarding copies.
macro_rules! operations {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        /// The operations of a job queue; see the module documentation.
        #[async_trait]
        pub trait JobStore: Send + Sync + fmt::Debug + 'static {
            $( $(#[$doc])* async fn $name(&self $(, $arg: $ty)*) -> $ret; )*

            /// Records an upload's answer (`uploading` → `processing`, one credit counted)
            /// without waiting for it to be durable: the write is ordered before every write
            /// this store accepts after the call returns, so the next upload's intent cannot
            /// overtake it; the returned future resolves once it is durable (or was refused).
            fn queue_uploaded<'a>(
                &'a self,
                id: JobId,
                answer: &Uploaded<'_>,
            ) -> Result<Committing<'a>, StoreError>;

            /// Ends the store's connections (pending writes are committed first).
            async fn close(&self);

            /// Where this queue keeps the converted copies of its inputs on this machine.
            fn converted_dir(&self) -> PathBuf;

            /// A file of this process's own beside the queue, on this machine (`name` tells
            /// what it holds): never shared with another node or another queue.
            fn local_file(&self, name: &str) -> PathBuf;

            /// Names the watch folders shared by every node of a shared queue (the same path on
            /// each): their jobs are any node's. Nothing for a queue of its own.
            fn share_roots(&self, roots: Vec<PathBuf>) {
                let _ = roots;
            }

            /// This process's node on a shared queue (`None`: a queue of its own).
            fn node(&self) -> Option<&NodeName> {
                None
            }

            /// Joins a shared queue as this node (refused while another machine runs under its
            /// name); returns how many nodes are live. Nothing for a queue of its own.
            async fn join(&self) -> Result<usize, StoreError> {
                Ok(1)
            }

            /// Says this node is alive and renews its leases; returns how many nodes are live
            /// (1 on a queue of its own), for the share of the account's request rate.
            async fn heartbeat(&self) -> Result<usize, StoreError> {
                Ok(1)
            }

            /// Records that this node stopped cleanly and gives its leases back.
            async fn leave(&self) -> Result<(), StoreError> {
                Ok(())
            }

            /// A place in the fleet's credit barrier (see `pipeline::epochs`): shared for an
            /// upload, exclusive to close an epoch; released when dropped. `None` for a queue
            /// of its own, where the process's own barrier is the whole barrier.
            async fn fleet_guard(&self, exclusive: bool) -> Result<Option<FleetGuard>, StoreError> {
                let _ = exclusive;
                Ok(None)
            }

            /// The jobs this process may work on, by state: all of them on a queue of its own;
            /// on a shared queue, the queued jobs it can read (its own, the shared folders')
            /// and the jobs in flight it holds or may take over. What a `--once` run waits for.
            async fn counts_here(&self) -> Result<BTreeMap<State, u64>, StoreError> {
                self.counts().await
            }

            /// The nodes of a shared queue (none for a queue of its own).
            async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
                Ok(Vec::new())
            }

            /// Adds one job; see [`JobStore::enqueue_many`].
            async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
                let mut outcomes = self.enqueue_many(vec![job]).await?;
                outcomes.pop().ok_or_else(|| StoreError::Invalid {
                    detail: "enqueue produced no outcome (a bug in hili)".into(),
                })
            }

            /// `queued` → `uploading`: the upload intent, persisted BEFORE the request is sent,
            /// with the credits seen and no hash (a twin may go too).
            async fn begin_upload(&self, id: JobId, credits_before: u64) -> Result<(), StoreError> {
                let intent = UploadIntent {
                    epoch: None,
                    credits_before,
                    content_sha256: None,
                    exclusive: false,
                };
                self.begin_upload_with(id, &intent).await
            }
        }

        #[async_trait]
        impl JobStore for SqliteStore {
            $( async fn $name(&self $(, $arg: $ty)*) -> $ret {
                SqliteStore::$name(self $(, $arg)*).await
            } )*

            async fn close(&self) {
                SqliteStore::close(self).await
            }

            fn converted_dir(&self) -> PathBuf {
                SqliteStore::converted_dir(self)
            }

            fn local_file(&self, name: &str) -> PathBuf {
                SqliteStore::local_file(self, name)
            }

            fn queue_uploaded<'a>(
                &'a self,
                id: JobId,
                answer: &Uploaded<'_>,
            ) -> Result<Committing<'a>, StoreError> {
                let write = SqliteStore::queue_uploaded(self, id, answer)?;
                Ok(Box::pin(write.committed()))
            }
        }

        #[async_trait]
        impl JobStore for PgStore {
            $( async fn $name(&self $(, $arg: $ty)*) -> $ret {
                PgStore::$name(self $(, $arg)*).await
            } )*

            async fn close(&self) {
                PgStore::close(self).await
            }

            fn converted_dir(&self) -> PathBuf {
                PgStore::converted_dir(self)
            }

            fn local_file(&self, name: &str) -> PathBuf {
                PgStore::local_file(self, name)
            }

            fn node(&self) -> Option<&NodeName> {
                Some(PgStore::node(self))
            }

            fn share_roots(&self, roots: Vec<PathBuf>) {
                PgStore::share_roots(self, roots)
            }

            async fn heartbeat(&self) -> Result<usize, StoreError> {
                PgStore::heartbeat(self).await
            }

            async fn join(&self) -> Result<usize, StoreError> {
                PgStore::join(self).await
            }

            async fn leave(&self) -> Result<(), StoreError> {
                PgStore::leave(self).await
            }

            async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
                PgStore::nodes(self).await
            }

            async fn fleet_guard(&self, exclusive: bool) -> Result<Option<FleetGuard>, StoreError> {
                Ok(Some(PgStore::barrier(self, exclusive).await?))
            }

            async fn counts_here(&self) -> Result<BTreeMap<State, u64>, StoreError> {
                PgStore::counts_here(self).await
            }

            fn queue_uploaded<'a>(
                &'a self,
                id: JobId,
                answer: &Uploaded<'_>,
            ) -> Result<Committing<'a>, StoreError> {
                PgStore::queue_uploaded(self, id, answer)
            }
        }
    };
}

operations! {
    // Adding work.
    /// Adds jobs in one transaction; a version already queued is reported, not added twice.
    fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError>;
    /// [`JobStore::enqueue_many`] with the rule for what counts as already known.
    fn enqueue_many_as(&self, jobs: Vec<NewJob>, known: Known)
        -> Result<Vec<EnqueueOutcome>, StoreError>;
    /// Records files `hili add` found invalid as failed jobs with their reasons (deduped).
    fn enqueue_invalid(&self, jobs: Vec<(NewJob, String)>) -> Result<Vec<EnqueueOutcome>, StoreError>;

    // The state machine's moves.
    /// `queued` → `uploading`: the intent, durable before a byte is sent.
    fn begin_upload_with(&self, id: JobId, intent: &UploadIntent<'_>) -> Result<(), StoreError>;
    /// A late upload answer for a job taken for lost: back to `processing`.
    fn adopt_answer(&self, id: JobId, found: State, answer: &Uploaded<'_>)
        -> Result<(), StoreError>;
    /// Back to `queued`, no earlier than `not_before_ms`.
    fn requeue(&self, id: JobId, from: State, reason: &str, not_before_ms: i64)
        -> Result<(), StoreError>;
    /// To `failed`, with the reason a person reads.
    fn fail(&self, id: JobId, from: State, reason: &str) -> Result<(), StoreError>;
    /// `queued` → `skipped`: nothing to do, nothing spent.
    fn skip(&self, id: JobId, reason: &str) -> Result<(), StoreError>;
    /// To `held`: a person decides.
    fn hold(&self, id: JobId, from: State, reason: &str, credit_spent: bool)
        -> Result<(), StoreError>;
    /// `processing` → `downloading`.
    fn begin_download(&self, id: JobId) -> Result<(), StoreError>;
    /// `queued` → `downloading`: the same photo as a done twin whose result the service keeps.
    fn fetch_twin(&self, id: JobId, twin: JobId, photo: &Photo, processed_at_ms: i64)
        -> Result<(), StoreError>;
    /// To `done`, with the result's path and hash.
    fn finish(&self, id: JobId, from: State, output_path: &Path, output_sha256: &str)
        -> Result<(), StoreError>;
    /// A person's `hili retry`: the state the job went to.
    fn retry(&self, id: JobId, reupload: bool) -> Result<State, StoreError>;

    // Scheduling (no state change, no event).
    /// The due jobs of each stage, and when the next one falls due.
    fn due_work(&self, now_ms: i64, limits: DueLimits, skip: &[JobId]) -> Result<DueWork, StoreError>;
    /// Delays a queued or downloading job.
    fn defer(&self, id: JobId, state: State, at_ms: i64) -> Result<(), StoreError>;
    /// When to ask the service about a processing job next.
    fn set_next_poll(&self, id: JobId, at_ms: i64) -> Result<(), StoreError>;
    /// The paid jobs (`processing`, `downloading`) this process works: every one on a queue
    /// of its own; on a shared queue those leased to this node, and its own that no other
    /// node holds. What the pipeline keeps in memory to ride out the database's absence.
    fn paid_here(&self) -> Result<Vec<Paid>, StoreError>;

    // Reading jobs.
    fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    fn jobs_in(&self, state: State) -> Result<Vec<Job>, StoreError>;
    fn all_jobs(&self, filter: Option<State>) -> Result<Vec<Job>, StoreError>;
    fn oldest_queued(&self) -> Result<Option<Job>, StoreError>;
    fn counts(&self) -> Result<BTreeMap<State, u64>, StoreError>;
    fn job_count(&self) -> Result<u64, StoreError>;
    fn events(&self, id: JobId) -> Result<Vec<Event>, StoreError>;
    /// Jobs that reached a final state since `since_ms`, by state.
    fn outcomes_since(&self, since_ms: i64) -> Result<BTreeMap<State, u64>, StoreError>;
    /// The newest event's id: a run's starting mark for [`JobStore::run_tally`].
    fn last_event_id(&self) -> Result<i64, StoreError>;
    /// The jobs that ended after `after_event`, by state, and those still to end.
    fn run_tally(&self, after_event: i64) -> Result<RunTally, StoreError>;
    /// Every other job with this identity.
    fn identity_twins(&self, ident: &Identity, excluding: JobId) -> Result<Vec<Job>, StoreError>;
    /// A later job for the same file (same path, or same file renamed in place).
    fn successor(&self, job: &Job) -> Result<Option<Job>, StoreError>;
    /// The job of the file this job's file was renamed from.
    fn renamed_from(&self, job: &Job) -> Result<Option<Job>, StoreError>;
    /// What `hili add --dry-run` compares against.
    fn source_index(&self, repair: Repair, rgb: Option<Rgb>, output_dir: &Path)
        -> Result<HashMap<(PathBuf, u64, i64), State>, StoreError>;

    // Watch folders and hili's own results.
    fn known_versions(&self, source_root: &Path) -> Result<HashMap<PathBuf, (u64, i64)>, StoreError>;
    fn result_paths(&self) -> Result<HashSet<PathBuf>, StoreError>;
    fn result_with_hash(&self, sha256: &str, except: JobId)
        -> Result<Option<(JobId, Option<PathBuf>)>, StoreError>;
    fn output_dirs(&self) -> Result<Vec<PathBuf>, StoreError>;
    fn job_folders(&self, states: &[State]) -> Result<BTreeSet<JobFolders>, StoreError>;

    // What happens to sources after their jobs.
    fn undisposed(&self, roots: &[PathBuf], limit: usize) -> Result<Vec<Job>, StoreError>;
    fn later_job_at(&self, id: JobId, path: &Path) -> Result<Option<JobId>, StoreError>;
    fn mark_disposed(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError>;
    fn record_move(&self, id: JobId, plan: &MovePlan) -> Result<(), StoreError>;
    fn pending_move(&self, id: JobId) -> Result<Option<MovePlan>, StoreError>;
    fn pending_moves(&self) -> Result<Vec<(JobId, MovePlan)>, StoreError>;
    fn clear_move(&self, id: JobId) -> Result<(), StoreError>;
    fn finish_move(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError>;

    // The account and the queue itself.
    fn record_credits(&self, credits_left: u64) -> Result<(), StoreError>;
    fn latest_credits(&self) -> Result<Option<(i64, u64)>, StoreError>;
    fn open_epoch(&self) -> Result<Option<Epoch>, StoreError>;
    fn epoch(&self, id: EpochId) -> Result<Option<Epoch>, StoreError>;
    fn uploading_in(&self, epoch: EpochId) -> Result<Vec<JobId>, StoreError>;
    fn roll_epoch(&self, closing: Option<(EpochId, Closing)>, start_credits: u64) -> Result<EpochId, StoreError>;
    fn credits_spent_elsewhere(&self) -> Result<u64, StoreError>;
    fn credits_spent(&self) -> Result<u64, StoreError>;
    /// Credits charged at or after the instant, counted from the events (the daily budget).
    fn charged_since(&self, since_ms: i64) -> Result<u64, StoreError>;
    fn paid_waiting(&self) -> Result<(u64, Option<i64>), StoreError>;
    fn queue_id(&self) -> Result<String, StoreError>;
    fn set_pause_note(&self, note: Option<&str>) -> Result<(), StoreError>;
    fn pause_note(&self) -> Result<Option<(i64, String)>, StoreError>;

    // Notes in a job's events that change no state.
    /// Adds a note a person should see (a warning of a stage), once.
    fn note(&self, id: JobId, detail: &str) -> Result<(), StoreError>;
    /// Records a note in a job's events (state unchanged), once.
    fn note_input(&self, id: JobId, note: &str) -> Result<(), StoreError>;
    /// The latest input note of every job that has one.
    fn input_notes(&self) -> Result<HashMap<JobId, String>, StoreError>;

    // Provenance and fixity (`hili export`, `hili verify`, output manifests).
    /// Jobs changed at or after the instant (all without it), with upload time and credits.
    fn export_jobs(&self, since_ms: Option<i64>) -> Result<Vec<ExportRow>, StoreError>;
    /// Events written at or after the instant, with what a PREMIS event needs.
    fn export_events(&self, since_ms: Option<i64>) -> Result<Vec<ProvenanceEvent>, StoreError>;
    /// The done results of an output folder, as (path, SHA-256) sorted by path.
    fn done_results_in(&self, output_dir: &Path) -> Result<Vec<(PathBuf, String)>, StoreError>;
    /// Every output folder holding at least one done result.
    fn result_dirs(&self) -> Result<Vec<PathBuf>, StoreError>;

    // Runs and the notes a report shows (`hili report`).
    /// Records that a run starts now; returns that instant.
    fn mark_run_started(&self) -> Result<i64, StoreError>;
    /// When the latest run started, if one was recorded.
    fn last_run_started(&self) -> Result<Option<i64>, StoreError>;
    /// Every note (an event that changed no state) of every job, oldest first.
    fn job_notes(&self) -> Result<HashMap<JobId, Vec<String>>, StoreError>;
}

/// The queue as the rest of hili holds it: cheap to clone, one backend behind it. Derefs to
/// [`JobStore`], so `store.get(id)` is a call of the interface.
#[derive(Clone)]
pub struct Store(Arc<dyn JobStore>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl JobStore) -> Store {
        Store(Arc::new(backend))
    }

    /// Opens (creating if needed) the SQLite queue at `path`; see [`SqliteStore::open`].
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::new(SqliteStore::open(path).await?))
    }

    /// Opens a SQLite queue that must already exist; see [`SqliteStore::open_existing`].
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::new(SqliteStore::open_existing(path).await?))
    }
}

impl Deref for Store {
    type Target = dyn JobStore;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
