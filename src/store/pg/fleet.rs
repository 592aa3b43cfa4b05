//! The nodes of a shared queue: each process's name, its heartbeat (which also renews the
//! leases on the jobs it works), and the list `hili nodes` and `hili status` show. A node is
//! live while its heartbeat is younger than [`NODE_TIMEOUT`]; after that its leases have
//! expired and the other nodes take over its work (see `schedule.rs`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;

use super::PgStore;
use crate::store::error::SqlContext;
use crate::store::{FleetGuard, StoreError, now_ms};

/// How often a node says it is alive (and renews its leases).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long after its last heartbeat a node counts as dead and its leases as expired: several
/// heartbeats, so one slow commit does not hand a live node's work to another.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// A gap between two heartbeats longer than this breaks a node's steady run
/// (`nodes.beating_since` starts again): it was cut off, if only for a moment, and must renew
/// its own leases before it takes over anyone else's (see the store's schedule).
const BEAT_MISSED: Duration = Duration::from_secs(6);

/// A node's name: `[queue] node`, by default the host name. Letters, digits, `.`, `-`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// This machine's host name, as a node name (`localhost` if it has none that fits).
    pub fn from_host() -> NodeName {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let name = if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        };
        name.parse()
            .unwrap_or_else(|_| NodeName("localhost".into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(NodeName(s.to_string()))
        } else {
            Err(format!(
                "node name {s:?} must be 1 to 63 letters, digits, '.', '-' or '_'"
            ))
        }
    }
}

/// One node as `hili nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// When it stopped cleanly (`None` while it runs, or when it died).
    pub stopped_at_ms: Option<i64>,
    /// Live: running, with a fresh heartbeat.
    pub live: bool,
    /// Jobs it holds a lease on now.
    pub leases: u64,
    /// Its own jobs (those naming its paths), by state.
    pub jobs: std::collections::BTreeMap<String, u64>,
}

