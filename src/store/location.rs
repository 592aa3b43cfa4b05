//! Where a queue lives: a SQLite file on this machine (the default, one workstation), or a
//! shared queue on PostgreSQL that several nodes (workstations on one account) work together.
//! Opening either gives the same [`Store`] handle.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{NodeName, PgStore, SqliteStore, Store, StoreError};

/// A queue's place, as the configuration names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A shared queue: the database URL, this process's node name, and this machine's state
    /// directory (where node-local files such as converted inputs go).
    Postgres {
        url: String,
        node: NodeName,
        local_dir: PathBuf,
    },
}

impl Location {
    /// Whether `database` names a PostgreSQL database rather than a file.
    pub fn is_postgres_url(database: &str) -> bool {
        database.starts_with("postgres://") || database.starts_with("postgresql://")
    }

    /// How messages name the queue (a file's path, or the URL without its password).
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres { url, node, .. } => {
                format!("{} (node {node})", super::redact(url))
            }
        }
    }

    /// The SQLite file, if the queue is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres { .. } => None,
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL as given: it may carry a password.
        f.write_str(&self.shown())
    }
}

impl Store {
    /// Opens the queue, creating a SQLite file if missing (a shared queue's database must
    /// exist: its server's administrator creates it; hili creates its tables).
    pub async fn open_at(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Ok(Store::new(SqliteStore::open(path).await?)),
            Location::Postgres {
                url,
                node,
                local_dir,
            } => Self::open_shared(url, node, local_dir).await,
        }
    }

    /// Opens a queue that must already exist (a SQLite file is not created).
    pub async fn open_existing_at(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Ok(Store::new(SqliteStore::open_existing(path).await?)),
            Location::Postgres {
                url,
                node,
                local_dir,
            } => Self::open_shared(url, node, local_dir).await,
        }
    }

    async fn open_shared(
        url: &str,
        node: &NodeName,
        local_dir: &Path,
    ) -> Result<Store, StoreError> {
        Ok(Store::new(
            PgStore::open(url, node.clone(), local_dir).await?,
        ))
    }
}
