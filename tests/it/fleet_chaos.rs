//! The fleet chaos run: three `hili run` daemons (nodes `n1`, `n2`, `n3`) as child processes on
//! ONE shared queue in PostgreSQL and ONE simulator with faults on. Each node watches a folder
//! of its own plus one folder marked `shared` (the same path in the three configs); photos
//! arrive in all of them, and some photos arrive twice, the same content in two nodes' own
//! folders. Nodes are killed with SIGKILL at seeded random moments and restarted (at once, or
//! after their leases ran out so the others take over their paid work), and PostgreSQL itself
//! is crashed and restarted once mid-run. Then faults off and a clean finish. The simulator's
//! ledger, the queue and the output folders must prove: no content was paid twice across the
//! fleet, every photo is done or held, every hold is a real charge (or one of several answers
//! lost in one epoch, counted and printed), and every done job's output is there and intact.
//! It prints one figure line (recorded in RELIABILITY.md).
//!
//! The test restarts PostgreSQL, so it starts a cluster of its own (`helpers::pgcluster`);
//! without the server binaries it uses a fresh database on `HILI_TEST_DATABASE_URL` and does
//! not restart the server; with neither it is skipped with one line.
//!
//! Knobs: `HILI_CHAOS_SEED`, `HILI_FLEET_PHOTOS` (default 240), `HILI_FLEET_KILLS` (default
//! 16), `HILI_FLEET_KEEP` (keep the nodes' logs in a directory named at the start).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hili::sim::Faults;
use hili::store::{PgStore, State, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::chaos::{check_trail, write_unique_jpeg};
use crate::helpers::pgcluster::PgCluster;
use crate::helpers::*;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const UPLOAD_CONCURRENCY: usize = 2;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// One node: its config, its own folders, and its current life (`None` while it is down).
struct Node {
    name: &'static str,
    config: PathBuf,
    state: PathBuf,
    inbox: PathBuf,
    out: PathBuf,
    life: Option<Daemon>,
    /// When a killed node comes back.
    back_at: Option<Instant>,
    lives: usize,
}

impl Node {
    fn new(env: &Env, name: &'static str, url: &str, shared: &Path) -> Node {
        let root = env.dir.path().join(name);
        let (inbox, out, state) = (root.join("inbox"), root.join("out"), root.join("state"));
        std::fs::create_dir_all(&inbox).unwrap();
        let config = root.join("hili.toml");
        let watch = |path: &Path, out: &Path, shared: bool| {
            format!(
                "\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\noutput = \"{}\"\nshared = {shared}\n\
                 stable_for = \"300ms\"\nrescan_interval = \"3s\"\n",
                path.display(),
                out.display()
            )
        };
        let text = format!(
            "[api]\nbase_url = \"{}\"\nthird_code = \"{THIRD}\"\nsecret_key_file = \"{}\"\n\
             requests_per_second = 500.0\nburst = 50\ntimeout = \"2s\"\npoll_interval = \"100ms\"\n\n\
             [queue]\ndatabase = \"{url}\"\nnode = \"{name}\"\n\
             upload_concurrency = {UPLOAD_CONCURRENCY}\ndownload_concurrency = 4\n\
             max_attempts = 100\nshutdown_grace = \"10s\"\n{}{}",
            env.sim.base_url(),
            env.dir.path().join("secret").display(),
            watch(&inbox, &out, false),
            watch(&shared.join("inbox"), &shared.join("out"), true),
        );
        std::fs::write(&config, text).unwrap();
        Node {
            name,
            config,
            state,
            inbox,
            out,
            life: None,
            back_at: None,
            lives: 0,
        }
    }

    /// `hili` as this node.
    fn hili(&self, env: &Env) -> std::process::Command {
        let mut cmd = env.hili();
        cmd.env("HILI_CONFIG", &self.config)
            .env("STATE_DIRECTORY", &self.state)
            .current_dir(env.dir.path());
        cmd
    }

    fn start(&mut self, env: &Env, logs: &Path) {
        let log = logs.join(format!("{}-life-{:03}.log", self.name, self.lives));
        self.lives += 1;
        let child = self
            .hili(env)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn hili run");
        self.life = Some(Daemon(child, log));
        self.back_at = None;
    }

    /// Waits (bounded) until the current life has recovered and scanned its folders: the
    /// PostgreSQL restart hits nodes at work, not starting up (see the ignored test below).
    async fn ready(&self) {
        let log = &self.life.as_ref().expect("a live node").1;
        until(Duration::from_secs(30), "a node ready", async || {
            std::fs::read_to_string(log).is_ok_and(|l| l.contains("ready: watching"))
        })
        .await;
    }

    /// A daemon never exits by itself (whatever the database or the service do).
    fn check_alive(&mut self) {
        let Some(life) = self.life.as_mut() else {
            return;
        };
        if let Some(status) = life.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(&life.1).unwrap_or_default();
            panic!("node {} exited by itself ({status}):\n{log}", self.name);
        }
    }

    /// SIGKILL (the daemon's drop), after checking it had not exited by itself.
    fn kill(&mut self, back_in: Duration) {
        self.check_alive();
        drop(self.life.take().expect("a live node"));
        self.back_at = Some(Instant::now() + back_in);
    }
}

