//! The drop-folder daemon as a child process against the simulator: files dropped, written
//! slowly, moved in, dropped while it was stopped; ignore rules; what happens to sources after
//! their job; a stop signal in the middle of an upload; polling mode; systemd notifications.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use hili::sim::{Faults, SimOptions};
use hili::store::State;

use crate::helpers::*;

/// A `[[watch]]` table for `inbox`: fast test defaults, unless `extra` sets those keys.
fn watch_table(env: &Env, extra: &str) -> String {
    let mut table = format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\noutput = \"{}\"\n{extra}\n",
        env.inbox.display(),
        env.out.display()
    );
    for (key, default) in [("stable_for", "\"700ms\""), ("rescan_interval", "\"2s\"")] {
        if !extra.contains(key) {
            table.push_str(&format!("{key} = {default}\n"));
        }
    }
    table
}

/// An environment whose config has one watch folder on its inbox.
async fn watched(opts: SimOptions, extra: &str) -> Env {
    let env = Env::new(opts).await;
    let table = watch_table(&env, extra);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap();
    f.write_all(table.as_bytes()).unwrap();
    env
}

/// How many jobs are in `state` (0 while the database does not exist yet).
async fn count_in(env: &Env, state: State) -> usize {
    let Ok(store) = hili::store::Store::open_existing(&env.db).await else {
        return 0;
    };
    let n = store.jobs_in(state).await.map(|v| v.len()).unwrap_or(0);
    store.close().await;
    n
}

async fn done_count(env: &Env) -> usize {
    count_in(env, State::Done).await
}