impl PgStore {
    /// Says this node is alive and renews the leases it holds; registers it on first call.
    /// Returns how many nodes are live now (this one included), for the rate share.
    pub async fn heartbeat(&self) -> Result<usize, StoreError> {
        let context = format!("renewing node {}'s heartbeat", self.node);
        let now = now_ms();
        let mut tx = self.begin(&context).await?;
        sqlx::query(
            "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, stopped_at, \
             beating_since) VALUES ($1, $2, $3, $4, $5, $5, NULL, $5) \
             ON CONFLICT (name) DO UPDATE SET heartbeat_at = $5, host = $2, pid = $3, \
             version = $4, stopped_at = NULL, \
             started_at = CASE WHEN nodes.pid = $3 AND nodes.stopped_at IS NULL \
                               THEN nodes.started_at ELSE $5 END, \
             beating_since = CASE WHEN nodes.pid = $3 AND nodes.stopped_at IS NULL \
                                  AND nodes.heartbeat_at > $5 - $6 \
                               THEN nodes.beating_since ELSE $5 END",
        )
        .bind(self.node.as_str())
        .bind(NodeName::from_host().as_str())
        .bind(i64::from(std::process::id()))
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(now)
        .bind(BEAT_MISSED.as_millis() as i64)
        .execute(&mut *tx)
        .await
        .ctx(&context)?;
        // Leases on the jobs it works; a queued job's lease (taken when it was due) is not
        // renewed, so one this node does not upload soon goes back to the others.
        sqlx::query(
            "UPDATE jobs SET lease_until = $2 WHERE lease_node = $1 \
             AND state IN ('uploading', 'processing', 'downloading')",
        )
        .bind(self.node.as_str())
        .bind(now + lease_ms())
        .execute(&mut *tx)
        .await
        .ctx(&context)?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > $1",
        )
        .bind(now - lease_ms())
        .fetch_one(&mut *tx)
        .await
        .ctx(&context)?;
        tx.commit().await.ctx(&context)?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Joins the fleet as this node: refused while another machine runs under the same name
    /// (two workstations taking each other's files for their own). The same machine is the
    /// run lock's to refuse; its own earlier process, killed, left a heartbeat that means
    /// nothing now.
    pub async fn join(&self) -> Result<usize, StoreError> {
        let context = format!("joining the shared queue as node {}", self.node);
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT host, pid, heartbeat_at FROM nodes \
             WHERE name = $1 AND stopped_at IS NULL AND heartbeat_at > $2",
        )
        .bind(self.node.as_str())
        .bind(now_ms() - lease_ms())
        .fetch_optional(self.pool())
        .await
        .ctx(&context)?;
        if let Some((host, pid, at)) = row
            && host != NodeName::from_host().as_str()
        {
            return Err(StoreError::NodeTaken {
                node: self.node.to_string(),
                host,
                pid,
                ago_s: (now_ms() - at) / 1000,
            });
        }
        self.heartbeat().await
    }

    /// Records that this node stopped cleanly and gives up its leases at once (so another
    /// node may take its polls and downloads without waiting for them to expire).
    pub async fn leave(&self) -> Result<(), StoreError> {
        let context = format!("signing node {} off", self.node);
        let mut tx = self.begin(&context).await?;
        sqlx::query("UPDATE nodes SET stopped_at = $2 WHERE name = $1")
            .bind(self.node.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .ctx(&context)?;
        // An upload in flight keeps its lease: its answer is unknown, so it is reconciled
        // (by this node at its next start, or by another once the lease expires).
        sqlx::query(
            "UPDATE jobs SET lease_node = NULL, lease_until = NULL \
             WHERE lease_node = $1 AND state != 'uploading'",
        )
        .bind(self.node.as_str())
        .execute(&mut *tx)
        .await
        .ctx(&context)?;
        tx.commit().await.ctx(&context)
    }

    /// Every node that ever ran on this queue, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let context = "listing the shared queue's nodes";
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT n.name, n.host, n.pid, n.version, n.started_at, n.heartbeat_at, \
             n.stopped_at, (SELECT COUNT(*) FROM jobs j WHERE j.lease_node = n.name \
             AND j.lease_until > $1) AS leases FROM nodes n ORDER BY n.name",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        let counts = sqlx::query(
            "SELECT node, state, COUNT(*) AS n FROM jobs WHERE node IS NOT NULL \
             GROUP BY node, state",
        )
        .fetch_all(self.pool())
        .await
        .ctx(context)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let name: String = r.try_get("name").ctx(context)?;
            let heartbeat: i64 = r.try_get("heartbeat_at").ctx(context)?;
            let stopped: Option<i64> = r.try_get("stopped_at").ctx(context)?;
            let mut jobs = std::collections::BTreeMap::new();
            for c in &counts {
                let node: String = c.try_get("node").ctx(context)?;
                if node == name {
                    let n: i64 = c.try_get("n").ctx(context)?;
                    jobs.insert(c.try_get("state").ctx(context)?, n.max(0) as u64);
                }
            }
            let leases: i64 = r.try_get("leases").ctx(context)?;
            out.push(NodeInfo {
                live: stopped.is_none() && heartbeat > now - lease_ms(),
                host: r.try_get("host").ctx(context)?,
                pid: r.try_get("pid").ctx(context)?,
                version: r.try_get("version").ctx(context)?,
                started_at_ms: r.try_get("started_at").ctx(context)?,
                heartbeat_at_ms: heartbeat,
                stopped_at_ms: stopped,
                leases: leases.max(0) as u64,
                jobs,
                name,
            });
        }
        Ok(out)
    }
}

/// The advisory lock key of the fleet's credit barrier ("hili" and 1).
const EPOCH_BARRIER: i64 = 0x6869_6c69_0001;

impl PgStore {
    /// A place in the fleet's credit barrier: `pg_advisory_lock_shared` (an upload in flight)
    /// or `pg_advisory_lock` (closing an epoch: waits for every node's uploads in flight, and
    /// PostgreSQL queues new shared requests behind it). Held on a connection of its own,
    /// taken out of the pool: dropping the guard closes it, and the server releases the lock —
    /// as it does when the node dies (its connections drop; a machine that vanishes is noticed
    /// by TCP keepalives, see `mod.rs`).
    pub async fn barrier(&self, exclusive: bool) -> Result<FleetGuard, StoreError> {
        let context = "taking a place in the shared queue's credit barrier";
        let mut conn = self.pool().acquire().await.ctx(context)?.detach();
        let sql = match exclusive {
            true => "SELECT pg_advisory_lock($1)",
            false => "SELECT pg_advisory_lock_shared($1)",
        };
        sqlx::query(sql)
            .bind(EPOCH_BARRIER)
            .execute(&mut conn)
            .await
            .ctx(context)?;
        Ok(FleetGuard(Box::new(std::sync::Mutex::new(conn))))
    }
}