/// Where each photo goes: the shared folder, one node's own folder, or two nodes' own folders
/// (the same content twice: the fleet must pay for it once).
fn plan(rng: &mut ChaCha8Rng, photos: usize) -> Vec<Vec<Option<usize>>> {
    (0..photos)
        .map(|_| match rng.gen_range(0..100) {
            0..35 => vec![None],
            35..80 => vec![Some(rng.gen_range(0..NODES.len()))],
            _ => {
                let a = rng.gen_range(0..NODES.len());
                let b = (a + rng.gen_range(1..NODES.len())) % NODES.len();
                vec![Some(a), Some(b)]
            }
        })
        .collect()
}

/// The queue as an observer sees it (not a node: it never joins nor beats).
async fn observe(url: &str, dir: &Path) -> Result<Store, hili::store::StoreError> {
    let pg = PgStore::open(url, "observer".parse().unwrap(), &dir.join("observer")).await?;
    Ok(Store::new(pg))
}

/// Jobs per state (empty while the database is unreachable).
async fn counts(url: &str, dir: &Path) -> HashMap<State, u64> {
    let Ok(store) = observe(url, dir).await else {
        return HashMap::new();
    };
    let c = store.counts().await.map(|m| m.into_iter().collect());
    store.close().await;
    c.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_chaos_kills_three_nodes_and_postgres_never_pay_twice_nor_lose_a_photo() {
    let cluster = PgCluster::start();
    let url = match &cluster {
        Some(c) => c.url(),
        None => match hili::store::pg::testdb::fresh().await {
            Some(url) => {
                println!("fleet chaos: no PostgreSQL server binaries, PostgreSQL is not restarted");
                url
            }
            None => {
                println!(
                    "skipped: fleet chaos (no PostgreSQL server binaries nor HILI_TEST_DATABASE_URL)"
                );
                return;
            }
        },
    };
    fleet_chaos(&url, cluster.as_ref()).await;
}

async fn fleet_chaos(url: &str, cluster: Option<&PgCluster>) {
    let seed = env_or("HILI_CHAOS_SEED", 12345);
    let photos = env_or("HILI_FLEET_PHOTOS", 240) as usize;
    let target_kills = env_or("HILI_FLEET_KILLS", 16) as usize;
    println!(
        "fleet chaos seed {seed} (replay: HILI_CHAOS_SEED={seed} HILI_FLEET_PHOTOS={photos} \
         HILI_FLEET_KILLS={target_kills} cargo test --test it fleet_chaos -- --nocapture)"
    );
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut opts = fast_sim();
    opts.seed = seed;
    opts.credits = (photos as u64) * 2 + 100;
    opts.latency = Duration::from_millis(300);
    opts.faults = Faults {
        http500: 0.05,
        reset: 0.03,
        charge_drop: 0.02,
        slow: 0.05,
        e9006: 0.01,
        e9009: 0.0,
    };
    let env = Env::new(opts).await;
    let logs = match std::env::var_os("HILI_FLEET_KEEP") {
        Some(_) => tempfile::Builder::new()
            .prefix("hili-fleet-logs-")
            .tempdir()
            .unwrap()
            .keep(),
        None => env.dir.path().to_path_buf(),
    };
    println!("fleet chaos: node logs in {}", logs.display());
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("inbox")).unwrap();
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::new(&env, n, url, &shared))
        .collect();
    let plan = plan(&mut rng, photos);
    let files: usize = plan.iter().map(Vec::len).sum();
    let staging = env.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let mut written = 0usize;
    let mut drop_batch = |n: usize, nodes: &[Node]| {
        let end = (written + n).min(photos);
        for (i, dests) in plan.iter().enumerate().take(end).skip(written) {
            for (k, dest) in dests.iter().enumerate() {
                let inbox = dest.map_or(shared.join("inbox"), |n| nodes[n].inbox.clone());
                let path = inbox.join(format!("d{}/p{i:05}-{k}.jpg", i % 3));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                write_unique_jpeg(&staging, &path, i as u32);
            }
        }
        written = end;
    };

    // Kill phase: a batch of photos per round, a seeded pause, one node killed; PostgreSQL
    // crashed and restarted in one round of the middle third.
    for node in &mut nodes {
        node.start(&env, &logs);
    }
    let per_round = photos.div_ceil(target_kills.max(1));
    let pg_round = rng.gen_range(target_kills / 3..=(2 * target_kills / 3).max(target_kills / 3));
    let kill_budget = Duration::from_secs(40 + (target_kills as u64) * 3);
    let (mut kills, mut pg_restarts, mut takeovers) = (0usize, 0usize, 0usize);
    while kills < target_kills && started.elapsed() < kill_budget {
        drop_batch(per_round, &nodes);
        for node in nodes.iter_mut() {
            if node.back_at.is_some_and(|t| t <= Instant::now()) {
                node.start(&env, &logs);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1800))).await;
        if kills == pg_round
            && let Some(cluster) = cluster
        {
            // With every node up and busy; down for longer than a statement waits for a
            // connection (5 s) in some seeds, and every node must live through it.
            for node in nodes.iter_mut().filter(|n| n.life.is_none()) {
                node.start(&env, &logs);
            }
            for node in &nodes {
                node.ready().await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
            let down = Duration::from_millis(rng.gen_range(1000..8000));
            println!("fleet chaos: PostgreSQL down for {down:?} after {kills} kills");
            tokio::task::block_in_place(|| cluster.restart(down));
            pg_restarts += 1;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
            for node in &mut nodes {
                node.check_alive();
            }
        }
        let alive: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].life.is_some())
            .collect();
        if alive.is_empty() {
            continue;
        }
        let victim = alive[rng.gen_range(0..alive.len())];
        // Mostly back at once; sometimes after its leases ran out (the others take over).
        let back_in = match rng.gen_bool(0.2) {
            true => {
                takeovers += 1;
                Duration::from_millis(rng.gen_range(11_000..13_000))
            }
            false => Duration::from_millis(rng.gen_range(100..2000)),
        };
        nodes[victim].kill(back_in);
        kills += 1;
    }
    drop_batch(photos, &nodes);
    let kill_phase = started.elapsed();

    // Finish: faults off, every node up, until every photo is done or held.
    env.sim.set_faults(Faults::default());
    for node in nodes.iter_mut().filter(|n| n.life.is_none()) {
        node.start(&env, &logs);
    }
    let finish_deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = counts(url, env.dir.path()).await;
        let n = |s| c.get(&s).copied().unwrap_or(0) as usize;
        let total = c.values().sum::<u64>() as usize;
        if total == files && n(State::Done) + n(State::Held) + n(State::Failed) == files {
            break;
        }
        if Instant::now() >= finish_deadline {
            if let Some(cluster) = cluster {
                eprintln!("--- PostgreSQL log ---\n{}", cluster.log());
            }
            panic!("not finished in time: {c:?} of {files} files");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for node in &mut nodes {
        let (code, log) = node.life.take().unwrap().stop();
        assert_eq!(
            code,
            Some(0),
            "node {}: SIGTERM must exit 0:\n{log}",
            node.name
        );
    }

    let proof = prove(&env, url, &nodes, &shared, files).await;
    assert!(kills >= target_kills, "only {kills} kills in the time box");
    println!(
        "fleet chaos: 3 nodes, upload_concurrency {UPLOAD_CONCURRENCY}, {photos} photos in \
         {files} files ({} twins), {kills} kills ({takeovers} left down past their leases), \
         {pg_restarts} PostgreSQL restart, {} faults, {} outputs, {} held ({} of them \
         uncharged, from {} epochs where several answers were lost at once), {} duplicate \
         charges, {} lost (seed {seed}, {:.1}s)",
        files - photos,
        proof.faults,
        proof.outputs,
        proof.held,
        proof.unsure_unpaid,
        proof.multi_loss,
        proof.duplicate_charges,
        proof.lost,
        started.elapsed().as_secs_f64()
    );
    println!(
        "fleet chaos detail: faults {:?}; kill phase {:.1}s; {} charges; done per node {:?}",
        proof.fault_kinds,
        kill_phase.as_secs_f64(),
        proof.charges,
        proof.done_by
    );
}

