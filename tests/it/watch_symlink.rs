//! A watch folder that is a symbolic link to a directory, with the watcher and the pipeline
//! running in-process against the simulator: drops at its top level (and below) are seen by
//! events, not by the next rescan, and processed to the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hili::pipeline::{self, Ctx, RunOptions};
use hili::repair::Repair;
use hili::store::State;
use hili::watch::{WatchConfig, Watcher};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const STABLE: Duration = Duration::from_millis(700);

/// Polls the store until `path` has a job in `state`; returns how long it took.
async fn wait_state(ctx: &Ctx, path: &PathBuf, state: Option<State>, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let jobs = ctx.store.all_jobs(None).await.unwrap();
        let hit = jobs
            .iter()
            .any(|j| &j.source_path == path && state.is_none_or(|s| j.state() == s));
        if hit {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{} not {} within {limit:?}; jobs: {:?}",
            path.display(),
            state.map_or("queued".to_string(), |s| s.to_string()),
            jobs.iter()
                .map(|j| (j.source_path.clone(), j.state(), j.reason.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_watch_folder_picks_up_top_level_drops_within_stable_for_plus_one_second() {
    let env = Env::new(fast_sim()).await;
    let target = env.dir.path().join("real-inbox");
    std::fs::create_dir_all(target.join("sub")).unwrap();
    let link = env.dir.path().join("inbox-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let mut w = WatchConfig::new(link.clone(), Repair::Sr, env.out.clone());
    w.stable_for = STABLE;
    // Far beyond the test: only events can find the drops in time.
    w.rescan_interval = Duration::from_secs(300);

    let stop = CancellationToken::new();
    let ctx = Ctx::new(
        env.store().await,
        env.client(),
        env.settings(),
        stop.clone(),
    );
    let watcher = Watcher::start(
        vec![w],
        ctx.store.clone(),
        stop.clone(),
        ctx.control.waker(),
    );
    let opts = RunOptions {
        once: false,
        exit_when_blocked: false,
    };
    let pipe = tokio::spawn(pipeline::run(ctx.clone(), opts, Arc::new(NoProgress)));
    tokio::time::timeout(Duration::from_secs(10), watcher.first_scan_done())
        .await
        .expect("first scan within 10 s");

    // Dropped through the link, as a user or a scanner would.
    let top = link.join("top.jpg");
    write_jpeg(&top, 1);
    let took = wait_state(&ctx, &top, None, Duration::from_secs(10)).await;
    assert!(
        took < STABLE + Duration::from_secs(1),
        "top-level drop queued after {took:?}"
    );
    // A subfolder keeps working, and a file written at the target shows under the link.
    let deep = link.join("sub/deep.png");
    write_png(&target.join("sub/deep.png"), 2);
    let took = wait_state(&ctx, &deep, None, Duration::from_secs(10)).await;
    assert!(
        took < STABLE + Duration::from_secs(1),
        "subfolder drop queued after {took:?}"
    );

    for p in [&top, &deep] {
        wait_state(&ctx, p, Some(State::Done), Duration::from_secs(20)).await;
    }
    assert_eq!(env.outputs().len(), 2, "{:?}", env.outputs());
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 2);
    assert_eq!(ledger.duplicate_charges, 0);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), pipe)
        .await
        .expect("pipeline stopped within 20 s")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), watcher.join())
        .await
        .expect("watcher stopped within 10 s");
    ctx.store.close().await;
}
