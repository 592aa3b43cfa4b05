//! This process as a node of a shared queue: a heartbeat every [`HEARTBEAT`] that keeps its
//! leases and tells how many nodes are live, from which the node takes its share of the
//! account's request rate ([`ApiGate::set_share`]); and, at the end of the run, signing off so
//! the others take over its paid work at once. On a queue of its own every call here is a
//! no-op of the store's.
//!
//! [`ApiGate::set_share`]: super::gate::ApiGate::set_share

use std::sync::Arc;

use crate::store::pg::HEARTBEAT;

use super::Ctx;

/// Beats until the run is stopped. A beat that fails (the database away) is logged and tried
/// at the next one; the leases then run out after [`crate::store::pg::NODE_TIMEOUT`], and the
/// uploads wait for the database anyway (no intent, no upload).
pub(super) async fn heartbeats(ctx: Arc<Ctx>) {
    if ctx.store.node().is_none() {
        return;
    }
    let mut failing = false;
    loop {
        match ctx.store.heartbeat().await {
            Ok(live) => {
                if failing {
                    tracing::info!("the shared queue answers again");
                    failing = false;
                }
                ctx.gate.set_share(live);
            }
            Err(e) if !failing => {
                tracing::warn!("heartbeat to the shared queue failed: {e}");
                failing = true;
            }
            Err(e) => tracing::debug!("heartbeat to the shared queue failed again: {e}"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Signs this node off at the end of a run (best effort: if the database is away, its leases
/// simply expire).
pub(super) async fn leave(ctx: &Ctx) {
    if ctx.store.node().is_none() {
        return;
    }
    if let Err(e) = ctx.store.leave().await {
        tracing::info!("could not sign off from the shared queue (its leases will expire): {e}");
    }
}
