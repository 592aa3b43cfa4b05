//! The store's errors. Each says what happened, to which database file or job, and what to do.

use std::path::PathBuf;

use super::JobId;
use super::state::{IllegalTransition, State};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the queue database {path}: {source}; check that the directory is writable and that the disk is not full"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "the queue database {path} is damaged (it is not a readable SQLite database: {detail}); hili will not start a new empty queue in its place, which would upload every photo again: restore the file from a backup, or move it aside (keeping it for diagnosis) and start afresh with an empty queue"
    )]
    NotADatabase { path: PathBuf, detail: String },

    #[error(
        "no queue database at {path}: nothing has been queued yet; queue photos with `hili add <folder> --repair <type> --output <dir>` (or start `hili run` with watch folders), or, if the queue is elsewhere, set `[queue] database` in the config file (or name the config with `--config <file>`)"
    )]
    Missing { path: PathBuf },

    #[error(
        "cannot bring the queue database {path} up to date: {source}; if a newer hili wrote it, use that version"
    )]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "cannot reach the shared queue {database}: {source}; check that PostgreSQL is running and reachable from this machine, and the URL, user and password in `[queue] database` (uploads wait until it answers: none is sent without a durable intent)"
    )]
    Unreachable {
        database: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "the node name {node} is in use on the shared queue by another machine ({host}, pid {pid}, last heard {ago_s} s ago); give this workstation its own `[queue] node` name (each node's jobs are the files on its own disks)"
    )]
    NodeTaken {
        node: String,
        host: String,
        pid: i64,
        ago_s: i64,
    },

    #[error(
        "cannot bring the shared queue {database} up to date: {source}; if a newer hili wrote it, run that version on every node"
    )]
    MigrateShared {
        database: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "queue database error while {context}: {source}; if it persists, check the disk (a queue file) or that the database server answers (a shared queue), then run `hili status`"
    )]
    Sql {
        context: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "job {job} was expected in state {expected} but is {found}: another worker or command moved it first; re-read the job and carry on from its current state"
    )]
    Conflict {
        job: JobId,
        expected: State,
        found: State,
    },

    #[error(
        "job {job} was not uploaded: an identical photo is being processed, or is held after a charge; it waits for that job and copies its result instead of paying again"
    )]
    TwinBusy { job: JobId },

    #[error(transparent)]
    Illegal(#[from] IllegalTransition),

    #[error("job {0} does not exist in the queue database; list jobs with `hili jobs`")]
    NotFound(JobId),

    #[error("job {job} is {state}: {hint}")]
    NotRetryable {
        job: JobId,
        state: State,
        hint: &'static str,
    },

    #[error("refusing to store invalid job data: {detail}")]
    Invalid { detail: String },

    #[error(
        "job {job} holds unreadable data in the queue database ({detail}); was it written by a newer hili? Use that version or re-add the file"
    )]
    Corrupt { job: JobId, detail: String },
}

impl StoreError {
    /// Whether the database is away (a connection refused or dropped, a server restarting or
    /// shutting down, a pool that found no connection in time, a deadlock or serialization
    /// failure) rather than refusing: worth trying again after a moment.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            StoreError::Sql { source, .. } | StoreError::Unreachable { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exception; 57P01..57P03: the server shutting down or
            // starting; 40001/40P01: serialization failure and deadlock.
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
            }),
            _ => false,
        }
    }
}

/// Attaches a "while …" context to sqlx errors.
pub(crate) trait SqlContext<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: impl Into<String>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql {
            context: context.into(),
            source,
        })
    }
}
