//! `hili doctor`'s look at a shared queue: the PostgreSQL server answers at the configured URL
//! (shown without its password), hili's tables are there or can be made, and this node's
//! name is not in use by another machine.

use crate::store::{Location, Store, StoreError};

/// One line for `hili doctor`: what was found, or what is wrong and what to do.
pub(super) async fn check(location: &Location) -> Result<String, String> {
    let store = Store::open_at(location).await.map_err(|e| e.to_string())?;
    let found = describe(&store, location).await;
    store.close().await;
    found.map_err(|e| e.to_string())
}

async fn describe(store: &Store, location: &Location) -> Result<String, StoreError> {
    let nodes = store.nodes().await?;
    let me = store.node().map(|n| n.to_string()).unwrap_or_default();
    let here = crate::store::NodeName::from_host();
    if let Some(other) = nodes
        .iter()
        .find(|n| n.name == me && n.live && n.host != here.as_str())
    {
        return Err(StoreError::NodeTaken {
            node: me,
            host: other.host.clone(),
            pid: other.pid,
            ago_s: (crate::store::now_ms() - other.heartbeat_at_ms) / 1000,
        });
    }
    let live = nodes.iter().filter(|n| n.live).count();
    Ok(format!(
        "{} answers; {} node(s) known, {live} live",
        location.shown(),
        nodes.len()
    ))
}
