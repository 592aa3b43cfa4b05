//! Superseded, not failed: a queued photo renamed, or saved again, before its upload ends
//! `skipped` ("superseded by job N") when a later job has the file, instead of "failed: no
//! such file" (and `run --once` exits 0, not 3); a folder renamed while its photos are being
//! processed gets each result once. Counted on the simulator's ledger.

use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::sim::SimOptions;
use hili::store::{Job, State};

use crate::helpers::*;

async fn jobs(env: &Env) -> Vec<Job> {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    jobs
}

#[tokio::test]
async fn a_photo_renamed_while_queued_is_superseded_not_failed() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("scan-001.jpg"), 70);
    assert_eq!(env.add(Repair::Sr, None).await, 1);
    std::fs::rename(
        env.inbox.join("scan-001.jpg"),
        env.inbox.join("wedding.jpg"),
    )
    .unwrap();
    // Added again (or found by a watch folder's scan) under its new name.
    assert_eq!(env.add(Repair::Sr, None).await, 1);
    let out = env.run_hili(["run", "--once"]).await;
    out.expect_code(0);
    let all = jobs(&env).await;
    assert_eq!(all[0].state(), State::Skipped, "{:?}", all[0].reason);
    let reason = all[0].reason.clone().unwrap();
    assert!(
        reason.starts_with("superseded by job 2") && reason.contains("wedding.jpg"),
        "{reason}"
    );
    assert_eq!(all[1].state(), State::Done);
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (1, 1));
    assert_eq!(env.outputs().len(), 1, "one result");
}

#[tokio::test]
async fn a_photo_saved_again_while_hili_was_stopped_is_processed_once_in_its_new_version() {
    let env = Env::new(fast_sim()).await;
    let photo = env.inbox.join("a.jpg");
    write_jpeg(&photo, 71);
    env.add(Repair::Sr, None).await;
    // Edited and saved under the same name, so a larger file with a newer time.
    std::thread::sleep(Duration::from_millis(20));
    crate::helpers::photo(72, 64, 48)
        .save_with_format(&photo, image::ImageFormat::Jpeg)
        .unwrap();
    assert_eq!(
        env.add(Repair::Sr, None).await,
        1,
        "the new version is queued"
    );
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let all = jobs(&env).await;
    assert_eq!(all[0].state(), State::Skipped);
    assert!(
        all[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("superseded by job 2"),
        "{:?}",
        all[0].reason
    );
    assert_eq!(all[1].state(), State::Done);
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 1);
    // What was paid for is the new version.
    assert_eq!(
        ledger.charges[0].sha256,
        hili::media::sha256_file(&photo).unwrap()
    );
}

#[tokio::test]
async fn a_folder_renamed_while_its_photos_are_processed_gets_each_result_once() {
    let env = Env::new(SimOptions {
        processing: Duration::from_millis(2500),
        ..fast_sim()
    })
    .await;
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\noutput = \"{}\"\nstable_for = \"200ms\"\n\
         rescan_interval = \"1s\"\n",
        env.inbox.display(),
        env.out.display()
    ));
    std::fs::write(&env.config, cfg).unwrap();
    write_jpeg(&env.inbox.join("roll-1/a.jpg"), 73);
    write_jpeg(&env.inbox.join("roll-1/b.jpg"), 74);
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait = |what: &str| {
        assert!(
            Instant::now() < deadline,
            "timed out: {what}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    // Both uploaded, the service still processing them: the folder is renamed.
    while env.sim.ledger().total_charges < 2 {
        wait("two uploads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::rename(env.inbox.join("roll-1"), env.inbox.join("1962 Lisbon")).unwrap();
    loop {
        let all = jobs(&env).await;
        let done = all.iter().filter(|j| j.state() == State::Done).count();
        let skipped = all.iter().filter(|j| j.state() == State::Skipped).count();
        if done == 2 && skipped == 2 && all.len() == 4 {
            for j in all.iter().filter(|j| j.state() == State::Skipped) {
                assert!(
                    j.reason.as_deref().unwrap().contains("renamed from"),
                    "{:?}",
                    j.reason
                );
            }
            break;
        }
        wait("two done and the two renamed skipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let results: Vec<_> = env
        .outputs()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sr.jpg"))
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.duplicate_charges), (2, 0));
}
