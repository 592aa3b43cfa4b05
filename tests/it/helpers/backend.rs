//! The store's two backends for the tests that must hold on both: [`Backend`] names one,
//! [`Queue`] is where one test's queue lives (a SQLite file in a temp directory, or a fresh
//! database on the PostgreSQL test server) and opens handles on it, and [`both_backends!`]
//! turns one test function into `NAME::sqlite` and `NAME::postgres`. Without
//! `HILI_TEST_DATABASE_URL` the PostgreSQL half returns at once (the skip line is printed
//! once per test binary by `testdb::fresh`).

use std::path::{Path, PathBuf};

use hili::store::{PgStore, Store, StoreError};

/// Which implementation of the store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The node a test's first handle is (PostgreSQL; SQLite has no nodes).
pub(crate) const FIRST: &str = "a";
/// The node a test's second handle is: another process, another workstation.
pub(crate) const SECOND: &str = "b";

/// One test's queue, empty until a handle opens it. Handles opened on it share it: for SQLite
/// they are other processes on the same file, for PostgreSQL other nodes on the same database.
pub(crate) struct Queue {
    /// The temp directory: the SQLite file, or the nodes' state directories, live in it.
    pub dir: tempfile::TempDir,
    at: At,
}

enum At {
    File(PathBuf),
    Database(String),
}

impl Backend {
    /// A place for a new queue, nothing opened yet; `None`: no PostgreSQL test server is
    /// configured (the test returns early).
    pub(crate) async fn place(self) -> Option<Queue> {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = match self {
            Backend::Sqlite => At::File(dir.path().join("state/hili.db")),
            Backend::Postgres => At::Database(hili::store::pg::testdb::fresh().await?),
        };
        Some(Queue { dir, at })
    }

    /// A new queue and the first handle on it (node [`FIRST`]).
    pub(crate) async fn fresh(self) -> Option<(Queue, Store)> {
        let queue = self.place().await?;
        let store = queue.open().await;
        Some((queue, store))
    }
}

impl Queue {
    pub(crate) fn backend(&self) -> Backend {
        match self.at {
            At::File(_) => Backend::Sqlite,
            At::Database(_) => Backend::Postgres,
        }
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        match &self.at {
            At::File(p) => Some(p),
            At::Database(_) => None,
        }
    }

    /// The database URL (`None` on SQLite).
    pub(crate) fn url(&self) -> Option<&str> {
        match &self.at {
            At::File(_) => None,
            At::Database(u) => Some(u),
        }
    }

    /// A handle on this queue. SQLite: `Store::open` on the file (`node` is not used);
    /// PostgreSQL: node `node` on the database, its state directory `dir/node`.
    pub(crate) async fn open_as(&self, node: &str) -> Result<Store, StoreError> {
        match &self.at {
            At::File(path) => Store::open(path).await,
            At::Database(_) => Ok(Store::new(self.pg(node).await?)),
        }
    }

    /// The PostgreSQL store itself, as node `node`, for what only the shared queue has
    /// (heartbeats, nodes). Panics on a SQLite queue.
    pub(crate) async fn pg(&self, node: &str) -> Result<PgStore, StoreError> {
        let url = self.url().expect("a PostgreSQL queue");
        let name = node.parse().expect("a valid node name");
        PgStore::open(url, name, &self.dir.path().join(node)).await
    }

    /// The first handle (node [`FIRST`]).
    pub(crate) async fn open(&self) -> Store {
        self.open_as(FIRST).await.expect("open the test queue")
    }

    /// A second handle on the same queue (node [`SECOND`]), for racing a first one.
    pub(crate) async fn other(&self) -> Store {
        self.open_as(SECOND)
            .await
            .expect("open the test queue again")
    }
}

/// Declares a store test for both backends: `both_backends!(NAME);` above
/// `async fn NAME(backend: Backend) { … }` makes a module `NAME` of two tests, `sqlite` and
/// `postgres`, each calling the function with its backend (a module and a function may share
/// a name, so the tests are `NAME::sqlite` and `NAME::postgres`). The body is an ordinary
/// function, formatted and linted as any other; it opens its queue with
/// `let Some((queue, store)) = backend.fresh().await else { return };`. The runtime may be
/// chosen: `both_backends!(#[tokio::test(flavor = "multi_thread")] NAME);`. An attribute for
/// the PostgreSQL test alone follows the name: `both_backends!(NAME, postgres: #[ignore = "…"]);`.
macro_rules! both_backends {
    ($name:ident $(, postgres: #[$pg:meta])?) => {
        $crate::helpers::backend::both_backends!(#[tokio::test] $name $(, postgres: #[$pg])?);
    };
    (#[$($test:tt)*] $name:ident $(, postgres: #[$pg:meta])?) => {
        mod $name {
            use $crate::helpers::backend::Backend;

            #[$($test)*]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }

            #[$($test)*]
            $(#[$pg])?
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    };
}
pub(crate) use both_backends;
