//! No upload without room for its result: with the output folder's filesystem full (a small
//! tmpfs, filled) or read-only, no credit is spent on a result with nowhere to go; results
//! already paid for wait and are fetched once space returns; `hili status` says why, how many
//! paid results wait and when the first expires. Mounting needs root (tests and CI run as
//! root); where it is refused, the test prints one line saying it skipped.

use std::sync::Arc;
use std::time::Duration;

use hili::pipeline::RunOptions;
use hili::repair::Repair;
use hili::sim::{SimOptions, Stall};
use hili::store::State;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

async fn pause_note(env: &Env) -> Option<String> {
    let store = env.store().await;
    let note = store.pause_note().await.unwrap().map(|n| n.1);
    store.close().await;
    note
}

#[tokio::test]
async fn a_full_output_disk_pauses_uploads_says_why_and_resumes_when_space_frees() {
    let env = Arc::new(
        Env::new(SimOptions {
            processing: Duration::from_millis(1500),
            ..fast_sim()
        })
        .await,
    );
    let _tmpfs = match Tmpfs::mount_sized(&env.out, "4m") {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    for i in 0..6 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), 40 + i);
    }
    env.add(Repair::Sr, None).await;
    // Uploads take a moment each, so the disk fills while some are processing and some queued.
    env.sim.stall_uploads(Some(Stall {
        delay: Duration::from_millis(300),
        after_charge: false,
    }));
    let stop = CancellationToken::new();
    let mut settings = env.settings();
    settings.poll_interval = Duration::from_millis(100);
    let daemon = RunOptions {
        once: false,
        exit_when_blocked: false,
    };
    let run = {
        let (env, stop) = (env.clone(), stop.clone());
        tokio::spawn(async move { env.run_with(settings, daemon, stop).await })
    };
    until(Duration::from_secs(20), "two charges", async || {
        env.sim.ledger().total_charges >= 2
    })
    .await;
    let filler = fill(&env.out);

    until(
        Duration::from_secs(20),
        "uploads paused for room",
        async || {
            pause_note(&env)
                .await
                .is_some_and(|n| n.contains("uploads paused"))
        },
    )
    .await;
    // An upload already sent when the disk filled is answered (300 ms); none starts after.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let charged = env.sim.ledger().total_charges;
    assert!(
        charged < 6,
        "every photo was paid for while the disk was full"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = env.sim.ledger();
    assert_eq!(
        (ledger.total_charges, ledger.upload_requests),
        (charged, charged),
        "an upload was sent while the output disk was full"
    );

    // `hili status`, from another process, says why and what is at stake.
    let status = env.run_hili(["status"]).await;
    status.expect_code(0);
    assert!(
        status.stdout.contains("uploads paused")
            && status.stdout.contains(&env.out.display().to_string()),
        "{}",
        status.both()
    );
    let waiting = job_states(&env)
        .await
        .iter()
        .filter(|s| matches!(s, State::Processing | State::Downloading))
        .count();
    if waiting > 0 {
        assert!(
            status
                .stdout
                .contains("paid result(s) wait to be downloaded")
                && status.stdout.contains("expires in"),
            "{}",
            status.both()
        );
    }

    // Space returns: every photo is processed, once, and the note goes away.
    std::fs::remove_file(&filler).unwrap();
    until(Duration::from_secs(40), "all six done", async || {
        job_states(&env).await.iter().all(|s| *s == State::Done)
    })
    .await;
    until(
        Duration::from_secs(10),
        "the pause note cleared",
        async || pause_note(&env).await.is_none(),
    )
    .await;
    stop.cancel();
    run.await.unwrap();
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.duplicate_charges), (6, 0));
    let outputs: Vec<_> = env
        .outputs()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sr.jpg"))
        .collect();
    assert_eq!(outputs.len(), 6);
    for o in outputs {
        image::open(&o).unwrap();
    }
}

#[tokio::test]
async fn a_read_only_output_folder_gets_no_upload() {
    let env = Env::new(fast_sim()).await;
    let _tmpfs = match Tmpfs::mount_sized(&env.out, "4m") {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&env.out)
        .status()
        .unwrap();
    assert!(remount.success(), "remount read-only");
    write_jpeg(&env.inbox.join("a.jpg"), 50);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    let why = summary.blocked.clone().unwrap_or_default();
    assert!(why.contains("read-only"), "{summary:?}");
    assert_eq!(summary.unfinished, 1);
    assert_eq!(job_states(&env).await, vec![State::Queued]);
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (0, 0));
}
