//! The knobs of a run, taken from the configuration's `[api]`, `[queue]`, `[input]` and `[output]` sections,
//! and the operator's hooks (`[metrics]`, `[notify]`).

use std::time::Duration;

// One type for `queue.on_expired`, the config's: the run reads it as written.
use crate::config::Config;
pub use crate::config::{Metadata, OnExpired, Oversize};
use crate::config::{MetricsConfig, NotifyConfig};

#[derive(Debug, Clone)]
pub struct Settings {
    pub requests_per_second: f64,
    pub burst: u32,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub upload_concurrency: usize,
    pub download_concurrency: usize,
    pub max_attempts: u32,
    pub credits_recheck: Duration,
    pub on_expired: OnExpired,
    pub max_download_bytes: u64,
    pub budget: u64,
    /// Most credits per local day, counted from the store (`[queue] budget_per_day`).
    pub budget_per_day: u64,
    /// Time given to requests in flight after a stop signal.
    pub shutdown_grace: Duration,
    /// Largest photo sent, in bytes (`[input] max_upload_bytes`).
    pub max_upload_bytes: u64,
    /// A side over 6000 px: fail or downscale (`[input] oversize`).
    pub oversize: Oversize,
    /// `[output] metadata`, `strip_gps` and `manifest`.
    pub metadata: Metadata,
    pub strip_gps: bool,
    pub manifest: bool,
    /// First delay of the exponential backoff after a transient failure (tests shorten it).
    pub retry_base: Duration,
    /// `[metrics]`: where to serve `/metrics` while the run lasts.
    pub metrics: MetricsConfig,
    /// `[notify]`: the command told how the run (or a daemon's batch) went.
    pub notify: NotifyConfig,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            requests_per_second: c.api.requests_per_second,
            burst: c.api.burst,
            timeout: c.api.timeout,
            poll_interval: c.api.poll_interval,
            upload_concurrency: c.queue.upload_concurrency,
            download_concurrency: c.queue.download_concurrency,
            max_attempts: c.queue.max_attempts,
            credits_recheck: c.queue.credits_recheck,
            on_expired: c.queue.on_expired,
            max_download_bytes: c.queue.max_download_bytes,
            budget: c.queue.budget,
            budget_per_day: c.queue.budget_per_day,
            shutdown_grace: c.queue.shutdown_grace,
            max_upload_bytes: c.input.max_upload_bytes,
            oversize: c.input.oversize,
            metadata: c.output.metadata,
            strip_gps: c.output.strip_gps,
            manifest: c.output.manifest,
            retry_base: Duration::from_secs(1),
            metrics: c.metrics.clone(),
            notify: c.notify.clone(),
        }
    }
}