/// What the proof found, for the figure line.
struct Proof {
    faults: u64,
    fault_kinds: std::collections::BTreeMap<String, u64>,
    charges: u64,
    duplicate_charges: u64,
    outputs: usize,
    held: usize,
    unsure_unpaid: usize,
    multi_loss: usize,
    lost: usize,
    /// Done jobs by the node whose upload (or copy) finished them.
    done_by: std::collections::BTreeMap<String, usize>,
}

/// The ledger, the queue and the output folders agree: see the module documentation.
async fn prove(env: &Env, url: &str, nodes: &[Node], shared: &Path, files: usize) -> Proof {
    let ledger = env.sim.ledger();
    let charged: HashSet<&str> = ledger.charges.iter().map(|c| c.sha256.as_str()).collect();
    let store = observe(url, env.dir.path()).await.unwrap();
    let jobs = store.all_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), files, "one job per file");
    let mut sources = HashSet::new();
    let (mut done, mut held, mut unsure_unpaid) = (0usize, 0usize, 0usize);
    let mut contents: HashMap<String, Vec<i64>> = HashMap::new();
    for j in &jobs {
        assert!(
            sources.insert(j.source_path.clone()),
            "two jobs for one file"
        );
        // A job done by copying its twin's result never sent its file, and its row keeps no
        // content hash: the source (left in place) says what it is.
        let sha = j.content_sha256.clone().unwrap_or_else(|| {
            hili::media::sha256_file(&j.source_path).expect("the source is left in place")
        });
        match j.state() {
            State::Done => {
                done += 1;
                let out = j.output_path.clone().expect("a done job has an output");
                assert_eq!(
                    hili::media::sha256_file(&out).ok(),
                    j.output_sha256.clone(),
                    "job {}: output {} missing or not its recorded sha256",
                    j.id,
                    out.display()
                );
                assert!(
                    charged.contains(sha.as_str()),
                    "job {} done, never charged: {sha} not in {:?}",
                    j.id,
                    ledger.charges.iter().map(|c| &c.sha256).collect::<Vec<_>>()
                );
            }
            State::Held => {
                held += 1;
                let reason = j.reason.clone().unwrap_or_default();
                assert!(
                    reason.contains("charged, result unknown")
                        || reason.starts_with("same photo as job"),
                    "job {} held for an unexplained reason: {reason}",
                    j.id
                );
                // Uncharged and held: only when several answers were lost in one epoch (the
                // count cannot split them), or the twin of such a job.
                if !charged.contains(sha.as_str()) {
                    assert!(
                        reason.starts_with("perhaps charged")
                            || reason.starts_with("same photo as job"),
                        "job {} held as charged, but the simulator never charged it: {reason}",
                        j.id
                    );
                    unsure_unpaid += 1;
                }
            }
            other => panic!("job {} ended {other:?}: {:?}", j.id, j.reason),
        }
        contents.entry(sha).or_default().push(j.id.0);
        check_trail(&store, j).await;
    }
    store.close().await;
    let unaccounted = ledger
        .charges
        .iter()
        .filter(|c| !contents.contains_key(&c.sha256))
        .count();
    let lost = files.saturating_sub(done + held) + unaccounted;
    assert_eq!(lost, 0, "lost photos or charges");
    if ledger.duplicate_charges > 0 {
        let mut seen = HashSet::new();
        for c in &ledger.charges {
            if !seen.insert(c.sha256.as_str()) {
                let ids = contents.get(&c.sha256).cloned().unwrap_or_default();
                eprintln!("charged twice: {} (mdf {}), jobs {ids:?}", c.sha256, c.mdf);
                eprintln!("{}", trails(url, &ids).await);
            }
        }
        panic!(
            "{} charges of a content already charged",
            ledger.duplicate_charges
        );
    }
    let (multi_loss, done_by) = from_sql(url).await;
    assert!(
        unsure_unpaid == 0 || multi_loss > 0,
        "{unsure_unpaid} uncharged jobs held, but no epoch lost several answers at once"
    );
    let mut outputs = files_under(&shared.join("out"));
    for node in nodes {
        outputs.extend(files_under(&node.out));
    }
    for f in files_under(env.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".hili-tmp-"),
            "temp file left: {}",
            f.display()
        );
    }
    outputs.retain(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'));
    assert_eq!(outputs.len(), done, "one output per done job");
    Proof {
        faults: ledger.faults.values().sum(),
        fault_kinds: ledger.faults.clone(),
        charges: ledger.total_charges,
        duplicate_charges: ledger.duplicate_charges,
        outputs: outputs.len(),
        held,
        unsure_unpaid,
        multi_loss,
        lost,
        done_by,
    }
}

