//! The persistent, crash-safe job queue. This room owns the store's interface (`backend.rs`:
//! the [`JobStore`] trait and the [`Store`] handle the rest of hili holds), the job state
//! machine (`state.rs`) and the decoded rows (`jobs.rs`); and its SQLite implementation,
//! [`SqliteStore`]: every SQL statement, the schema (top-level `migrations/sqlite/`), the append-only
//! `events` audit trail and the credit observations, in the other files. Group commit
//! (`group.rs`, `write.rs`), the connections (`conn.rs`) and the SQL helpers (`sql.rs`) are the
//! SQLite side's alone. The pipeline only calls the interface.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed transition survives a crash or a
//! power cut; every write runs in a `BEGIN IMMEDIATE` transaction, so writers queue on the
//! database lock up front (bounded by `busy_timeout`) instead of failing half-way. Every
//! transition is one guarded `UPDATE … WHERE id=? AND state=?` plus its events row, so two
//! workers can never both move a job (and so never both spend a credit on it).

mod backend;
mod conn;
mod dispose;
mod enqueue;
mod epochs;
mod error;
mod export;
mod group;
mod input_notes;
mod invalid;
mod jobs;
mod location;
mod meta;
mod migrate;
mod note;
pub mod pg;
mod queries;
mod retry;
mod runlock;
mod runs;
mod schedule;
mod spending;
mod sql;
pub mod state;
mod tally;
mod transitions;
mod watch;
mod write;

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

pub use backend::{Committing, FleetGuard, JobStore, Store};
pub use enqueue::{EnqueueOutcome, Known, NewJob};
pub use epochs::{Closing, Epoch, EpochId, Verdict};
pub use error::StoreError;
pub use export::{AGENT, ExportRow, ProvenanceEvent, event_type};
pub use jobs::{Event, Identity, Job, Photo, Stage};
pub use location::Location;
pub use meta::JobFolders;
pub use pg::{NodeInfo, NodeName, PgStore, redact};
pub use runlock::{RunLock, RunLockError};
pub use schedule::{DueLimits, DueWork, Paid};
pub use state::{IllegalTransition, State, check};
pub use tally::RunTally;
pub use transitions::{UploadIntent, Uploaded};

use conn::{Conn, Primary, WriteTx};
use error::SqlContext;
use migrate::{migrate, not_a_database, open_pool};

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

/// The queue in SQLite. Cheap to clone: clones share its two connections.
///
/// Every write of this process runs on ONE connection, and every read on one other (the
/// pool below is only for diagnostics). SQLite serialises writers anyway; one writer keeps its
/// page cache valid across its commits, and a separate reader lets the scheduler look at the
/// queue while a commit waits for the disk (WAL readers do not block on the writer). A pool
/// would also cost a liveness round trip each time sqlx takes a connection back. Other
/// processes (the CLI next to a running daemon) have their own connections and queue on the
/// database lock through busy_timeout.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    primary: Arc<tokio::sync::Mutex<Primary>>,
    /// Reads only; a read sees every transaction committed before it starts.
    reads: Arc<tokio::sync::Mutex<Primary>>,
    /// Guarded writes waiting for the writing connection, committed together (`group.rs`).
    writes: Arc<group::WriteQueue>,
}

impl SqliteStore {
    /// Opens (creating if needed, with mode 0600 and parent directories 0700) the database at
    /// `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |e: std::io::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        private_parent(path).map_err(open_err)?;
        // Create the file ourselves so it is private from its first byte; SQLite gives the
        // -wal and -shm files the same mode. Only when it is missing: closing a descriptor of
        // the database drops every POSIX lock this process holds on it, including those of
        // connections already open here, and a checkpoint by another process that then finds
        // the file unlocked deletes the WAL under them (`disk I/O error`).
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(e)),
        }
        Self::connect(path).await
    }

    /// Opens a database that must already exist (for `status`/`jobs` next to a running
    /// daemon). Errors with [`StoreError::Missing`] instead of creating an empty queue.
    pub async fn open_existing(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::connect(path).await
    }

    async fn connect(path: &Path) -> Result<SqliteStore, StoreError> {
        // Set through the connect options so that EVERY connection has them.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool =
            open_pool(&options, MAX_CONNECTIONS)
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
        migrate(&pool).await.map_err(|source| {
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
        let connection = || async {
            let conn = options.connect().await.map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
            Ok::<_, StoreError>(Arc::new(tokio::sync::Mutex::new(Primary {
                conn: Some(conn),
                open_tx: false,
            })))
        };
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            primary: connection().await?,
            reads: connection().await?,
            writes: Arc::default(),
        })
    }

    /// How many times two or more writes waiting at once were committed together (one wait
    /// for the disk instead of one each), since the store was opened.
    pub fn group_commits(&self) -> u64 {
        self.writes.groups()
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the store's connection and the pool (the last one out checkpoints the WAL),
    /// after committing any write still queued that must not be lost (an upload's answer
    /// whose task was abandoned at shutdown).
    pub async fn close(&self) {
        match self.conn("committing the last queued writes").await {
            Ok(conn) => self.writes.flush(conn).await,
            Err(e) => tracing::debug!("no queued writes to commit: {e}"),
        }
        for shared in [&self.reads, &self.primary] {
            let conn = shared.lock().await.conn.take();
            if let Some(conn) = conn
                && let Err(e) = conn.close().await
            {
                tracing::warn!("closing the queue database {}: {e}", self.path.display());
            }
        }
        self.pool.close().await;
    }

    /// This process's turn on the reading connection, for SELECTs only.
    pub(crate) async fn reader(&self, context: &str) -> Result<Conn, StoreError> {
        Self::turn(&self.reads, context).await
    }

    /// This process's turn on the writing connection, waiting while another task has it.
    /// Rolls back a write transaction that an earlier holder abandoned.
    pub(crate) async fn conn(&self, context: &str) -> Result<Conn, StoreError> {
        Self::turn(&self.primary, context).await
    }

    async fn turn(
        shared: &Arc<tokio::sync::Mutex<Primary>>,
        context: &str,
    ) -> Result<Conn, StoreError> {
        let turn = shared.clone().lock_owned().await;
        if turn.conn.is_none() {
            return Err(StoreError::Sql {
                context: context.to_string(),
                source: sqlx::Error::PoolClosed,
            });
        }
        let mut conn = Conn(turn);
        if conn.tx_open() {
            conn.roll_back()
                .await
                .ctx(format!("rolling back an abandoned transaction ({context})"))?;
        }
        Ok(conn)
    }

    /// Starts a write transaction that takes the database write lock up front.
    pub(crate) async fn begin_write(&self, context: &str) -> Result<WriteTx, StoreError> {
        let mut conn = self.conn(context).await?;
        conn.set_open_tx(true);
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .ctx(format!("starting a write transaction ({context})"))?;
        Ok(WriteTx(conn))
    }
}

