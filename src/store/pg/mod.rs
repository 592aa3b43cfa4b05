//! The shared queue on PostgreSQL ([`PgStore`]): the same [`JobStore`](super::JobStore)
//! operations and state machine as the SQLite queue, for a fleet of nodes (workstations) on
//! one account. This module owns the connection pool, the schema (top-level
//! `migrations/postgres/`), the node's identity on every connection, and answers committed in
//! the background (`answers.rs`); the operations live in the files beside it, one per concern,
//! mirroring the SQLite side's. Durability is PostgreSQL's: a transaction returns once its
//! commit is flushed (`synchronous_commit` on, the server's default), and every transition is
//! one guarded `UPDATE … WHERE id = $1 AND state = $2` plus its events row in one transaction,
//! so two nodes can never both move a job.

mod answers;
mod enqueue;
mod enqueue_notes;
#[cfg(test)]
mod enqueue_tests;
mod epochs;
mod export;
mod fleet;
mod queries;
mod queries_meta;
mod schedule;
mod sources;
#[doc(hidden)]
pub mod testdb;
mod transitions;
mod transitions_write;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub use fleet::{HEARTBEAT, NODE_TIMEOUT};

use super::StoreError;
use super::error::SqlContext;

pub use fleet::{NodeInfo, NodeName};

/// How long closing the store waits for upload answers the database does not take.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Connections per node: the workers' transactions are short, and a lab's server serves a few
/// nodes plus the CLI next to each.
const MAX_CONNECTIONS: u32 = 8;
/// How long a statement waits for a connection (and so, when the server is down, how soon an
/// operation reports it instead of hanging).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue in PostgreSQL, as one node sees it. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    shown: Arc<str>,
    node: NodeName,
    /// This machine's state directory (converted copies of inputs live under it).
    local_dir: PathBuf,
    answers: Arc<answers::Answers>,
    /// The watch folders marked `shared` (the same path on every node): their jobs are any
    /// node's.
    shared: Arc<std::sync::RwLock<Vec<PathBuf>>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL as given: it may carry the password.
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the shared queue at `url` as node `node`, applying pending migrations
    /// (PostgreSQL's migrator takes a lock, so nodes starting at once apply them once).
    /// `local_dir` is this machine's state directory.
    pub async fn open(url: &str, node: NodeName, local_dir: &Path) -> Result<PgStore, StoreError> {
        let shown: Arc<str> = redact(url).into();
        let unreachable = |source: sqlx::Error| StoreError::Unreachable {
            database: shown.to_string(),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unreachable {
            database: shown.to_string(),
            source: e,
        })?;
        // One connection first: its error says why (refused, unknown host, bad password),
        // where the pool's would only say it timed out.
        sqlx::Connection::close(
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .map_err(unreachable)?,
        )
        .await
        .map_err(unreachable)?;
        let name = node.to_string();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let name = name.clone();
                Box::pin(async move {
                    // Every events row this connection writes names the node (the column's
                    // default), and PostgreSQL's own views show which node a session is.
                    // The server probes an idle connection after 10 s and gives up after three
                    // unanswered probes: a node whose machine vanished (power cut, cable)
                    // loses its place in the credit barrier within about 25 s, not hours.
                    sqlx::query(
                        "SELECT set_config('hili.node', $1, false), \
                         set_config('application_name', 'hili ' || $1, false), \
                         set_config('tcp_keepalives_idle', '10', false), \
                         set_config('tcp_keepalives_interval', '5', false), \
                         set_config('tcp_keepalives_count', '3', false)",
                    )
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::MigrateShared {
                database: shown.to_string(),
                source,
            })?;
        Ok(PgStore {
            pool,
            shown,
            node,
            local_dir: local_dir.to_path_buf(),
            answers: Arc::default(),
            shared: Arc::default(),
        })
    }

    /// This process's node name.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Names the shared folders (see [`PgStore::owner_of`]); replaces the earlier list.
    pub fn share_roots(&self, roots: Vec<PathBuf>) {
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = roots;
    }

    /// The node a job under `source_root` belongs to: this one, or none (any node) when the
    /// root is a shared folder or inside one.
    pub(crate) fn owner_of(&self, source_root: &Path) -> Option<String> {
        let shared = self.shared.read().unwrap_or_else(|p| p.into_inner());
        match shared.iter().any(|r| source_root.starts_with(r)) {
            true => None,
            false => Some(self.node.to_string()),
        }
    }

    /// The database as messages name it (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Where this node keeps the converted copies of its inputs (on this machine).
    pub fn converted_dir(&self) -> PathBuf {
        self.local_file("converted")
    }

    /// `hili-<name>` in this node's local folder: a file of its own on this machine.
    pub fn local_file(&self, name: &str) -> PathBuf {
        self.local_dir.join(format!("hili-{name}"))
    }

    /// Waits (at most [`CLOSE_WAIT`]) for the answers still being committed, then closes the
    /// pool. An answer the database still refuses then is named in the log with its photo id;
    /// the next start reconciles its job by the credit count, like any lost answer.
    pub async fn close(&self) {
        if tokio::time::timeout(CLOSE_WAIT, self.answers.drain())
            .await
            .is_err()
        {
            tracing::error!(
                "the shared queue {} did not take every upload answer within {CLOSE_WAIT:?} of \
                 stopping (see the warnings above for their jobs and photo ids); the next start \
                 reconciles those jobs by the credit count",
                self.shown
            );
        }
        self.pool.close().await;
    }

    /// A transaction (READ COMMITTED, PostgreSQL's default): its guarded UPDATEs see the
    /// newest committed row, and a row another transaction is changing waits for it.
    pub(crate) async fn begin(
        &self,
        context: &str,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool
            .begin()
            .await
            .ctx(format!("starting a transaction ({context})"))
    }

    /// The pool, for single statements.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs one statement that needs no result (tests and maintenance).
    #[cfg(test)]
    pub(crate) async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::Executor::execute(&self.pool, sql)
            .await
            .ctx(sql.to_string())?;
        Ok(())
    }
}

/// `url` without its password: `postgres://hili:secret@nas/hili` → `postgres://hili:***@nas/hili`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Cannot fail on a URL that has a password (it has a host).
                let _ = u.set_password(Some("***"));
            }
            // A password may also come as a query parameter.
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "(a database URL that does not parse)".into(),
    }
}

/// A store on a fresh test database as node `node` (`None`: no test server; see [`testdb`]).
#[cfg(test)]
pub(crate) async fn test_store(node: &str) -> Option<(PgStore, tempfile::TempDir)> {
    let url = testdb::fresh().await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node.parse().expect("node name");
    Some((
        PgStore::open(&url, node, dir.path()).await.expect("open"),
        dir,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_and_lists_its_node_live_then_gone() {
        let Some((store, dir)) = test_store("scan-1").await else {
            return;
        };
        assert_eq!(store.heartbeat().await.unwrap(), 1);
        let nodes = store.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name, "scan-1");
        assert!(nodes[0].live);
        store.leave().await.unwrap();
        assert!(!store.nodes().await.unwrap()[0].live);
        assert!(store.converted_dir().starts_with(dir.path()));
        assert!(format!("{store:?}").contains("scan-1"));
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://hili:s3cret@nas:5432/hili"),
            "postgres://hili:***@nas:5432/hili"
        );
        assert_eq!(
            redact("postgres://nas/hili?user=hili&password=s3cret"),
            "postgres://nas/hili?user=hili&password=***"
        );
        assert!(!redact("postgres://hili:s3cret@").contains("s3cret"));
        assert!(!redact("not a url s3cret").contains("s3cret"));
    }
}
