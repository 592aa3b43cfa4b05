//! A shared queue's database away while results become ready: the node goes on polling and
//! fetching its paid photos from memory, and records them when PostgreSQL is back — each
//! result fetched once, one output file per photo, no credit spent twice. Also across a kill
//! during the outage: the results fetched are journalled on the node's disk, so the next life
//! records them instead of fetching them again.

use std::path::Path;
use std::time::Duration;

use hili::store::State;

use crate::fleet_chaos::{Node, counts, observe};
use crate::helpers::pgcluster::PgCluster;
use crate::helpers::*;

const PHOTOS: u32 = 4;

/// One node on a cluster of the test's own, its photos uploaded and processing (8 s at the
/// simulator, which keeps results for `retention`), and the node's memory of them read (it is
/// read each second).
async fn uploaded(retention: Duration) -> Option<(PgCluster, Env, Node)> {
    let Some(cluster) = PgCluster::start() else {
        println!(
            "skipped: fleet outage tests (no PostgreSQL server binaries for a cluster of their own)"
        );
        return None;
    };
    let mut opts = fast_sim();
    opts.processing = Duration::from_secs(8);
    opts.retention = retention;
    let env = Env::new(opts).await;
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("inbox")).unwrap();
    let mut node = Node::new(&env, "n1", &cluster.url(), &shared);
    for seed in 0..PHOTOS {
        write_jpeg(&node.inbox.join(format!("p{seed}.jpg")), 100 + seed);
    }
    node.start(&env, env.dir.path());
    node.ready().await;
    let url = cluster.url();
    until(
        Duration::from_secs(30),
        "every photo processing",
        async || {
            counts(&url, env.dir.path()).await.get(&State::Processing) == Some(&u64::from(PHOTOS))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Some((cluster, env, node))
}

fn downloads(env: &Env) -> u64 {
    env.sim
        .ledger()
        .api_calls
        .get("download")
        .copied()
        .unwrap_or(0)
}

/// While the database is down, every result arrives in the output folder and is journalled
/// (the journal line follows the file: a kill between the two costs that result a second
/// fetch, so the tests wait for both).
async fn fetched_while_down(env: &Env, node: &Node) {
    // Whole entries, each on a line of its own.
    let journalled = || {
        std::fs::read_to_string(journal(node)).is_ok_and(|j| {
            j.lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
                .count()
                == PHOTOS as usize
        })
    };
    until(
        Duration::from_secs(40),
        "results fetched while the database is down",
        async || files_under(&node.out).len() == PHOTOS as usize && journalled(),
    )
    .await;
    assert_eq!(
        downloads(env),
        u64::from(PHOTOS),
        "each result fetched once"
    );
}

/// Once the database is back: every job done, at the file it names, intact; one file per
/// photo, one charge per photo, one fetch per result.
async fn recorded(cluster: &PgCluster, env: &Env, node: &Node) {
    let url = cluster.url();
    until(Duration::from_secs(40), "every job done", async || {
        counts(&url, env.dir.path()).await.get(&State::Done) == Some(&u64::from(PHOTOS))
    })
    .await;
    let store = observe(&url, env.dir.path()).await.unwrap();
    for job in store.jobs_in(State::Done).await.unwrap() {
        let path = job
            .output_path
            .clone()
            .expect("a done job names its output");
        let sha =
            hili::media::sha256_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(Some(sha), job.output_sha256, "{}", path.display());
    }
    store.close().await;
    let files = files_under(&node.out);
    assert_eq!(
        files.len(),
        PHOTOS as usize,
        "one output per photo: {files:?}"
    );
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, u64::from(PHOTOS));
    assert_eq!(ledger.duplicate_charges, 0);
    assert_eq!(downloads(env), u64::from(PHOTOS), "no result fetched twice");
    assert!(
        !journal(node).exists(),
        "the journal is emptied once recorded"
    );
}

fn journal(node: &Node) -> std::path::PathBuf {
    node.state.join("hili-landed.jsonl")
}

