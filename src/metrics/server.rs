//! The `/metrics` listener of `hili run` (`[metrics] listen`): plain HTTP on the address given,
//! one route, served with axum (already the simulator's). Each scrape first reads the queue's
//! figures from the store, so they are as fresh as the scrape; it stops with the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Shared;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Metrics};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
#[error(
    "could not listen for metrics on {addr}: {source}; free the port or change [metrics] listen \
     in the configuration"
)]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// What a scrape reads besides the recorded metrics.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    /// Credits this process has spent so far.
    pub spent: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// A running listener; [`Served::stop`] ends it.
pub struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Served {
    /// The address actually bound (the port is chosen when `listen` gives port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits for the scrapes in progress to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!("the metrics listener ended abnormally: {e}");
        }
    }
}

/// Binds `addr` and serves `/metrics` until `stop` is cancelled or [`Served::stop`] is called.
pub async fn start(
    addr: SocketAddr,
    sources: Sources,
    stop: CancellationToken,
) -> Result<Served, ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(sources));
    let stop = stop.child_token();
    let until = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(until)
            .await
        {
            tracing::error!("the metrics listener on {bound} failed: {e}");
        }
    });
    tracing::info!("serving metrics on http://{bound}/metrics");
    Ok(Served {
        addr: bound,
        stop,
        task,
    })
}

async fn scrape(Shared(s): Shared<Arc<Sources>>) -> impl IntoResponse {
    refresh(&s).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.metrics.encode())
}

/// Reads the queue's figures into the metrics. A store that cannot be read leaves the last
/// figures (and says so in the log) rather than failing the scrape.
async fn refresh(s: &Sources) {
    s.metrics.set_spent((s.spent)());
    let read = async {
        let counts = s.store.counts().await?;
        let oldest = s.store.oldest_queued().await?;
        let credits = s.store.latest_credits().await?;
        Ok::<_, crate::store::StoreError>((counts, oldest, credits))
    };
    match read.await {
        Ok((counts, oldest, credits)) => {
            let age = oldest.map_or(Duration::ZERO, |j| {
                let ms = crate::store::now_ms().saturating_sub(j.created_at_ms);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            });
            s.metrics.set_queue(&counts, age, credits.map(|(_, n)| n));
        }
        Err(e) => {
            tracing::warn!("metrics: could not read the queue, serving the last figures: {e}")
        }
    }
}
