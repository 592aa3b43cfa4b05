//! Where the queue lives, from `[queue] database` and `[queue] node`: a SQLite file (a path, or
//! the default in the state directory) or a shared queue on PostgreSQL (a `postgres://` URL),
//! as the store's [`Location`]. The URL may carry a password, so [`Database`] never shows it.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, Env};
use crate::store::{Location, NodeName};

/// `[queue] database`: a file path or a PostgreSQL URL, kept as written.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Database(PathBuf);

impl Database {
    pub fn new(p: impl Into<PathBuf>) -> Database {
        Database(p.into())
    }

    /// The URL, when the setting names a PostgreSQL database.
    pub fn postgres_url(&self) -> Option<&str> {
        self.0.to_str().filter(|s| Location::is_postgres_url(s))
    }
}

impl Deref for Database {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.postgres_url() {
            Some(url) => write!(f, "{:?}", crate::store::redact(url)),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl Config {
    /// The queue's place: see the module documentation.
    pub fn queue_location(&self) -> Result<Location, ConfigError> {
        self.queue_location_in(&Env::from_process())
    }

    pub fn queue_location_in(&self, env: &Env) -> Result<Location, ConfigError> {
        let node = match &self.queue.node {
            Some(n) => n
                .parse::<NodeName>()
                .map_err(|problem| ConfigError::Invalid {
                    where_: "the configuration".into(),
                    key: "queue.node",
                    problem,
                })?,
            None => NodeName::from_host(),
        };
        match self.queue.database.as_ref().and_then(|d| d.postgres_url()) {
            Some(url) => {
                // Node-local files (converted inputs, thumbnails) go where a queue of this
                // machine's own would be.
                let mut local = self.clone();
                local.queue.database = None;
                let default_db = local.database_path_in(env);
                let local_dir = default_db
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                Ok(Location::Postgres {
                    url: url.to_string(),
                    node,
                    local_dir,
                })
            }
            None => Ok(Location::Sqlite(self.database_path_in(env))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).expect("parses")
    }

    #[test]
    fn a_postgres_url_selects_the_shared_queue_and_never_shows_its_password() {
        let c =
            parse("[queue]\ndatabase = \"postgres://hili:s3cret@nas/hili\"\nnode = \"scan-2\"\n");
        let env = Env::default();
        match c.queue_location_in(&env).unwrap() {
            Location::Postgres { url, node, .. } => {
                assert_eq!(url, "postgres://hili:s3cret@nas/hili");
                assert_eq!(node.as_str(), "scan-2");
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{c:?} {:?}", c.queue_location_in(&env).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("nas"), "{shown}");
    }

    #[test]
    fn a_path_stays_a_file_and_a_bad_node_is_refused_by_name() {
        let c = parse("[queue]\ndatabase = \"/var/lib/hili/hili.db\"\n");
        assert_eq!(
            c.queue_location_in(&Env::default()).unwrap(),
            Location::Sqlite("/var/lib/hili/hili.db".into())
        );
        // Refused when the file is read, before anything opens the queue.
        let bad = "[queue]\ndatabase = \"postgres://nas/hili\"\nnode = \"scan 2\"\n";
        let err = Config::parse(bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml: queue.node"), "{err}");
    }
}
