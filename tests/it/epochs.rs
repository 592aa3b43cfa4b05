//! Integration tests: credit accounting by epochs against the simulator's ledger. The credits
//! are read once an epoch, not before every upload; with several uploads in flight, an answer
//! lost without a charge is uploaded again rather than held; credits spent by someone else are
//! counted, not mistaken for hili's.

use std::time::Duration;

use hili::pipeline::Summary;
use hili::repair::Repair;
use hili::sim::{Faults, SimOptions};
use hili::store::State;

use crate::helpers::{Env, fast_sim, write_jpeg};

fn photos(env: &Env, n: u32, from: u32) {
    for i in from..from + n {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credits_are_read_once_an_epoch_not_before_every_upload() {
    let env = Env::new(fast_sim()).await;
    photos(&env, 10, 0);
    env.add(Repair::Sr, None).await;
    let summary = tokio::time::timeout(Duration::from_secs(60), env.run_once(env.settings()))
        .await
        .expect("the run took over 60 s");
    assert_eq!(summary.done, 10, "{summary:?}");
    let calls = env.sim.ledger().api_calls;
    assert_eq!(calls.get("upload"), Some(&10), "{calls:?}");
    // One reading opens the epoch, one closes it at the end of the run: not one per upload.
    assert_eq!(calls.get("nums"), Some(&2), "{calls:?}");
}

/// A run of `n` photos with four uploads in flight, where 15 % of requests have their
/// connection reset before the service does anything (never charged). `queue_extra` is added
/// to the `[queue]` section.
async fn four_in_flight_with_resets(n: u32, queue_extra: &str) -> (Env, Summary) {
    let sim = SimOptions {
        faults: Faults {
            reset: 0.15,
            ..Faults::default()
        },
        ..fast_sim()
    };
    let queue = format!("upload_concurrency = 4\nmax_attempts = 100\n{queue_extra}");
    let env = Env::with_queue(sim, &queue).await;
    photos(&env, n, 0);
    env.add(Repair::Sr, None).await;
    let settings = env.settings();
    assert_eq!(settings.upload_concurrency, 4);
    let summary = tokio::time::timeout(Duration::from_secs(90), env.run_once(settings))
        .await
        .expect("the run took over 90 s");
    let resets = env.sim.ledger().faults.get("reset").copied().unwrap_or(0);
    assert!(resets > 0, "no reset happened");
    (env, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_four_uploads_in_flight_answers_lost_before_a_charge_are_sent_again_not_held() {
    // With four uploads in flight, the credit count moves with the others' charges while an
    // answer is lost; the epoch's arithmetic still sees that the lost ones were not charged.
    let (env, summary) = four_in_flight_with_resets(16, "").await;
    let ledger = env.sim.ledger();
    assert_eq!((summary.done, summary.held), (16, 0), "{summary:?}");
    assert_eq!(ledger.total_charges, 16);
    assert_eq!(ledger.duplicate_charges, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_spent_elsewhere_are_counted_not_taken_for_hilis() {
    let env = Env::new(fast_sim()).await;
    photos(&env, 2, 0);
    env.add(Repair::Sr, None).await;
    let first = env.run_once(env.settings()).await;
    assert_eq!(first.done, 2, "{first:?}");
    // Another program on the same account spends 5 credits between the runs.
    env.sim.set_credits(env.sim.credits() - 5);
    photos(&env, 2, 10);
    env.add(Repair::Sr, None).await;
    let second = env.run_once(env.settings()).await;
    assert_eq!(second.done, 2, "{second:?}");
    let store = env.store().await;
    let elsewhere = store.credits_spent_elsewhere().await.unwrap();
    let held = store.jobs_in(State::Held).await.unwrap();
    store.close().await;
    assert_eq!(elsewhere, 5);
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(env.sim.ledger().total_charges, 4);
    let out = env.hili().args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["credits_spent_elsewhere"], 5, "{st}");
    let text = env.hili().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("credits spent elsewhere: 5"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_stays_exact_with_four_in_flight_and_answers_lost_before_a_charge() {
    // A lost answer keeps its budget reservation until its epoch closes; one that was not
    // charged gives it back, so the run still spends exactly its budget.
    let (env, summary) = four_in_flight_with_resets(12, "budget = 7").await;
    assert_eq!(env.sim.ledger().total_charges, 7, "{summary:?}");
    assert_eq!((summary.done, summary.credits_spent), (7, 7), "{summary:?}");
}