/// Creates the directory `path` lives in, and its missing parents, private to this user (0700):
/// the queue database and its run lock live there.
pub(crate) fn private_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent),
        None => Ok(()),
    }
}

/// Wall-clock now in unix milliseconds (what every `*_at` column holds).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("open");
        (dir, store)
    }

    async fn credit_rows(store: &SqliteStore) -> i64 {
        let mut conn = store.conn("test").await.expect("conn");
        sqlx::query_scalar("SELECT COUNT(*) FROM credit_observations")
            .fetch_one(&mut *conn)
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn an_abandoned_write_is_rolled_back_by_the_next_user() {
        let (_dir, store) = store().await;
        let mut tx = store.begin_write("test").await.expect("begin");
        sqlx::query("INSERT INTO credit_observations (at, credits_left) VALUES (1, 5)")
            .execute(&mut *tx)
            .await
            .expect("insert");
        drop(tx); // e.g. the task was cancelled before COMMIT
        assert_eq!(credit_rows(&store).await, 0);
        // The connection is usable for writes again (the lock was released).
        store.record_credits(7).await.expect("a later write");
        assert_eq!(credit_rows(&store).await, 1);
    }

    #[tokio::test]
    async fn a_batch_that_failed_before_its_begin_does_not_poison_the_connection() {
        let (_dir, store) = store().await;
        let mut conn = store.conn("test").await.expect("conn");
        conn.set_open_tx(true); // as if BEGIN IMMEDIATE had failed on a busy lock
        drop(conn);
        store.record_credits(3).await.expect("the next write works");
        assert_eq!(
            store.latest_credits().await.expect("read").map(|c| c.1),
            Some(3)
        );
    }

    /// The settings of the store's own connection as `(journal_mode, synchronous,
    /// foreign_keys, busy_timeout_ms)`.
    async fn connection_settings(
        store: &SqliteStore,
    ) -> Result<(String, i64, i64, i64), StoreError> {
        let ctx = "reading the connection settings";
        let mut conn = store.conn(ctx).await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .ctx(ctx)?;
        let mut ints = [0i64; 3];
        for (i, p) in ["synchronous", "foreign_keys", "busy_timeout"]
            .iter()
            .enumerate()
        {
            ints[i] = sqlx::query_scalar(&format!("PRAGMA {p}"))
                .fetch_one(&mut *conn)
                .await
                .ctx(ctx)?;
        }
        Ok((journal, ints[0], ints[1], ints[2]))
    }

    #[tokio::test]
    async fn open_creates_a_private_file_and_sets_pragmas_on_every_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state/hili.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        store.record_credits(1).await.unwrap();
        assert_eq!(mode(&dir.path().join("state/hili.db-wal")), 0o600);
        // The connection the store itself runs every statement on (2 = FULL).
        assert_eq!(
            connection_settings(&store).await.unwrap(),
            ("wal".to_string(), 2, 1, 30_000)
        );
        // Hold several connections at once so the pool must open distinct ones.
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(store.pool.acquire().await.unwrap());
        }
        for c in conns.iter_mut() {
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            let jm: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            let bt: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            assert_eq!((sync, fk, jm.as_str()), (2, 1, "wal"));
            assert!(bt >= 10_000, "busy_timeout {bt}");
        }
    }
}
