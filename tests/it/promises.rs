//! "Never pays twice for the same photo", attacked with ordinary commands rather than crashes:
//! a second `hili run` on the same queue (with the upload slow before, and after, its charge),
//! two daemons, an answer that arrives for a job taken for lost, `retry` with and without
//! `--reupload`, watch folders that feed each other, results fed back as photos (`add` twice,
//! a result copied into a watch folder), a watch folder's repair type changed, and runs that
//! must end (wrong third_code, a refused port, a base URL that answers 404, errno 9006 over
//! and over, an oversized file). Each counts what the simulator charged.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::sim::{Faults, SimOptions, Stall};
use hili::store::{JobId, State, Store};

use crate::helpers::*;

/// How long a test waits for a state it expects.
const WAIT: Duration = Duration::from_secs(30);

/// Waits (bounded) for a child to exit; kills it and fails past the bound. Async: the
/// simulator serves from this test's runtime meanwhile.
async fn exit_code(child: &mut Child, log: &Path) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "hili did not exit within {WAIT:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job(env: &Env, id: i64) -> hili::store::Job {
    let store = env.store().await;
    let job = store.get(JobId(id)).await.unwrap().expect("job exists");
    store.close().await;
    job
}

/// Waits until job `id` is in `state`.
async fn wait_state(env: &Env, id: i64, state: State) {
    let deadline = Instant::now() + WAIT;
    loop {
        if job(env, id).await.state() == state {
            return;
        }
        assert!(Instant::now() < deadline, "job {id} never reached {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn append(config: &Path, text: &str) {
    let mut s = std::fs::read_to_string(config).unwrap();
    s.push_str(text);
    std::fs::write(config, s).unwrap();
}

fn replace_in(config: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(config).unwrap();
    assert!(s.contains(from), "{from:?} not in the config");
    std::fs::write(config, s.replace(from, to)).unwrap();
}

/// A `[[watch]]` table with fast test timings.
fn watch_table(path: &Path, output: &Path, repair: &str) -> String {
    format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"{repair}\"\noutput = \"{}\"\n\
         stable_for = \"200ms\"\nrescan_interval = \"1s\"\n",
        path.display(),
        output.display()
    )
}

// ---- one process drives a queue -------------------------------------------------------------

async fn a_second_run_once_is_refused_while_the_first_uploads(after_charge: bool) {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    assert_eq!(env.add(Repair::Sr, None).await, 1);
    env.sim.stall_uploads(Some(Stall {
        delay: Duration::from_secs(3),
        after_charge,
    }));
    let (mut first, first_log) = env.spawn_logged(&["run", "--once"], "first.log");
    wait_state(&env, 1, State::Uploading).await;
    // The first run's request is in flight (stalled at the server).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = env.run_hili(["run", "--once"]).await;
    second.expect_code(2);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id()))
            && second.stderr.contains("already driving the queue"),
        "{}",
        second.both()
    );
    assert_eq!(exit_code(&mut first, &first_log).await, Some(0));
    let ledger = env.sim.ledger();
    assert_eq!(
        (ledger.total_charges, ledger.duplicate_charges),
        (1, 0),
        "{}",
        std::fs::read_to_string(&first_log).unwrap()
    );
    assert_eq!(ledger.upload_requests, 1);
    let j = job(&env, 1).await;
    assert_eq!((j.state(), j.charges), (State::Done, 1));
}

#[tokio::test]
async fn a_second_run_once_pays_nothing_while_the_first_upload_is_slow_before_its_charge() {
    a_second_run_once_is_refused_while_the_first_uploads(false).await;
}

#[tokio::test]
async fn a_second_run_once_pays_nothing_while_the_first_upload_is_slow_after_its_charge() {
    a_second_run_once_is_refused_while_the_first_uploads(true).await;
}