/// A lease's length: a node's leases expire when it has missed heartbeats for this long.
pub(super) fn lease_ms() -> i64 {
    NODE_TIMEOUT.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::pg::{PgStore, testdb};

    /// Two nodes on one fresh database.
    async fn two_nodes() -> Option<(PgStore, PgStore, tempfile::TempDir)> {
        let url = testdb::fresh().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |n: &str| PgStore::open(&url, n.parse().expect("name"), dir.path());
        let (a, b) = (open("a").await.expect("a"), open("b").await.expect("b"));
        Some((a, b, dir))
    }

    /// Whether `f` is still waiting after a moment.
    async fn waits<T>(f: &mut (impl std::future::Future<Output = T> + Unpin)) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(300), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn closing_an_epoch_waits_for_every_nodes_uploads_and_holds_new_ones_back() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let upload_on_a = a.barrier(false).await.expect("shared");
        let mut close_on_b = Box::pin(b.barrier(true));
        assert!(
            waits(&mut close_on_b).await,
            "b waits for a's upload in flight"
        );
        // A new upload anywhere queues behind the waiting close (no starving it).
        let mut next_upload = Box::pin(a.barrier(false));
        assert!(waits(&mut next_upload).await);
        drop(upload_on_a);
        let closing = tokio::time::timeout(std::time::Duration::from_secs(5), close_on_b)
            .await
            .expect("the close goes once a's upload ended")
            .expect("exclusive");
        assert!(waits(&mut next_upload).await, "held back while b closes");
        drop(closing);
        tokio::time::timeout(std::time::Duration::from_secs(5), next_upload)
            .await
            .expect("admitted once the close is done")
            .expect("shared");
    }

    #[tokio::test]
    async fn a_node_that_dies_gives_its_place_back() {
        let Some((a, b, _dir)) = two_nodes().await else {
            return;
        };
        let upload_on_a = a.barrier(false).await.expect("shared");
        // The node's process dies: its connections close (here, the pool's and the guard's).
        a.pool().close().await;
        drop(upload_on_a);
        tokio::time::timeout(std::time::Duration::from_secs(5), b.barrier(true))
            .await
            .expect("b closes the epoch without waiting for the dead node")
            .expect("exclusive");
    }

    #[tokio::test]
    async fn another_machine_under_the_same_name_is_refused_a_restart_here_is_not() {
        let Some((a, _b, _dir)) = two_nodes().await else {
            return;
        };
        assert_eq!(a.join().await.expect("first join"), 1);
        // The same machine again (a killed process restarting at once): fine.
        a.join().await.expect("rejoin from this machine");
        sqlx::query("UPDATE nodes SET host = 'scan-station-2', pid = 4242 WHERE name = 'a'")
            .execute(a.pool())
            .await
            .expect("update");
        match a.join().await {
            Err(StoreError::NodeTaken {
                node, host, pid, ..
            }) => {
                assert_eq!(
                    (node.as_str(), host.as_str(), pid),
                    ("a", "scan-station-2", 4242)
                );
            }
            other => panic!("{other:?}"),
        }
        // Silent for longer than a lease: that machine is gone, the name is free.
        sqlx::query("UPDATE nodes SET heartbeat_at = heartbeat_at - 60000 WHERE name = 'a'")
            .execute(a.pool())
            .await
            .expect("update");
        a.join().await.expect("a dead node's name is free");
    }

    #[test]
    fn node_names_are_plain() {
        assert!("scan-2.lab_a".parse::<NodeName>().is_ok());
        for bad in ["", "a b", "x/y", "é", &"n".repeat(64)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?}");
        }
        assert!(!NodeName::from_host().as_str().is_empty());
    }
}
