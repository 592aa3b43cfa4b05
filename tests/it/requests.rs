//! Integration tests: the service's request rate. Every API call — uploads included — takes
//! its permit from the one limiter, so over any stretch of a run the calls stay within
//! `requests_per_second × duration + burst`. Counted on the simulator's ledger, which stamps
//! each API call on arrival.

use std::time::Duration;

use hili::repair::Repair;
use hili::sim::SimOptions;

use crate::helpers::{Env, fast_sim, write_jpeg};

/// The most calls by which any stretch of `times` (ms) exceeds `rate × its length + burst`,
/// allowing `slack_ms` for the time a request takes from its permit to the simulator (one
/// delayed more than the next would seem to bunch them).
fn worst_excess(times: &[u64], rate: f64, burst: u32, slack_ms: u64) -> f64 {
    let mut worst = f64::MIN;
    for i in 0..times.len() {
        for j in i..times.len() {
            let span_s = (times[j] - times[i] + slack_ms) as f64 / 1000.0;
            let calls = (j - i + 1) as f64;
            worst = worst.max(calls - (rate * span_s + f64::from(burst)));
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_uploads_included_keeps_the_configured_rate() {
    let sim = SimOptions {
        processing: Duration::from_millis(50),
        ..fast_sim()
    };
    let env = Env::new(sim).await;
    for i in 0..8 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    let (rate, burst) = (8.0, 2);
    let mut settings = env.settings();
    settings.requests_per_second = rate;
    settings.burst = burst;
    let summary = tokio::time::timeout(Duration::from_secs(60), env.run_once(settings))
        .await
        .expect("the run took over 60 s");
    assert_eq!(summary.done, 8, "{summary:?}");

    let ledger = env.sim.ledger();
    assert_eq!(
        ledger.api_calls.get("upload"),
        Some(&8),
        "{:?}",
        ledger.api_calls
    );
    let times = &ledger.api_call_ms;
    assert_eq!(times.len() as u64, ledger.total_api_calls());
    let excess = worst_excess(times, rate, burst, 100);
    assert!(
        excess <= 0.0,
        "{excess:.1} call(s) over {rate}/s + burst {burst}; calls {:?} at {times:?} ms",
        ledger.api_calls
    );
}

#[test]
fn the_rate_check_itself_catches_a_burst_over_the_limit() {
    // Four calls at once against burst 2: two too many. Spread at the rate: none.
    assert_eq!(worst_excess(&[0, 0, 0, 0], 1.0, 2, 0), 2.0);
    assert!(worst_excess(&[0, 0, 1000, 2000, 3000], 1.0, 2, 0) <= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_calls_fall_to_about_one_a_photo_once_processing_times_are_learned() {
    // The service takes 400 ms a photo; `poll_interval` is 100 ms (a fixed schedule would ask
    // four or five times a photo). Uploads are paced by the rate so that later photos go up
    // after earlier ones were seen ready: what a long run looks like.
    let sim = SimOptions {
        processing: Duration::from_millis(400),
        ..fast_sim()
    };
    let env = Env::new(sim).await;
    let n = 30;
    for i in 0..n {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    let mut settings = env.settings();
    settings.requests_per_second = 25.0;
    settings.burst = 1;
    let summary = tokio::time::timeout(Duration::from_secs(60), env.run_once(settings))
        .await
        .expect("the run took over 60 s");
    assert_eq!(summary.done, u64::from(n), "{summary:?}");
    let calls = env.sim.ledger().api_calls;
    let status = calls.get("status").copied().unwrap_or(0);
    eprintln!("figure: {status} status calls for {n} photos ({calls:?})");
    assert!(
        status as f64 <= 1.3 * f64::from(n),
        "{status} status calls for {n} photos: {calls:?}"
    );
}
