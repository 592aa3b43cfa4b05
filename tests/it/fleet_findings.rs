//! What the fleet chaos run (`fleet_chaos`) found wrong, each as a deterministic test of its
//! own (both failed every time before their fixes).

use std::process::Stdio;
use std::time::{Duration, Instant};

use hili::sim::Faults;
use hili::store::State;

use crate::fleet_chaos::{Node, counts};
use crate::helpers::pgcluster::PgCluster;
use crate::helpers::*;

/// Found by the fleet chaos run: a node that starts while a lost upload waits to be
/// reconciled (a node killed mid-upload) keeps the credit barrier and reads the credits in its
/// start-up recovery; PostgreSQL going away then (a restart, a failover) ends the daemon with
/// exit code 1 ("queue database error while taking a place in the shared queue's credit
/// barrier" / "… while reading the open credit epoch: pool timed out"), where a daemon at
/// work logs the same errors and carries on. systemd restarts it (`Restart=on-failure`), but a
/// daemon is not meant to end by itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_a_postgres_restart_during_start_up_recovery_does_not_end_the_daemon() {
    let Some(cluster) = PgCluster::start() else {
        println!("skipped: no PostgreSQL server binaries to start a cluster of the test's own");
        return;
    };
    let mut opts = fast_sim();
    opts.latency = Duration::from_millis(1500);
    let env = Env::new(opts).await;
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("inbox")).unwrap();
    let mut node = Node::new(&env, "n1", &cluster.url(), &shared);
    write_jpeg(&node.inbox.join("a.jpg"), 1);
    // The intent is recorded, then the node dies before the request leaves: a lost upload.
    let crashed = node
        .hili(&env)
        .args(["run", "--once"])
        .env("HILI_CRASH_AT", "before-upload-request")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the fail point was not reached");
    // Every answer slow: the restarted node's recovery reads the credits for 1.5 s, holding the
    // barrier, while PostgreSQL restarts.
    env.sim.set_faults(Faults {
        slow: 1.0,
        ..Faults::default()
    });
    node.start(&env, env.dir.path());
    let log = node.life.as_ref().unwrap().1.clone();
    until(Duration::from_secs(20), "start-up recovery", async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reconciling by the credit count"))
    })
    .await;
    tokio::task::block_in_place(|| cluster.restart(Duration::from_secs(10)));
    env.sim.set_faults(Faults::default());
    let url = cluster.url();
    let deadline = Instant::now() + Duration::from_secs(40);
    while counts(&url, env.dir.path()).await.get(&State::Done) != Some(&1) {
        node.check_alive();
        assert!(Instant::now() < deadline, "the photo was not done in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = node.life.take().unwrap().stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(env.sim.ledger().total_charges, 1, "paid once");
}

/// Found by the fleet chaos run (seed 12345 with the three chaos tests at once: a content paid
/// twice). A node's start-up recovery removes every `.hili-tmp-*` file in the output folders of
/// the queue's queued and downloading jobs — on a shared queue, every node's, so also the temp
/// file another live node is writing right now (a download, or a twin's result being copied).
/// A twin copy whose temp file vanished fails with "not found", which `skip::copy_from_twin`
/// takes for "the twin's output is gone" and uploads the photo again: a second credit for one
/// content. Here the other node's result in the making is a temp file in the shared output
/// folder, next to a queued job of that folder, while that node runs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_a_node_starting_leaves_alone_the_results_other_nodes_are_writing() {
    let Some(url) = hili::store::pg::testdb::fresh().await else {
        return;
    };
    let mut opts = fast_sim();
    opts.credits = 0; // Nothing is uploaded: the shared folder's job stays queued.
    let env = Env::new(opts).await;
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("inbox/d0")).unwrap();
    let mut n2 = Node::new(&env, "n2", &url, &shared);
    let mut n1 = Node::new(&env, "n1", &url, &shared);
    n2.start(&env, env.dir.path());
    n2.ready().await;
    write_jpeg(&shared.join("inbox/d0/a.jpg"), 1);
    until(
        Duration::from_secs(20),
        "the shared photo queued",
        async || counts(&url, env.dir.path()).await.get(&State::Queued) == Some(&1),
    )
    .await;
    // n2 writing a result into the shared output folder (as `AtomicFile` names it).
    let writing = shared.join("out/d0/.hili-tmp-n2-result");
    std::fs::create_dir_all(writing.parent().unwrap()).unwrap();
    std::fs::write(&writing, b"half a result").unwrap();
    n1.start(&env, env.dir.path());
    n1.ready().await;
    n2.check_alive();
    assert!(
        writing.exists(),
        "node n1's start-up removed {} while node n2, live, may be writing it",
        writing.display()
    );
}
