//! What `hili run` tells Prometheus: the metric families, their names and help, and how each
//! is fed. Requests and their latency come from the API client's hook
//! ([`crate::api::observe::CallObserver`]), limiter waits from the rate limiter, and the queue's
//! figures (jobs by state, the oldest queued job, credits) are read from the store at each
//! scrape. The listener serving them is in [`server`]. Recording is a few atomic operations,
//! so it is always on; only serving is configured (`[metrics] listen`). On a shared queue every
//! series carries the process's `node` label, so one Prometheus tells the fleet's nodes apart.

pub mod server;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::api::error::Endpoint;
use crate::api::observe::{CallObserver, endpoint_name};
use crate::store::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// API latency: 10 ms to about 80 s (uploads of large photos are slow).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Limiter waits: 1 ms to about 65 s (a backlog at 2 requests a second waits long).
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// The figures of one `hili run`, shared by everything that records them.
pub struct Metrics {
    registry: Registry,
    api_requests: Family<CallLabels, Counter>,
    api_latency: Histograms<EndpointLabel>,
    limiter_waits: Histograms<PriorityLabel>,
    jobs: Family<StateLabel, Gauge>,
    oldest_queued: Gauge<f64, AtomicU64>,
    credits_left: Gauge,
    credits_spent: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a process on a queue of its own: no `node` label.
    pub fn new() -> Metrics {
        Metrics::for_node(None)
    }

    /// The metrics of node `node` of a shared queue (`None`: a queue of its own), its name a
    /// `node` label on every series.
    pub fn for_node(node: Option<&str>) -> Metrics {
        let labels = node.map(|n| (Cow::Borrowed("node"), Cow::Owned(n.to_string())));
        let mut m = Metrics {
            registry: Registry::with_prefix_and_labels("hili", labels.into_iter()),
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            limiter_waits: Family::new_with_constructor(wait_histogram),
            jobs: Family::default(),
            oldest_queued: Gauge::default(),
            credits_left: Gauge::default(),
            credits_spent: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "api_requests",
            "API requests sent, by endpoint and outcome (ok, errno_NNNN, timeout, connect...)",
            m.api_requests.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "Time from sending an API request to reading its answer",
            Unit::Seconds,
            m.api_latency.clone(),
        );
        r.register_with_unit(
            "limiter_wait",
            "Time an API call waited for a permit of the rate limiter, by priority",
            Unit::Seconds,
            m.limiter_waits.clone(),
        );
        r.register(
            "jobs",
            "Jobs in the queue by state (held: waiting for a person)",
            m.jobs.clone(),
        );
        r.register_with_unit(
            "oldest_queued_age",
            "Age of the oldest queued job (0 when none is queued)",
            Unit::Seconds,
            m.oldest_queued.clone(),
        );
        r.register(
            "credits_left",
            "Credits left on the account when last seen (-1 before any was seen)",
            m.credits_left.clone(),
        );
        r.register(
            "credits_spent",
            "Credits spent by this process",
            m.credits_spent.clone(),
        );
        m.credits_left.set(-1);
        m
    }

    /// One wait for a permit of the rate limiter.
    pub fn limiter_waited(&self, priority: &'static str, took: Duration) {
        self.limiter_waits
            .get_or_create(&PriorityLabel { priority })
            .observe(took.as_secs_f64());
    }

    /// The queue as the store says now: jobs per state (every state, zeros included), the
    /// oldest queued job's age, the credits last seen.
    pub fn set_queue(
        &self,
        counts: &BTreeMap<State, u64>,
        oldest_queued: Duration,
        credits_left: Option<u64>,
    ) {
        for s in State::ALL {
            let n = counts.get(&s).copied().unwrap_or(0);
            self.jobs
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.oldest_queued.set(oldest_queued.as_secs_f64());
        let left = credits_left.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.credits_left.set(left);
    }

    /// Brings the spent counter up to `spent` (credits spent by this process so far).
    pub fn set_spent(&self, spent: u64) {
        let have = self.credits_spent.get();
        if spent > have {
            self.credits_spent.inc_by(spent - have);
        }
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Only a formatter error, which writing to a String never raises.
            tracing::warn!("could not encode the metrics: {e}");
        }
        out
    }
}

impl CallObserver for Metrics {
    fn request_done(&self, endpoint: Endpoint, outcome: &'static str, took: Duration) {
        let endpoint = endpoint_name(endpoint);
        self.api_requests
            .get_or_create(&CallLabels { endpoint, outcome })
            .inc();
        self.api_latency
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_and_fed() {
        let m = Metrics::new();
        m.request_done(Endpoint::Upload, "ok", Duration::from_millis(30));
        m.request_done(Endpoint::Upload, "errno_9101", Duration::from_millis(5));
        m.limiter_waited("low", Duration::from_millis(2));
        let counts = BTreeMap::from([(State::Done, 3), (State::Held, 1)]);
        m.set_queue(&counts, Duration::from_secs(90), Some(41));
        m.set_spent(3);
        m.set_spent(2);
        let text = m.encode();
        for line in [
            "hili_api_requests_total{endpoint=\"upload\",outcome=\"ok\"} 1",
            "hili_api_requests_total{endpoint=\"upload\",outcome=\"errno_9101\"} 1",
            "hili_api_request_duration_seconds_count{endpoint=\"upload\"} 2",
            "hili_limiter_wait_seconds_count{priority=\"low\"} 1",
            "hili_jobs{state=\"done\"} 3",
            "hili_jobs{state=\"held\"} 1",
            "hili_jobs{state=\"queued\"} 0",
            "hili_oldest_queued_age_seconds 90.0",
            "hili_credits_left 41",
            "hili_credits_spent_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("node="), "{text}");
    }

    #[test]
    fn a_node_of_a_shared_queue_labels_every_series_with_its_name() {
        let m = Metrics::for_node(Some("scan-2"));
        m.request_done(Endpoint::Upload, "ok", Duration::from_millis(30));
        m.set_queue(&BTreeMap::from([(State::Done, 3)]), Duration::ZERO, None);
        let text = m.encode();
        for line in [
            "hili_api_requests_total{node=\"scan-2\",endpoint=\"upload\",outcome=\"ok\"} 1",
            "hili_jobs{node=\"scan-2\",state=\"done\"} 3",
            "hili_credits_left{node=\"scan-2\"} -1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        for l in series {
            assert!(l.contains("node=\"scan-2\""), "{l} has no node label");
        }
    }
}