#[tokio::test]
async fn a_second_daemon_on_the_same_queue_refuses_to_start() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 2);
    env.add(Repair::Sr, None).await;
    let (mut first, first_log) = env.spawn_logged(&["run"], "daemon-1.log");
    wait_state(&env, 1, State::Done).await;
    let second = env.run_hili(["run"]).await;
    second.expect_code(2);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.both()
    );
    // The commands beside a running daemon still work.
    env.run_hili(["status"]).await.expect_code(0);
    env.run_hili(["jobs"]).await.expect_code(0);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert_eq!(exit_code(&mut first, &first_log).await, Some(0));
    // Once the first is gone (even killed), the queue is free again.
    let (mut again, again_log) = env.spawn_logged(&["run"], "daemon-2.log");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        again.try_wait().unwrap().is_none(),
        "the lock was not released"
    );
    let _ = again.kill();
    let _ = exit_code(&mut again, &again_log).await;
    assert_eq!(env.sim.ledger().total_charges, 1);
}

#[tokio::test]
async fn an_answer_that_arrives_for_a_job_taken_for_lost_is_recorded_not_dropped() {
    let env = Env::new(fast_sim()).await;
    let photo = env.inbox.join("a.jpg");
    write_jpeg(&photo, 3);
    env.add(Repair::Sr, None).await;
    // While the upload is in flight, something else (another process's recovery, before the
    // run lock existed) takes it for lost and holds the job as charged with no known result.
    let db = env.db.clone();
    hili::failpoint::on("before-upload-request", photo.clone(), move || {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = Store::open(&db).await.unwrap();
                store
                    .hold(
                        JobId(1),
                        State::Uploading,
                        "charged, result unknown (test)",
                        true,
                    )
                    .await
                    .unwrap();
                store.close().await;
            });
        })
        .join()
        .unwrap();
    });
    env.run_once(env.settings()).await;
    let j = job(&env, 1).await;
    assert_eq!(j.state(), State::Done, "{:?}", j.reason);
    // The hold counted the charge; adopting the answer did not count it again.
    assert_eq!((j.charges, j.credit_spent), (1, true));
    let store = env.store().await;
    let events = store.events(JobId(1)).await.unwrap();
    store.close().await;
    assert!(
        events.iter().any(|e| e.from == Some(State::Held)
            && e.to == State::Processing
            && e.detail.as_deref().is_some_and(|d| d.contains("adopted"))),
        "{events:?}"
    );
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (1, 1));
    assert_eq!(env.outputs().len(), 1);
}

// ---- only --reupload spends ------------------------------------------------------------------

#[tokio::test]
async fn retry_of_a_charged_unknown_hold_needs_reupload_and_says_what_it_costs() {
    let env = Env::new(SimOptions {
        faults: Faults {
            charge_drop: 1.0,
            ..Faults::default()
        },
        ..fast_sim()
    })
    .await;
    write_jpeg(&env.inbox.join("a.jpg"), 4);
    env.add(Repair::Sr, None).await;
    env.run_hili(["run", "--once"]).await.expect_code(3);
    let j = job(&env, 1).await;
    assert_eq!(j.state(), State::Held);
    assert!(
        j.reason
            .as_deref()
            .unwrap()
            .contains("charged, result unknown")
    );
    assert_eq!(env.sim.ledger().total_charges, 1);
    env.sim.set_faults(Faults::default());

    for args in [vec!["retry", "1"], vec!["retry", "--held"]] {
        let out = env.run_hili(&args).await;
        out.expect_code(1);
        assert!(
            out.stderr.contains("--reupload") && out.stderr.contains("another credit"),
            "{args:?}\n{}",
            out.both()
        );
        assert_eq!(job(&env, 1).await.state(), State::Held);
    }
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 1, "a plain retry spent");

    let out = env.run_hili(["retry", "--reupload", "1"]).await;
    out.expect_code(0);
    assert!(
        out.stdout.contains("spends another credit"),
        "{}",
        out.both()
    );
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(job(&env, 1).await.state(), State::Done);
    // Asked for, so paid: the second charge of the same content is the person's choice.
    assert_eq!(env.sim.ledger().total_charges, 2);
}

// ---- hili never takes its own results for photos ---------------------------------------------

