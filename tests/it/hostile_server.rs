//! Hostile or broken server answers (issue 5, part 3), one test per simulator mode: the
//! pipeline runs in-process against a sim answering wrongly, and each test asserts the job's
//! final state and reason, the ledger's charges, and that nothing was written outside the
//! output directory (no temp file left either). Timeouts are shortened (1 s, 2 attempts).

use std::time::{Duration, Instant};

use hili::pipeline::{Settings, Summary};
use hili::repair::Repair;
use hili::sim::{ApiSite, Hostile, HostileMode};
use hili::store::{Job, State};
use serde_json::{Value, json};

use crate::helpers::*;

/// A sim with one photo queued and `h` set before anything is sent.
async fn env_with(h: Hostile) -> Env {
    let env = Env::new(fast_sim()).await;
    env.sim.set_hostile(Some(h));
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    assert_eq!(env.add(Repair::Sr, None).await, 1);
    env
}

fn settings(env: &Env) -> Settings {
    let mut s = env.settings();
    s.timeout = Duration::from_secs(1);
    s.max_attempts = 2;
    s.max_download_bytes = 1 << 20;
    s
}

/// Runs to the end; returns the summary and the one job.
async fn run(env: &Env) -> (Summary, Job) {
    let t0 = Instant::now();
    let summary = env.run_once(settings(env)).await;
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    assert_eq!(jobs.len(), 1);
    (summary, jobs[0].clone())
}

/// Every file in the test's temp dir is one hili or the test wrote on purpose, and the only
/// ones hili wrote are under the output dir; no temp file remains. Returns the outputs.
fn written_only_to_output(env: &Env) -> Vec<String> {
    let root = env.dir.path();
    let mut outs = Vec::new();
    for f in files_under(root) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".hili-tmp-"),
            "temp file left: {}",
            f.display()
        );
        assert!(
            !name.contains("escape"),
            "server-chosen name: {}",
            f.display()
        );
        let rel = f.strip_prefix(root).unwrap();
        if let Ok(o) = rel.strip_prefix("out") {
            outs.push(o.to_string_lossy().to_string());
        } else {
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            assert!(
                ["inbox", "state", "secret", "hili.toml"].contains(&first.as_ref()),
                "written outside the output dir: {}",
                f.display()
            );
        }
    }
    for up in 1..=3 {
        let mut p = root.to_path_buf();
        for _ in 0..up {
            p.pop();
        }
        assert!(!p.join("escape.jpg").exists(), "{}", p.display());
    }
    outs
}

fn hostile_count(env: &Env, mode: &str) -> u64 {
    let l = env.sim.ledger();
    l.faults
        .get(&format!("hostile:{mode}"))
        .copied()
        .unwrap_or(0)
}

/// An upload whose answer cannot be used was charged: reconciled by the credit count, held
/// with that reason, no second charge, nothing written.
async fn assert_charged_and_held(env: &Env, mode: &str) {
    let (summary, job) = run(env).await;
    assert_eq!(job.state(), State::Held, "{summary:?} {job:?}");
    let reason = job.reason.clone().unwrap();
    assert!(reason.starts_with("charged, result unknown"), "{reason}");
    assert!(reason.len() < 500, "reason stays short: {reason}");
    assert!(job.credit_spent && job.mdf().is_none(), "{job:?}");
    let l = env.sim.ledger();
    assert_eq!((l.total_charges, l.duplicate_charges), (1, 0));
    assert_eq!(hostile_count(env, mode), 1);
    assert!(written_only_to_output(env).is_empty());
}

/// A download that keeps failing on the server's side: held after max_attempts (2) with a
/// reason containing `why`, one charge, nothing written.
async fn assert_download_held(env: &Env, why: &str) -> Job {
    let (summary, job) = run(env).await;
    assert_eq!(job.state(), State::Held, "{summary:?} {job:?}");
    let reason = job.reason.clone().unwrap();
    assert!(
        reason.starts_with("could not download the result after 2 attempts"),
        "{reason}"
    );
    assert!(reason.contains(why), "{why:?} not in {reason}");
    assert!(
        reason.contains(&format!("hili retry {}", job.id)),
        "{reason}"
    );
    assert!(reason.len() < 700, "reason stays short: {reason}");
    assert!(job.credit_spent);
    let l = env.sim.ledger();
    assert_eq!((l.total_charges, l.duplicate_charges), (1, 0));
    assert!(written_only_to_output(env).is_empty());
    job
}

/// The photo came through despite the hostility: done, one charge, one output named after
/// the source.
async fn assert_done(env: &Env) {
    let (summary, job) = run(env).await;
    assert_eq!(job.state(), State::Done, "{summary:?} {job:?}");
    assert_eq!(env.sim.ledger().total_charges, 1);
    assert_eq!(written_only_to_output(env), ["a.sr.jpg"]);
    let out = env.out.join("a.sr.jpg");
    image::open(&out).unwrap();
    assert_eq!(job.output_path.as_deref(), Some(out.as_path()));
}

/// One test a row: its name, the hostility set before anything is sent, and what the run
/// must come to (the body sees the test's `Env` as the named binding).
macro_rules! hostile_cases {
    ($($name:ident: $hostile:expr => |$env:ident| $outcome:block)*) => {$(
        #[tokio::test]
        async fn $name() {
            let $env = env_with($hostile).await;
            $outcome
        }
    )*};
}

