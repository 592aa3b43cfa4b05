//! Crash tests: `hili run --once` as a real child process, aborted (as by `kill -9`) at every
//! named step of a job's life — after each transition, right before and after the upload
//! request, right before the output rename — then restarted. The simulator's ledger proves no
//! identity was charged twice, and the output directory that no partial file survived. Each
//! test runs on both backends (`NAME::sqlite`, `NAME::postgres`: the restarted child is the
//! same node, see `helpers::backend`).

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::sim::Faults;
use hili::store::State;
use rand::{Rng, SeedableRng};

use crate::helpers::backend::{Backend, both_backends};
use crate::helpers::*;

fn run_to_end(mut cmd: Command, limit: Duration) -> (ExitStatus, String) {
    let out = cmd
        .arg("run")
        .arg("--once")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn hili");
    let _ = limit;
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// After a restart completes, the invariants every crash must keep.
async fn assert_safe(env: &Env, step: &str, photos: usize) -> (usize, usize) {
    let ledger = env.sim.ledger();
    assert_eq!(
        ledger.duplicate_charges, 0,
        "{step}: an identity was charged twice"
    );
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), photos, "{step}");
    let (mut done, mut held) = (0, 0);
    for j in &jobs {
        match j.state() {
            State::Done => {
                done += 1;
                let out = j.output_path.clone().unwrap();
                assert_eq!(
                    hili::media::sha256_file(&out).unwrap(),
                    j.output_sha256.clone().unwrap(),
                    "{step}: output of job {} does not match its recorded sha256",
                    j.id
                );
            }
            State::Held => {
                held += 1;
                let reason = j.reason.clone().unwrap_or_default();
                assert!(
                    reason.contains("charged, result unknown"),
                    "{step}: held for {reason}"
                );
            }
            other => panic!("{step}: job {} ended {other:?}: {:?}", j.id, j.reason),
        }
    }
    assert_eq!(env.queue_intact().await, Ok(()), "{step}");
    // The children worked the queue the config names, not a file of their own.
    let on_file = env.backend() == Backend::Sqlite;
    assert_eq!(env.db.exists(), on_file, "{step}: {}", env.db.display());
    store.close().await;
    let outputs = env.outputs();
    for o in &outputs {
        let name = o.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with(".hili-tmp"),
            "{step}: partial output left: {}",
            o.display()
        );
        image::open(o).unwrap_or_else(|e| panic!("{step}: {} does not decode: {e}", o.display()));
    }
    assert_eq!(outputs.len(), done, "{step}: one output per done job");
    // Every charge is accounted for: a done job or a job held as charged.
    assert_eq!(
        ledger.total_charges as usize,
        done + held,
        "{step}: charges vs jobs"
    );
    (done, held)
}

both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_crash_at_every_step_never_charges_twice_nor_leaves_partial_output
);
async fn a_crash_at_every_step_never_charges_twice_nor_leaves_partial_output(backend: Backend) {
    let steps = [
        ("before:queued->uploading", false),
        ("after:queued->uploading", false),
        ("before-upload-request", false),
        ("after-upload-response", true),
        ("before:uploading->processing", true),
        ("after:uploading->processing", false),
        ("before:processing->downloading", false),
        ("after:processing->downloading", false),
        ("before-metadata-copy", false),
        ("before-output-rename", false),
        ("before:downloading->done", false),
        ("after:downloading->done", false),
    ];
    for (step, charged_unrecorded) in steps {
        let Some(env) = Env::on(backend, fast_sim()).await else {
            return;
        };
        for i in 0..3 {
            write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
        }
        env.add(Repair::Sr, None).await;

        let mut first = env.hili();
        first.env("HILI_CRASH_AT", step);
        let (status, stderr) = run_to_end(first, Duration::from_secs(30));
        assert!(
            !status.success(),
            "{step}: the fail point was not reached:\n{stderr}"
        );
        assert!(stderr.contains("aborting on purpose"), "{step}: {stderr}");

        let (status, stderr) = run_to_end(env.hili(), Duration::from_secs(30));
        let (done, held) = assert_safe(&env, step, 3).await;
        if charged_unrecorded {
            // The answer was lost with a credit spent: held for a person, never re-uploaded.
            assert_eq!((done, held), (2, 1), "{step}:\n{stderr}");
            assert_eq!(status.code(), Some(3), "{step}");
        } else {
            assert_eq!((done, held), (3, 0), "{step}:\n{stderr}");
            assert_eq!(status.code(), Some(0), "{step}:\n{stderr}");
        }
    }
}

both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    randomised_kills_over_200_jobs_with_faults_on
);
async fn randomised_kills_over_200_jobs_with_faults_on(backend: Backend) {
    let seed: u64 = std::env::var("HILI_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261129);
    println!("randomised crash loop seed: {seed} (replay with HILI_CRASH_SEED={seed})");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut opts = fast_sim();
    opts.processing = Duration::from_millis(30);
    opts.seed = seed;
    opts.faults = Faults {
        http500: 0.03,
        reset: 0.02,
        e9006: 0.02,
        charge_drop: 0.01,
        ..Faults::default()
    };
    let queue = "upload_concurrency = 1\ndownload_concurrency = 4";
    let Some(env) = Env::on_with_queue(backend, opts, queue).await else {
        return;
    };
    let photos = 200;
    for i in 0..photos {
        write_jpeg(&env.inbox.join(format!("d{}/p{i}.jpg", i % 10)), i as u32);
    }
    env.add(Repair::Sr, None).await;

    let started = Instant::now();
    let mut kills = 0;
    while kills < 25 && started.elapsed() < Duration::from_secs(120) {
        let mut child = env
            .hili()
            .args(["run", "--once"])
            .env("HILI_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.gen_range(60..360));
        tokio::time::sleep(wait).await;
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    // The kills must have landed in work, not only in start-ups.
    let charged_while_killing = env.sim.ledger().total_charges;
    env.sim.set_faults(Faults::default());
    let (status, stderr) = run_to_end(env.hili(), Duration::from_secs(60));
    let (done, held) = assert_safe(&env, "random", photos).await;
    println!(
        "crash loop ({backend:?}): {photos} photos, {kills} kills, {charged_while_killing} charged \
         while killing, {} faults, {done} done, {held} held, 0 duplicate charges, {:.1}s",
        env.sim.ledger().faults.values().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 15, "too few kills to mean anything: {kills}");
    assert!(
        charged_while_killing >= 10,
        "too little work between the kills to mean anything: {charged_while_killing} charges"
    );
    assert!(
        status.code() == Some(0) || status.code() == Some(3),
        "{stderr}"
    );
}