#[tokio::test]
async fn watch_folders_that_are_each_others_output_are_refused_before_anything_is_sent() {
    let env = Env::new(fast_sim()).await;
    let (a, b) = (env.dir.path().join("A"), env.dir.path().join("B"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    append(
        &env.config,
        &format!(
            "{}{}",
            watch_table(&a, &b, "sr"),
            watch_table(&b, &a, "repair")
        ),
    );
    write_jpeg(&a.join("photo.jpg"), 5);
    write_jpeg(&a.join("other.jpg"), 6);
    for args in [vec!["run", "--once"], vec!["run"]] {
        let out = env.run_hili(&args).await;
        out.expect_code(2);
        assert!(
            out.stderr.contains("watch.output") && out.stderr.contains("loop"),
            "{}",
            out.both()
        );
    }
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (0, 0));
}

#[tokio::test]
async fn a_result_copied_back_into_a_watch_folder_is_skipped_unpaid() {
    let env = Env::new(fast_sim()).await;
    append(&env.config, &watch_table(&env.inbox, &env.out, "sr"));
    write_jpeg(&env.inbox.join("a.jpg"), 7);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let outputs = env.outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!(env.sim.ledger().total_charges, 1);
    // A person copies the result into the drop folder, as if it were a new photo.
    std::fs::copy(&outputs[0], env.inbox.join("enhanced-copy.jpg")).unwrap();
    let out = env.run_hili(["run", "--once"]).await;
    out.expect_code(0);
    assert!(out.stdout.contains("1 skipped"), "{}", out.both());
    let j = job(&env, 2).await;
    assert_eq!(j.state(), State::Skipped);
    assert!(
        j.reason
            .as_deref()
            .unwrap()
            .contains("hili's own result of job 1"),
        "{:?}",
        j.reason
    );
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (1, 1));
    // `retry` does not pay for it by accident either.
    env.run_hili(["retry", "2"]).await.expect_code(1);
}

#[tokio::test]
async fn adding_a_folder_that_is_its_own_output_twice_pays_once() {
    let env = Env::new(fast_sim()).await;
    for i in 0..3 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), 10 + i);
    }
    let dir = env.inbox.display().to_string();
    let add = ["add", &dir, "--repair", "sr", "--output", &dir];
    env.run_hili(add).await.expect_code(0);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 3);
    let results = files_under(&env.inbox)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sr.jpg"))
        .count();
    assert_eq!(results, 3, "the results are beside the photos");

    let dry = env
        .run_hili(["add", &dir, "--repair", "sr", "--output", &dir, "--dry-run"])
        .await;
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("dry run: 0 to queue") && dry.stdout.contains("3 hili's own results"),
        "{}",
        dry.both()
    );
    let again = env.run_hili(add).await;
    again.expect_code(0);
    assert!(
        again.stdout.contains("queued 0 photo(s)") && again.stdout.contains("skipped 3 file(s)"),
        "{}",
        again.both()
    );
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (3, 3));
}

#[tokio::test]
async fn changing_a_watch_folders_repair_type_applies_to_new_photos_only() {
    let env = Env::new(fast_sim()).await;
    append(&env.config, &watch_table(&env.inbox, &env.out, "sr"));
    write_jpeg(&env.inbox.join("a.jpg"), 20);
    write_jpeg(&env.inbox.join("b.jpg"), 21);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 2);

    replace_in(&env.config, "repair = \"sr\"", "repair = \"colour\"");
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(
        env.sim.ledger().total_charges,
        2,
        "kept photos were paid again"
    );

    // Redoing the kept photos with the new type is an explicit, forced add.
    let inbox = env.inbox.display().to_string();
    let out_dir = env.out.display().to_string();
    let forced = env
        .run_hili([
            "add", &inbox, "--repair", "colour", "--output", &out_dir, "--force",
        ])
        .await;
    forced.expect_code(0);
    assert!(
        forced.stdout.contains("queued 2 photo(s)"),
        "{}",
        forced.both()
    );
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 4);

    // A new photo gets the new type.
    write_jpeg(&env.inbox.join("c.jpg"), 22);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 5);
    assert_eq!(ledger.charges[4].repair_type, "sr,repair,colour");
}

