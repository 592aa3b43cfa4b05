//! Pauses, in-process against the simulator: a rejected token stops everything; no credits,
//! credits running out mid-run and a run's budget stop the uploads alone. The jobs not uploaded
//! stay queued. The simulator's ledger is the witness for every credit claim. Each test runs on both backends
//! (`NAME::sqlite`, `NAME::postgres`: see `helpers::backend`).

use std::time::Duration;

use hili::pipeline::RunOptions;
use hili::repair::Repair;
use hili::store::State;
use tokio_util::sync::CancellationToken;

use crate::helpers::backend::{Backend, both_backends};
use crate::helpers::*;

both_backends!(a_rejected_token_pauses_everything_and_leaves_jobs_queued);
async fn a_rejected_token_pauses_everything_and_leaves_jobs_queued(backend: Backend) {
    let mut opts = fast_sim();
    opts.secret = "a-different-secret".into();
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert!(
        summary.blocked.as_deref().unwrap().contains("9999"),
        "{summary:?}"
    );
    assert_eq!(job_states(&env).await, [State::Queued]);
    assert_eq!(env.sim.ledger().total_charges, 0);
}

both_backends!(no_credits_pauses_uploads_and_resumes_after_a_top_up);
async fn no_credits_pauses_uploads_and_resumes_after_a_top_up(backend: Backend) {
    let mut opts = fast_sim();
    opts.credits = 0;
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    for i in 0..2 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    let mut settings = env.settings();
    settings.credits_recheck = Duration::from_millis(200);

    // A --once run with nothing to pay with stops and leaves the jobs queued.
    let summary = env.run_once(settings.clone()).await;
    assert!(summary.blocked.is_some(), "{summary:?}");
    assert_eq!(job_states(&env).await, [State::Queued, State::Queued]);

    // A run that waits for credits resumes by itself once they are topped up.
    let admin = format!("{}/__sim/credits", env.sim.base_url());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = serde_json::json!({"add": 5});
        reqwest::Client::new()
            .post(admin)
            .json(&body)
            .send()
            .await
            .unwrap();
    });
    let opts = RunOptions {
        once: true,
        exit_when_blocked: false,
    };
    let summary = env.run_with(settings, opts, CancellationToken::new()).await;
    assert_eq!(summary.done, 2, "{summary:?}");
    assert_eq!(env.sim.credits(), 3);
}

both_backends!(errno_9101_mid_run_pauses_uploads_but_downloads_go_on);
async fn errno_9101_mid_run_pauses_uploads_but_downloads_go_on(backend: Backend) {
    let mut opts = fast_sim();
    opts.credits = 1;
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    for i in 0..3 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    // The one paid photo is downloaded although uploads are paused for the other two.
    assert_eq!(summary.done, 1, "{summary:?}");
    assert!(summary.blocked.is_some());
    let mut s = job_states(&env).await;
    s.sort();
    assert_eq!(s, [State::Queued, State::Queued, State::Done]);
    assert_eq!(env.sim.ledger().total_charges, 1);
}

both_backends!(budget_limits_the_credits_one_run_spends);
async fn budget_limits_the_credits_one_run_spends(backend: Backend) {
    let Some(env) = Env::on_with_queue(backend, fast_sim(), "budget = 2").await else {
        return;
    };
    for i in 0..4 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert_eq!((summary.done, summary.credits_spent), (2, 2), "{summary:?}");
    assert!(summary.blocked.as_deref().unwrap().contains("budget"));
    assert_eq!(env.sim.ledger().total_charges, 2);
}