hostile_cases! {
    upload_answer_not_json_is_reconciled_and_held: Hostile::new(HostileMode::NotJson)
        => |env| { assert_charged_and_held(&env, "not_json").await; }
    upload_answer_with_wrong_types_is_reconciled_and_held: Hostile::new(HostileMode::WrongTypes)
        => |env| { assert_charged_and_held(&env, "wrong_types").await; }
    upload_answer_without_data_is_reconciled_and_held:
        Hostile::new(HostileMode::MissingData).on(ApiSite::Upload)
        => |env| { assert_charged_and_held(&env, "missing_data").await; }
    mdf_with_path_traversal_is_refused: Hostile::new(HostileMode::MdfTraversal)
        => |env| { assert_charged_and_held(&env, "mdf_traversal").await; }
    mdf_of_10_kb_text_is_refused: Hostile::new(HostileMode::MdfHuge)
        => |env| { assert_charged_and_held(&env, "mdf_huge").await; }

    status_not_json_for_a_while_is_retried_then_done:
        Hostile::new(HostileMode::NotJson).on(ApiSite::Status).times(2)
        => |env| { assert_done(&env).await; assert_eq!(hostile_count(&env, "not_json"), 2); }
    credits_answer_without_data_for_a_while_is_retried_then_done:
        Hostile::new(HostileMode::MissingData).on(ApiSite::Nums).times(2)
        => |env| { assert_done(&env).await; assert_eq!(hostile_count(&env, "missing_data"), 2); }
    server_supplied_names_never_become_paths: Hostile::new(HostileMode::EvilNames)
        => |env| { assert_done(&env).await; assert_eq!(hostile_count(&env, "evil_names"), 1); }
    a_result_that_is_wrong_once_is_fetched_on_the_next_attempt:
        Hostile::new(HostileMode::ResultHtml).times(1)
        => |env| { assert_done(&env).await; assert_eq!(hostile_count(&env, "result_html"), 1); }

    status_answers_malformed_for_good_hold_the_job_instead_of_polling_forever:
        Hostile::new(HostileMode::NotJson).on(ApiSite::Status)
        => |env| {
            let (summary, job) = run(&env).await;
            assert_eq!(job.state(), State::Held, "{summary:?} {job:?}");
            let reason = job.reason.clone().unwrap();
            assert!(reason.contains("malformed"), "{reason}");
            assert!(reason.contains(&format!("hili retry {}", job.id)), "{reason}");
            assert_eq!(env.sim.ledger().total_charges, 1);
            assert!(written_only_to_output(&env).is_empty());
        }

    download_answer_with_wrong_types_is_held_after_max_attempts:
        Hostile::new(HostileMode::WrongTypes).on(ApiSite::Download)
        => |env| {
            assert_download_held(&env, "malformed").await;
            assert_eq!(hostile_count(&env, "wrong_types"), 2);
        }
    file_url_is_never_opened: Hostile::new(HostileMode::UrlFile)
        => |env| {
            let job = assert_download_held(&env, "file:///etc/passwd").await;
            assert!(job.reason.unwrap().contains("not http(s)"));
        }
    ftp_url_is_never_fetched: Hostile::new(HostileMode::UrlFtp)
        => |env| { assert_download_held(&env, "ftp://").await; }
    url_to_a_port_that_never_answers_times_out: Hostile::new(HostileMode::UrlHang)
        => |env| { assert_download_held(&env, "sent nothing for 1s").await; }
    html_result_is_not_saved: Hostile::new(HostileMode::ResultHtml)
        => |env| {
            assert_download_held(&env, "not a JPEG or PNG").await;
            assert_eq!(hostile_count(&env, "result_html"), 2);
        }
    result_larger_than_max_download_bytes_is_cut_off: Hostile::new(HostileMode::ResultHuge)
        => |env| {
            assert_download_held(&env, "larger than max_download_bytes (1048576 bytes)").await;
        }
    endless_trickling_result_hits_the_throughput_floor: Hostile::new(HostileMode::ResultTrickle)
        => |env| { assert_download_held(&env, "came too slowly").await; }
    redirect_loop_is_cut_after_five_hops: Hostile::new(HostileMode::RedirectLoop)
        => |env| {
            assert_download_held(&env, "too many redirects").await;
            // Per attempt: the first GET and at most 5 followed redirects.
            let gets = hostile_count(&env, "redirect_loop");
            assert!((2..=12).contains(&gets), "{gets} result GETs");
        }
}

async fn post_hostile(base: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/__sim/hostile"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn admin_endpoint_sets_and_clears_a_mode() {
    let env = Env::new(fast_sim()).await;
    let base = env.sim.base_url();
    let (st, v) = post_hostile(&base, json!({"mode":"not_json","on":"status","times":3})).await;
    assert_eq!(
        (st, v),
        (200, json!({"mode":"not_json","on":"status","times":3}))
    );
    assert_eq!(
        env.sim.hostile(),
        Some(
            Hostile::new(HostileMode::NotJson)
                .on(ApiSite::Status)
                .times(3)
        )
    );
    let got: Value = reqwest::get(format!("{base}/__sim/hostile"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["mode"], "not_json");
    // A fixed-site mode with "on", an unknown mode: refused, the current mode is kept.
    let (st, _) = post_hostile(&base, json!({"mode":"url_ftp","on":"upload"})).await;
    assert_eq!(st, 400);
    let (st, _) = post_hostile(&base, json!({"mode":"teapot"})).await;
    assert!((400..500).contains(&st));
    assert!(env.sim.hostile().is_some());
    let (st, _) = post_hostile(&base, Value::Null).await;
    assert_eq!(st, 200);
    assert_eq!(env.sim.hostile(), None);
    // Honest again: a status check of an unknown mdf gets the vendor's JSON.
    assert!(matches!(
        env.client().status("0123abcd").await,
        Err(hili::api::error::ApiError::NotFound { .. })
    ));
}
