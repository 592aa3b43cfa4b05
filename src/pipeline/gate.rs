//! The one API rate limiter, with priorities. Every API call (upload, status, download, nums)
//! passes through [`ApiGate::acquire`]; polls and downloads ask with [`Priority::High`] and are
//! always served before uploads, so a backlog of uploads can never make a paid result wait
//! past its one-hour expiry. Result GETs go to the result host and are not API calls. Each
//! wait is recorded in the metrics when the gate has them.
//!
//! Uploads are also paced at a third of the rate: a photo costs at least three calls (upload,
//! status, download), so no run can process more than `rate / 3` photos a second, and uploads
//! sent faster than that only come back as a burst of status and download calls later, queued
//! behind each other: results fetched many seconds after they were ready (the request bench:
//! 13 s at the median, unpaced, against 5 s).
//!
//! On a shared queue the account's rate is the fleet's: each node takes `rate ÷ live nodes`
//! ([`ApiGate::set_share`], from the heartbeats), and the limiters are replaced when that
//! number changes.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Polls, downloads and credit reconciliation: time-critical.
    High,
    /// Uploads and the credit check that precedes them.
    Low,
}

/// A cheap handle to the dispatcher task that hands out rate-limited permits.
#[derive(Clone)]
pub struct ApiGate {
    high: mpsc::UnboundedSender<oneshot::Sender<()>>,
    low: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// The limiters in force: every call's, and low-priority calls' own pace
    /// ([`CALLS_PER_PHOTO`] times slower than the rate).
    limiters: Arc<watch::Sender<Limiters>>,
    /// The account's rate and burst, and how many nodes share it now.
    account: (f64, u32),
    share: Arc<std::sync::atomic::AtomicUsize>,
    /// Where each wait is recorded, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

/// The fewest API calls a photo costs: its upload, one status call, its download.
const CALLS_PER_PHOTO: f64 = 3.0;

/// Every call's limiter, and the uploads' pace.
#[derive(Clone)]
struct Limiters {
    all: Arc<DefaultDirectRateLimiter>,
    paced: Arc<DefaultDirectRateLimiter>,
}

impl Limiters {
    fn new(per_second: f64, burst: u32) -> Limiters {
        Limiters {
            all: rate_limiter(per_second, burst),
            paced: rate_limiter(per_second / CALLS_PER_PHOTO, 1),
        }
    }
}

fn rate_limiter(per_second: f64, burst: u32) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    Arc::new(RateLimiter::direct(quota))
}

impl ApiGate {
    /// Starts the dispatcher: `requests_per_second` sustained, `burst` at once. The task ends
    /// when every handle is dropped.
    pub fn new(requests_per_second: f64, burst: u32) -> ApiGate {
        let (limiters, in_force) = watch::channel(Limiters::new(requests_per_second, burst));
        let (high, high_rx) = mpsc::unbounded_channel();
        let (low, low_rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(in_force, high_rx, low_rx));
        ApiGate {
            high,
            low,
            limiters: Arc::new(limiters),
            account: (requests_per_second, burst),
            share: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
            metrics: None,
        }
    }

    /// Takes `1 / nodes` of the account's rate and burst (at least one call at once), from
    /// now on; nothing changes when the number is the same.
    pub fn set_share(&self, nodes: usize) {
        let nodes = nodes.max(1);
        if self.share.swap(nodes, std::sync::atomic::Ordering::SeqCst) == nodes {
            return;
        }
        let (rate, burst) = self.account;
        let burst = (burst as usize / nodes).max(1) as u32;
        self.limiters
            .send_replace(Limiters::new(rate / nodes as f64, burst));
        tracing::info!(
            "{nodes} node(s) share the account: this one now makes at most {:.2} requests a second",
            rate / nodes as f64
        );
    }

    /// How many nodes share the account's rate now.
    pub fn share(&self) -> usize {
        self.share.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records every wait for a permit in `metrics`.
    pub fn observed(mut self, metrics: Arc<Metrics>) -> ApiGate {
        self.metrics = Some(metrics);
        self
    }

    /// Waits for a permit to make one API call.
    pub async fn acquire(&self, priority: Priority) {
        let asked = Instant::now();
        let (tx, rx) = oneshot::channel();
        let (queue, name) = match priority {
            Priority::High => (&self.high, "high"),
            Priority::Low => {
                let paced = self.limiters.borrow().paced.clone();
                paced.until_ready().await;
                (&self.low, "low")
            }
        };
        if queue.send(tx).is_ok() {
            // The dispatcher only stops when every handle is gone, which cannot be while we
            // hold `self`; a closed channel would just mean "go ahead".
            let _ = rx.await;
        }
        if let Some(m) = &self.metrics {
            m.limiter_waited(name, asked.elapsed());
        }
    }
}

type Waiter = oneshot::Sender<()>;

async fn dispatch(
    limiters: watch::Receiver<Limiters>,
    mut high: mpsc::UnboundedReceiver<Waiter>,
    mut low: mpsc::UnboundedReceiver<Waiter>,
) {
    // Low-priority waiters that were passed over while a high one went first keep their place.
    let mut deferred: VecDeque<Waiter> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(w) => (Priority::Low, w),
            None => tokio::select! {
                biased;
                Some(w) = high.recv() => (Priority::High, w),
                Some(w) = low.recv() => (Priority::Low, w),
                else => return,
            },
        };
        let limiter = limiters.borrow().all.clone();
        limiter.until_ready().await;
        let chosen = match first {
            (Priority::Low, w) => match high.try_recv() {
                Ok(h) => {
                    deferred.push_front(w);
                    h
                }
                Err(_) => w,
            },
            (Priority::High, w) => w,
        };
        // A waiter that gave up (cancelled) wastes its permit; that only slows us down.
        let _ = chosen.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn high_priority_overtakes_a_backlog_of_low() {
        // 20 permits/s, burst 1: each permit is 50 ms apart, so order is observable.
        let gate = ApiGate::new(20.0, 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                g.acquire(Priority::Low).await;
                o.lock().unwrap().push(format!("low{i}"));
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (g, o) = (gate.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            g.acquire(Priority::High).await;
            o.lock().unwrap().push("high".to_string());
        }));
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
        let order = order.lock().unwrap().clone();
        let pos = order.iter().position(|s| s == "high").unwrap();
        assert!(pos <= 3, "high waited behind the backlog: {order:?}");
        assert_eq!(order.len(), 7);
    }

    #[tokio::test]
    async fn rate_is_respected() {
        let gate = ApiGate::new(50.0, 2);
        let start = std::time::Instant::now();
        for _ in 0..12 {
            gate.acquire(Priority::High).await;
        }
        // 2 at once, then 10 more at 20 ms each: at least ~200 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(180),
            "{:?}",
            start.elapsed()
        );
    }
}
