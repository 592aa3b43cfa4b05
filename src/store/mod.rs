//! The persistent, crash-safe job queue in SQLite. This room owns every SQL statement, the
//! schema (top-level `migrations/`), the job state machine (`state.rs`), the append-only
//! `events` audit trail and the credit observations. The pipeline only calls methods here.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed transition survives a crash or a
//! power cut; every write runs in a `BEGIN IMMEDIATE` transaction, so writers queue on the
//! database lock up front (bounded by `busy_timeout`) instead of failing half-way. Every
//! transition is one guarded `UPDATE … WHERE id=? AND state=?` plus its events row, so two
//! workers can never both move a job (and so never both spend a credit on it).

mod dispose;
mod enqueue;
mod error;
mod identity;
mod jobs;
mod meta;
mod queries;
mod retry;
mod schedule;
pub mod state;
mod transitions;
mod watch;

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use enqueue::{EnqueueOutcome, NewJob};
pub use error::StoreError;
pub use jobs::{Event, Identity, Job};
pub use state::{IllegalTransition, State, check};

use error::SqlContext;

/// How long a writer waits for the database lock before giving up (another process, e.g. the
/// CLI next to a running daemon, may hold it briefly).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: u32 = 8;

/// A job's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().trim_start_matches('#').parse().map(JobId)
    }
}

/// The queue database. Cheap to clone (a shared connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    /// Serialises this process's write transactions. Without it, writers on different pooled
    /// connections collide on SQLite's lock and the loser sleeps in the busy handler (1, 2, 5,
    /// 10… ms) instead of queueing; other processes are still handled by busy_timeout.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction that holds this process's writer turn until it ends.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Store {
    /// Opens (creating if needed, with mode 0600 and parent directories 0700) the database at
    /// `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |e: std::io::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(open_err)?;
        }
        // Create the file ourselves so it is private from its first byte; SQLite gives the
        // -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(open_err)?;
        Self::connect(path).await
    }

    /// Opens a database that must already exist (for `status`/`jobs` next to a running
    /// daemon). Errors with [`StoreError::Missing`] instead of creating an empty queue.
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::connect(path).await
    }

    async fn connect(path: &Path) -> Result<Store, StoreError> {
        // Set through the connect options so that EVERY pooled connection has them.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| match not_a_database(&e) {
                Some(detail) => StoreError::NotADatabase {
                    path: path.to_path_buf(),
                    detail,
                },
                None => StoreError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                },
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| {
                let damaged = match &source {
                    sqlx::migrate::MigrateError::Execute(e) => not_a_database(e),
                    _ => None,
                };
                match damaged {
                    Some(detail) => StoreError::NotADatabase {
                        path: path.to_path_buf(),
                        detail,
                    },
                    None => StoreError::Migrate {
                        path: path.to_path_buf(),
                        source,
                    },
                }
            })?;
        Ok(Store {
            pool,
            path: path.to_path_buf(),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying pool, for tests and diagnostics (`PRAGMA integrity_check`). The
    /// pipeline must not run SQL itself.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every pooled connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction that takes the database write lock up front.
    pub(crate) async fn begin_write(&self, context: &str) -> Result<WriteTx, StoreError> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx(format!("starting a write transaction ({context})"))?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite answers "ok", else what it found.
    pub async fn integrity_check(&self) -> Result<Result<(), String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .ctx("checking database integrity")?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(Ok(()))
        } else {
            Ok(Err(rows.join("; ")))
        }
    }
}

/// SQLite's answer for a file that is not a database or is damaged (SQLITE_NOTADB 26,
/// SQLITE_CORRUPT 11): a clear "damaged" error, never a generic open failure.
fn not_a_database(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    let code = db.code()?;
    let primary = code.parse::<i32>().ok()? & 0xff;
    matches!(primary, 11 | 26).then(|| db.message().to_string())
}

/// Wall-clock now in unix milliseconds (what every `*_at` column holds).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