/// The events of jobs `ids`, with the node that wrote each, for a failure's message.
async fn trails(url: &str, ids: &[i64]) -> String {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  job %s %s -> %s at %s by %s: %s', job_id, from_state, to_state, at, \
         node, detail) FROM events WHERE job_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.join("\n")
}

/// Straight from the database: the credit epochs that closed with several answers lost (the
/// count could not tell which were charged), and the done jobs by the node that finished them.
async fn from_sql(url: &str) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credit_epochs WHERE verdict = 'ambiguous' AND lost > 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let by: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT node, COUNT(*) FROM events WHERE to_state = 'done' GROUP BY node ORDER BY node",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let by = by
        .into_iter()
        .map(|(node, n)| (node.unwrap_or_default(), n as usize))
        .collect();
    (n as usize, by)
}

/// Found by the chaos run above: a node that starts while a lost upload waits to be
/// reconciled (a node killed mid-upload) keeps the credit barrier and reads the credits in its
/// start-up recovery; PostgreSQL going away then (a restart, a failover) ends the daemon with
/// exit code 1 ("queue database error while taking a place in the shared queue's credit
/// barrier" / "… while reading the open credit epoch: pool timed out"), where a daemon at
/// work logs the same errors and carries on. systemd restarts it (`Restart=on-failure`), but a
/// daemon is not meant to end by itself.
#[ignore = "hili bug: a PostgreSQL restart during start-up recovery ends the daemon (exit 1)"]
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

/// Found by the chaos run above (seed 12345 with the three chaos tests at once: a content paid
/// twice). A node's start-up recovery removes every `.hili-tmp-*` file in the output folders of
/// the queue's queued and downloading jobs — on a shared queue, every node's, so also the temp
/// file another live node is writing right now (a download, or a twin's result being copied).
/// A twin copy whose temp file vanished fails with "not found", which `skip::copy_from_twin`
/// takes for "the twin's output is gone" and uploads the photo again: a second credit for one
/// content. Here the other node's result in the making is a temp file in the shared output
/// folder, next to a queued job of that folder, while that node runs.
#[ignore = "hili bug: a node's start-up removes the temp files live nodes are writing"]
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