// ---- every run ends ------------------------------------------------------------------------

/// `run --once` on one queued photo with `max_attempts = 3`: must end with code 2, within the
/// bound, having sent nothing; returns its stderr.
async fn run_once_ends_refused(env: &Env) -> String {
    write_jpeg(&env.inbox.join("a.jpg"), 30);
    env.add(Repair::Sr, None).await;
    replace_in(&env.config, "[queue]\n", "[queue]\nmax_attempts = 3\n");
    let started = Instant::now();
    let out = env.run_hili(["run", "--once"]).await;
    out.expect_code(2);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (0, 0));
    assert_eq!(job(env, 1).await.state(), State::Queued);
    out.stderr
}

#[tokio::test]
async fn a_wrong_third_code_ends_run_once_with_code_2_and_says_so() {
    let env = Env::new(fast_sim()).await;
    replace_in(&env.config, &format!("\"{THIRD}\""), "\"not-my-code\"");
    let err = run_once_ends_refused(&env).await;
    assert!(
        err.contains("cannot run") && err.contains("third_code") && !err.contains("expired"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rejected_token_ends_run_once_with_code_2_and_says_so() {
    let env = Env::new(fast_sim()).await;
    std::fs::write(env.dir.path().join("secret"), "not-the-secret").unwrap();
    let err = run_once_ends_refused(&env).await;
    assert!(
        err.contains("cannot run") && err.contains("rejected the token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_port_ends_run_once_with_code_2_after_max_attempts() {
    let env = Env::new(fast_sim()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    replace_in(
        &env.config,
        &env.sim.base_url(),
        &format!("http://{closed}"),
    );
    let err = run_once_ends_refused(&env).await;
    assert!(
        err.contains("no answer from the API")
            && err.contains("3 requests in a row could not connect"),
        "{err}"
    );
}

#[tokio::test]
async fn a_base_url_that_answers_404_ends_run_once_with_code_2_and_names_the_404() {
    let env = Env::new(fast_sim()).await;
    let base = env.sim.base_url();
    replace_in(&env.config, &base, &format!("{base}/typo"));
    let err = run_once_ends_refused(&env).await;
    assert!(
        err.contains("HTTP 404") && err.contains("api.base_url") && !err.contains("9999"),
        "{err}"
    );
}

#[tokio::test]
async fn errno_9006_again_and_again_fails_the_photo_after_three_tries() {
    let env = Env::new(SimOptions {
        faults: Faults {
            e9006: 1.0,
            ..Faults::default()
        },
        ..fast_sim()
    })
    .await;
    write_jpeg(&env.inbox.join("a.jpg"), 31);
    env.add(Repair::Sr, None).await;
    env.run_hili(["run", "--once"]).await.expect_code(3);
    let j = job(&env, 1).await;
    assert_eq!(j.state(), State::Failed);
    assert!(
        j.reason
            .as_deref()
            .unwrap()
            .contains("refused its upload 3 times"),
        "{:?}",
        j.reason
    );
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (0, 3));
}

#[tokio::test]
async fn a_file_over_max_upload_bytes_is_never_sent() {
    let env = Env::new(fast_sim()).await;
    append(&env.config, "\n[input]\nmax_upload_bytes = 4096\n");
    // Noise compresses badly: a 200×200 PNG of it is far over 4 KiB.
    let mut state = 0x2545_f491_u32;
    let big = image::RgbImage::from_fn(200, 200, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let big_path = env.inbox.join("big.png");
    big.save(&big_path).unwrap();
    assert!(std::fs::metadata(&big_path).unwrap().len() > 4096);
    write_jpeg(&env.inbox.join("small.jpg"), 32);
    env.add(Repair::Sr, None).await;
    env.run_hili(["run", "--once"]).await.expect_code(3);
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    let big_job = jobs.iter().find(|j| j.source_path == big_path).unwrap();
    assert_eq!(big_job.state(), State::Failed);
    assert!(
        big_job
            .reason
            .as_deref()
            .unwrap()
            .contains("[input] max_upload_bytes"),
        "{:?}",
        big_job.reason
    );
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (1, 1));
}
