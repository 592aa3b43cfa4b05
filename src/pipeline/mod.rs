//! The pipeline: workers that move jobs through the store's state machine. Stages never call
//! each other; each reads the jobs it owns from the store, acts, and records the next state,
//! so a crash between any two lines leaves a state that start-up recovery knows how to
//! continue.
//!
//! - [`upload`]: input checks, dedupe by identity, the credit check, the upload itself;
//! - [`poll`]: asks the service whether a photo is processed;
//! - [`download`]: fetches the result into a durable output file;
//! - [`recover`]: start-up reconciliation of interrupted uploads and temp-file cleanup;
//! - [`supervisor`]: schedules the stages with their own concurrency and priorities;
//! - [`hooks`]: what wraps a run for the operator: `/metrics`, and `on_finish` ([`on_finish`]).

pub mod backoff;
mod carry;
pub mod control;
mod day;
pub mod dispose;
pub mod download;
pub mod epochs;
mod fetch_error;
mod fleet;
pub mod gate;
pub mod hooks;
pub mod manifest;
pub mod on_finish;
mod outage;
pub mod pause_note;
pub mod poll;
mod poll_clock;
pub mod queue;
pub mod recover;
mod settings;
pub mod supervisor;
pub mod upload;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use hooks::run;
pub use settings::{Metadata, OnExpired, Oversize, Settings};
pub use supervisor::{Progress, RunOptions, Snapshot, Summary};

use crate::api::client::ApiClient;
use crate::store::{JobId, Store};
use control::Control;
use gate::ApiGate;

/// Errors that stop a stage's work on one job. They are logged and the job is retried later;
/// none of them loses state, because the store was not changed or was changed atomically.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("shutting down")]
    Shutdown,
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::ListenError),
    #[error(
        "a lost upload answer could not be reconciled (the credits could not be read); the job \
         stays in uploading and the next start reconciles it"
    )]
    Unreconciled,
}

/// Everything the stages share for one run.
pub struct Ctx {
    pub store: Store,
    /// What `[metrics]` serves; the client and the gate record into it.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub api: ApiClient,
    pub gate: ApiGate,
    pub settings: Settings,
    pub control: Control,
    /// When to ask about a processing photo, learned from recent processing times.
    pub poll_clock: poll_clock::PollClock,
    /// The credit epochs uploads are admitted into (see `epochs`).
    pub epochs: epochs::Epochs,
    pub shutdown: CancellationToken,
    /// What to do with watched sources after their jobs (replaced on SIGHUP).
    dispositions: std::sync::RwLock<Vec<dispose::Disposition>>,
    /// The queue's id, read once (it never changes for a database file).
    queue_id: tokio::sync::OnceCell<String>,
    /// Output directories whose `.hili-queue` marker was checked or written this run.
    marked: std::sync::Mutex<HashSet<PathBuf>>,
    /// `upload_concurrency` permits: held from the credit check to the recorded answer, so at
    /// most that many uploads are ever in flight (and with 1 the credit count reconciles
    /// exactly). The input check and the hash run before, alongside the upload in flight.
    send_slots: tokio::sync::Semaphore,
}

impl Ctx {
    pub fn new(
        store: Store,
        api: ApiClient,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Arc<Ctx> {
        let node = store.node().map(crate::store::NodeName::as_str);
        let metrics = Arc::new(crate::metrics::Metrics::for_node(node));
        Arc::new(Ctx {
            gate: ApiGate::new(settings.requests_per_second, settings.burst)
                .observed(metrics.clone()),
            api: api.with_observer(metrics.clone()),
            metrics,
            control: Control::default(),
            poll_clock: poll_clock::PollClock::default(),
            epochs: epochs::Epochs::new(settings.credits_recheck).through(store.clone()),
            store,
            shutdown,
            dispositions: std::sync::RwLock::new(Vec::new()),
            queue_id: tokio::sync::OnceCell::new(),
            marked: std::sync::Mutex::new(HashSet::new()),
            send_slots: tokio::sync::Semaphore::new(settings.upload_concurrency.max(1)),
            settings,
        })
    }

    /// This queue's id (see `store::meta`), read from the store once per run.
    pub async fn queue_id(&self) -> Result<&str, crate::store::StoreError> {
        let id = self
            .queue_id
            .get_or_try_init(|| self.store.queue_id())
            .await?;
        Ok(id.as_str())
    }

    fn is_marked(&self, dir: &Path) -> bool {
        let marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        marked.contains(dir)
    }

    fn set_marked(&self, dir: &Path) {
        let mut marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        marked.insert(dir.to_path_buf());
    }

    pub fn dispositions(&self) -> Vec<dispose::Disposition> {
        self.dispositions
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// How long to wait after the `failures`-th failure of a job's step: exponential from
    /// `retry_base`, capped, jittered per job (see [`backoff::retry_delay`]).
    pub(crate) fn retry_wait(&self, failures: u32, cap: Duration, id: JobId) -> Duration {
        backoff::retry_delay(failures, self.settings.retry_base, cap, id)
    }

    pub fn set_dispositions(&self, rules: Vec<dispose::Disposition>) {
        match self.dispositions.write() {
            Ok(mut d) => *d = rules,
            Err(e) => *e.into_inner() = rules,
        }
    }
}

/// Current time in unix milliseconds, the store's unit.
pub(crate) fn now_ms() -> i64 {
    crate::store::now_ms()
}

// The stages' blocking file work goes through the media room's one helper; its `JoinError`
// becomes `PipelineError::Join` through `?`.
pub(crate) use crate::media::blocking;