fn log_of(node: &Node) -> String {
    let log: &Path = &node.life.as_ref().expect("a live node").1;
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_results_are_fetched_while_postgres_is_down_and_recorded_when_it_is_back() {
    let Some((cluster, env, mut node)) = uploaded(Duration::from_secs(3600)).await else {
        return;
    };
    tokio::task::block_in_place(|| cluster.down());
    fetched_while_down(&env, &node).await;
    assert!(journal(&node).exists(), "results fetched are journalled");
    tokio::task::block_in_place(|| cluster.up());
    recorded(&cluster, &env, &node).await;
    node.check_alive();
    let log = log_of(&node);
    assert!(log.contains("paid photo(s) from memory"), "{log}");
    assert_eq!(
        log.matches("done (fetched while the queue was away)")
            .count(),
        PHOTOS as usize,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_results_fetched_during_an_outage_survive_a_kill_of_the_node() {
    let Some((cluster, env, mut node)) = uploaded(Duration::from_secs(3600)).await else {
        return;
    };
    tokio::task::block_in_place(|| cluster.down());
    fetched_while_down(&env, &node).await;
    node.check_alive();
    drop(node.life.take()); // SIGKILL
    tokio::task::block_in_place(|| cluster.up());
    node.start(&env, env.dir.path());
    recorded(&cluster, &env, &node).await;
}

/// A result fetched during an outage for a job another node finished meanwhile (only this node
/// was cut off, and its leases ran out): the `done` recorded first wins, and this node's copy
/// is removed when its journal is recorded — not kept as a second output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_a_result_another_node_recorded_first_is_not_kept_twice() {
    let Some(url) = hili::store::pg::testdb::fresh().await else {
        return;
    };
    let env = Env::new(fast_sim()).await;
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("inbox")).unwrap();
    let node = Node::new(&env, "n1", &url, &shared);
    write_jpeg(&node.inbox.join("a.jpg"), 7);
    let once = |node: &Node| {
        let out = node
            .hili(&env)
            .args(["run", "--once"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    once(&node);
    let store = observe(&url, env.dir.path()).await.unwrap();
    let done = store.jobs_in(State::Done).await.unwrap();
    store.close().await;
    let [job] = &done[..] else {
        panic!("one job done: {done:?}")
    };
    let hili::store::Stage::Done(Some(photo)) = &job.stage else {
        panic!("a done job keeps its photo: {job:?}")
    };
    let recorded = job.output_path.clone().unwrap();
    // The copy this node fetched while cut off, and its journal entry.
    let ours = recorded.with_file_name("a_sr (2).jpg");
    std::fs::copy(&recorded, &ours).unwrap();
    let path: Vec<u8> = ours.as_os_str().as_encoded_bytes().to_vec();
    let entry = serde_json::json!({
        "job": job.id.0, "mdf": photo.mdf, "path": path,
        "sha256": job.output_sha256, "warning": null,
    });
    std::fs::write(journal(&node), format!("{entry}\n")).unwrap();

    let log = once(&node);
    assert!(!ours.exists(), "the duplicate copy is removed; log:\n{log}");
    assert!(recorded.exists(), "the recorded result stays");
    assert!(!journal(&node).exists(), "the journal is emptied");
    assert!(
        log.contains("another node finished this job first"),
        "{log}"
    );
    assert_eq!(env.sim.ledger().total_charges, 1);
}

/// After an outage longer than a lease every lease has run out. A node back first must not take
/// over the paid work of a node that is back too: that node fetched those results from memory
/// during the outage, and the service may have deleted them since (here: kept 20 s) — taking
/// them over found them expired and held the photos "credit lost" (or, with `on_expired =
/// "reupload"`, paid for them again) while their results sat in the other node's journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_after_a_long_outage_a_node_back_first_leaves_the_others_paid_work_alone() {
    let Some((cluster, env, mut n1)) = uploaded(Duration::from_secs(20)).await else {
        return;
    };
    let shared = env.dir.path().join("shared");
    let mut n2 = Node::new(&env, "n2", &cluster.url(), &shared);
    n2.start(&env, env.dir.path());
    n2.ready().await;
    tokio::task::block_in_place(|| cluster.down());
    fetched_while_down(&env, &n1).await;
    // n1 is slow to come back (frozen); meanwhile the results expire at the service (they were
    // fetched after they were ready, and are kept 20 s) and every lease runs out.
    n1.life.as_ref().unwrap().signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(20)).await;
    tokio::task::block_in_place(|| cluster.up());
    tokio::time::sleep(Duration::from_secs(5)).await;
    n1.life.as_ref().unwrap().signal(libc::SIGCONT);
    recorded(&cluster, &env, &n1).await;
    let c = counts(&cluster.url(), env.dir.path()).await;
    assert_eq!(c.get(&State::Held).copied().unwrap_or(0), 0, "{c:?}");
    n1.check_alive();
    n2.check_alive();
}

/// A result fetched during the outage, copied into a watch folder before the database is back:
/// it is hili's own result, not a photo, and is never paid for — the results fetched meanwhile
/// are recorded before any upload is taken on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_a_result_fetched_during_an_outage_and_fed_back_is_not_paid_for() {
    let Some((cluster, env, node)) = uploaded(Duration::from_secs(3600)).await else {
        return;
    };
    tokio::task::block_in_place(|| cluster.down());
    fetched_while_down(&env, &node).await;
    let result = files_under(&node.out).remove(0);
    std::fs::copy(&result, node.inbox.join("fed-back.jpg")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.up());
    let url = cluster.url();
    until(
        Duration::from_secs(40),
        "the fed-back copy skipped",
        async || counts(&url, env.dir.path()).await.get(&State::Skipped) == Some(&1),
    )
    .await;
    let ledger = env.sim.ledger();
    assert_eq!(
        (ledger.total_charges, ledger.upload_requests),
        (u64::from(PHOTOS), u64::from(PHOTOS))
    );
}
