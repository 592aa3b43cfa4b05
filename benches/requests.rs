//! What the service's request rate is spent on: 200 photos through the simulator with
//! processing times drawn from 2–12 s and 50 ms added to every answer, at 2 and 10 requests/s,
//! upload concurrency 1 and 4. Prints, from the simulator's ledger: API calls per photo and by
//! endpoint, photos/s as a fraction of `rate / 3` (the most a rate allows at three calls a
//! photo), the peak calls in any one second, and how long a ready result waited for its
//! download call (p50/p95).
//!
//! Run with `cargo bench --bench requests` (about 12 minutes: the rate is the bottleneck on
//! purpose). `HILI_BENCH_PHOTOS` changes the number of photos, `HILI_BENCH_RATES` the rates
//! (e.g. `10`).

#[path = "common/inbox.rs"]
mod inbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hili::api::client::{ApiClient, ClientOptions};
use hili::pipeline::{self, Ctx, Progress, RunOptions, Settings, Snapshot};
use hili::secret::Secret;
use hili::sim::{Faults, SimOptions};
use hili::store::Store;
use tokio_util::sync::CancellationToken;

const THIRD: &str = "bench";
const SECRET: &str = "bench-secret-7d31";

struct NoProgress;
impl Progress for NoProgress {
    fn update(&self, _: &Snapshot) {}
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn one_run(photos: usize, rate: f64, upload_concurrency: usize) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let sim = hili::sim::serve(SimOptions {
        third_code: THIRD.into(),
        secret: SECRET.into(),
        credits: 100_000,
        processing: Duration::from_secs(2),
        processing_up_to: Some(Duration::from_secs(12)),
        faults: Faults {
            slow: 1.0,
            ..Faults::default()
        },
        latency: Duration::from_millis(50),
        seed: 7,
        ..SimOptions::default()
    })
    .await
    .expect("starting the simulator");
    let inbox = dir.path().join("inbox");
    inbox::write_inbox(&inbox, photos);
    let store = Store::open(&dir.path().join("state/hili.db"))
        .await
        .expect("opening the store");
    inbox::queue_inbox(&store, &inbox, &dir.path().join("out")).await;
    let api = ApiClient::new(ClientOptions {
        base_url: sim.base_url(),
        third_code: THIRD.into(),
        secret: Secret::new(SECRET),
        timeout: Duration::from_secs(10),
    })
    .expect("building the client");
    let mut settings = Settings::from_config(&hili::config::Config::default());
    settings.requests_per_second = rate;
    settings.upload_concurrency = upload_concurrency;
    let ctx = Ctx::new(store, api, settings, CancellationToken::new());
    let opts = RunOptions {
        once: true,
        exit_when_blocked: true,
    };
    let t = Instant::now();
    let summary = pipeline::run(ctx.clone(), opts, Arc::new(NoProgress))
        .await
        .expect("the pipeline run failed");
    let wall = t.elapsed().as_secs_f64();
    ctx.store.close().await;
    assert_eq!(summary.done, photos as u64, "{summary:?}");

    let ledger = sim.ledger();
    let calls = ledger.total_api_calls() as f64;
    let mut waited = ledger.ready_to_download_ms.clone();
    waited.sort_unstable();
    println!(
        "requests: {photos} photos at {rate}/s, upload_concurrency={upload_concurrency}: \
         {:.2} calls/photo {:?}, {:.2} photos/s = {:.2} of rate/3, peak {} calls in 1 s, \
         ready -> download p50 {} ms p95 {} ms, {:.0} s",
        calls / photos as f64,
        ledger.api_calls,
        photos as f64 / wall,
        photos as f64 / wall / (rate / 3.0),
        ledger.peak_calls_per_second(),
        percentile(&waited, 0.5),
        percentile(&waited, 0.95),
        wall,
    );
}

fn main() {
    let photos = env_or("HILI_BENCH_PHOTOS", 200usize);
    let rates: Vec<f64> = std::env::var("HILI_BENCH_RATES")
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![2.0, 10.0]);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    for &rate in &rates {
        for uc in [1, 4] {
            rt.block_on(one_run(photos, rate, uc));
        }
    }
}