fn sha256(p: &Path) -> String {
    hili::media::sha256_file(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_slow_and_moved_in_files_are_processed_once_each() {
    // The slow writer below pauses 500 ms between chunks; stable_for must outlast a pause.
    let env = watched(fast_sim(), "stable_for = \"1500ms\"").await;
    // Dropped while the daemon was stopped: found by the start-up scan.
    write_jpeg(&env.inbox.join("before.jpg"), 1);
    let d = Daemon::start(&env);
    until(Duration::from_secs(20), "the start-up file", async || {
        done_count(&env).await == 1
    })
    .await;

    // Dropped while running.
    write_jpeg(&env.inbox.join("dropped.jpg"), 2);
    // Written in chunks over 3 s: must be uploaded once, complete.
    let staging = env.dir.path().join("staging.jpg");
    write_jpeg(&staging, 3);
    let bytes = std::fs::read(&staging).unwrap();
    let slow = env.inbox.join("slow.jpg");
    let mut f = std::fs::File::create(&slow).unwrap();
    for chunk in bytes.chunks(bytes.len().div_ceil(6)) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(f);
    // A whole folder moved in from outside.
    let outside = env.dir.path().join("outside-album");
    write_jpeg(&outside.join("a.jpg"), 4);
    write_jpeg(&outside.join("b.jpg"), 5);
    std::fs::rename(&outside, env.inbox.join("album")).unwrap();
    // Ignored names never reach the service.
    std::fs::write(env.inbox.join(".DS_Store"), b"junk").unwrap();
    write_jpeg(&env.inbox.join("download.jpg.part"), 6);
    write_jpeg(&env.inbox.join("~$draft.jpg"), 7);

    until(
        Duration::from_secs(30),
        "all five photos done",
        async || done_count(&env).await == 5,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a rescan comes and goes
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");

    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 5, "{:?}", ledger.charges);
    assert_eq!(ledger.duplicate_charges, 0);
    let slow_sha = sha256(&slow);
    assert!(
        ledger.charges.iter().any(|c| c.sha256 == slow_sha),
        "the slowly written file was uploaded complete"
    );
    for ignored in [6u32, 7] {
        let p = env.dir.path().join(format!("ignored{ignored}.jpg"));
        write_jpeg(&p, ignored);
        let s = sha256(&p);
        assert!(
            !ledger.charges.iter().any(|c| c.sha256 == s),
            "ignored file {ignored} was charged"
        );
    }

    // A restart finds nothing new to do.
    let d = Daemon::start(&env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    assert_eq!(env.sim.ledger().total_charges, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_kept_moved_or_deleted_and_failures_go_to_failed_dir() {
    for after in ["keep", "move", "delete"] {
        let tmp = tempfile::tempdir().unwrap();
        let done_dir = tmp.path().join("done");
        let failed_dir = tmp.path().join("failed");
        let mut extra = format!(
            "after = \"{after}\"\nfailed_dir = \"{}\"\n",
            failed_dir.display()
        );
        if after == "move" {
            extra.push_str(&format!("done_dir = \"{}\"\n", done_dir.display()));
        }
        let env = watched(fast_sim(), &extra).await;
        write_jpeg(&env.inbox.join("sub/ok.jpg"), 1);
        std::fs::write(env.inbox.join("sub/bad.jpg"), b"not a photo at all").unwrap();
        let d = Daemon::start(&env);
        until(Duration::from_secs(20), "one done", async || {
            done_count(&env).await == 1
        })
        .await;
        until(Duration::from_secs(10), "failed source moved", async || {
            failed_dir.join("sub/bad.jpg").exists()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, err) = d.stop();
        assert_eq!(code, Some(0), "{after}: {err}");

        let reason = std::fs::read_to_string(failed_dir.join("sub/bad.jpg.reason.txt")).unwrap();
        assert!(reason.contains("bad.jpg"), "{after}: {reason}");
        assert!(!env.inbox.join("sub/bad.jpg").exists());
        let src = env.inbox.join("sub/ok.jpg");
        match after {
            "keep" => assert!(src.exists() && !done_dir.join("sub/ok.jpg").exists()),
            "move" => assert!(!src.exists() && done_dir.join("sub/ok.jpg").exists()),
            _ => assert!(!src.exists() && !done_dir.join("sub/ok.jpg").exists()),
        }
        assert_eq!(env.outputs().len(), 1, "{after}");
        assert_eq!(
            env.sim.ledger().total_charges,
            1,
            "{after}: kept sources are not re-queued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_upload_exits_cleanly_and_the_restart_does_not_pay_twice() {
    let mut opts = fast_sim();
    opts.faults = Faults {
        slow: 1.0,
        ..Faults::default()
    };
    opts.latency = Duration::from_secs(2);
    let env = watched(opts, "").await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    let d = Daemon::start(&env);
    // Wait until the upload is in flight (the slow answer holds it there).
    until(Duration::from_secs(15), "an upload in flight", async || {
        count_in(&env, State::Uploading).await == 1
    })
    .await;
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");
    env.sim.set_faults(Faults::default());

    let d = Daemon::start(&env);
    until(Duration::from_secs(20), "done after restart", async || {
        done_count(&env).await == 1
    })
    .await;
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.duplicate_charges), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_picks_up_files_without_events() {
    let env = watched(
        fast_sim(),
        "poll = true\npoll_interval = \"300ms\"\nrescan_interval = \"1h\"",
    )
    .await;
    let d = Daemon::start(&env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_jpeg(&env.inbox.join("deep/in/here.jpg"), 1);
    until(Duration::from_secs(20), "polled file done", async || {
        done_count(&env).await == 1
    })
    .await;
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_and_stopping() {
    let env = watched(fast_sim(), "").await;
    let sock_path: PathBuf = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let d = Daemon::start_with(&env, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);

    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("STATUS=")))
    {
        assert!(Instant::now() < deadline, "no READY/STATUS: {seen:?}");
        let n = sock.recv(&mut buf).unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let status = seen.iter().find(|m| m.contains("STATUS=")).unwrap();
    assert!(
        status.contains("queued") && status.contains("credits"),
        "{status}"
    );

    d.signal(libc::SIGTERM);
    let mut stopping = false;
    while !stopping {
        let n = sock.recv(&mut buf).expect("STOPPING=1 before exit");
        stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    let (code, err) = d.wait_exit();
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_sighup_adds_a_folder_and_a_second_signal_exits_at_once() {
    let env = watched(fast_sim(), "").await;
    let sock_path: PathBuf = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A 400 ms watchdog: hili must ping at half of it.
    let d = Daemon::start_with(
        &env,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pings < 3 {
        assert!(Instant::now() < deadline, "too few WATCHDOG=1 pings");
        let n = sock.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            pings += 1;
        }
    }

    // SIGHUP: a folder added to the config is watched from then on.
    let second = env.dir.path().join("second-inbox");
    std::fs::create_dir_all(&second).unwrap();
    let table = format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"colour\"\noutput = \"{}\"\nstable_for = \"500ms\"\n",
        second.display(),
        env.out.display()
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap();
    f.write_all(table.as_bytes()).unwrap();
    drop(f);
    d.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_jpeg(&second.join("late.jpg"), 42);
    until(
        Duration::from_secs(20),
        "the file in the added folder done",
        async || done_count(&env).await == 1,
    )
    .await;
    assert_eq!(env.sim.ledger().charges[0].repair_type, "sr,repair,colour");

    // A slow answer keeps an upload in flight; a second signal does not wait for it.
    env.sim.set_faults(Faults {
        slow: 1.0,
        ..Faults::default()
    });
    write_jpeg(&env.inbox.join("slow.jpg"), 43);
    until(Duration::from_secs(15), "an upload in flight", async || {
        count_in(&env, State::Uploading).await == 1
    })
    .await;
    d.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    d.signal(libc::SIGTERM);
    let (code, err) = d.wait_exit();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the second signal was not obeyed at once"
    );
    assert_eq!(code, Some(130), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_scans_the_watch_folders_and_status_reads_while_a_daemon_runs() {
    let env = watched(fast_sim(), "").await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_jpeg(&env.inbox.join("sub/b.jpg"), 2);
    // `run --once` scans every watch folder once, waits for the files to settle, processes.
    let out = env.hili().args(["run", "--once"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.outputs().len(), 2);

    // While the daemon runs, the read-only commands work on the same database (WAL).
    let d = Daemon::start(&env);
    write_jpeg(&env.inbox.join("c.jpg"), 3);
    until(
        Duration::from_secs(20),
        "the third photo done",
        async || done_count(&env).await == 3,
    )
    .await;
    for args in [&["status", "--json"][..], &["jobs"][..]] {
        let out = env.hili().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = env.hili().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["counts"]["done"], 3, "{v}");
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(env.sim.ledger().total_charges, 3);
}
