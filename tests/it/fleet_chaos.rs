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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hili::sim::Faults;
use hili::store::{PgStore, State, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::chaos::write_unique_jpeg;
use crate::fleet_proof::prove;
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
pub(crate) struct Node {
    pub(crate) name: &'static str,
    pub(crate) config: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) inbox: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) life: Option<Daemon>,
    /// When a killed node comes back.
    back_at: Option<Instant>,
    lives: usize,
}

impl Node {
    pub(crate) fn new(env: &Env, name: &'static str, url: &str, shared: &Path) -> Node {
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
    pub(crate) fn hili(&self, env: &Env) -> std::process::Command {
        let mut cmd = env.hili();
        cmd.env("HILI_CONFIG", &self.config)
            .env("HILI_LOG", "info,hili::pipeline::outage=debug")
            .env("STATE_DIRECTORY", &self.state)
            .current_dir(env.dir.path());
        cmd
    }

    pub(crate) fn start(&mut self, env: &Env, logs: &Path) {
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
    /// PostgreSQL restart hits nodes at work, not starting up (see `fleet_findings`).
    pub(crate) async fn ready(&self) {
        let log = &self.life.as_ref().expect("a live node").1;
        until(Duration::from_secs(30), "a node ready", async || {
            std::fs::read_to_string(log).is_ok_and(|l| l.contains("ready: watching"))
        })
        .await;
    }

    /// A daemon never exits by itself (whatever the database or the service do).
    pub(crate) fn check_alive(&mut self) {
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
pub(crate) async fn observe(url: &str, dir: &Path) -> Result<Store, hili::store::StoreError> {
    let pg = PgStore::open(url, "observer".parse().unwrap(), &dir.join("observer")).await?;
    Ok(Store::new(pg))
}

/// Jobs per state (empty while the database is unreachable).
pub(crate) async fn counts(url: &str, dir: &Path) -> HashMap<State, u64> {
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
    let mut fleet = Fleet::new(url, cluster, seed, photos, &mut rng).await;
    let tally = kill_phase(&mut fleet, &mut rng, target_kills, started).await;
    let kill_phase = started.elapsed();
    fleet.finish().await;
    let files = fleet.files();
    let proof = prove(&fleet.env, url, &fleet.nodes, &fleet.shared, files).await;
    assert!(
        tally.kills >= target_kills,
        "only {} kills in the time box",
        tally.kills
    );
    println!(
        "fleet chaos: 3 nodes, upload_concurrency {UPLOAD_CONCURRENCY}, {photos} photos in \
         {files} files ({} twins), {} kills ({} left down past their leases), {} PostgreSQL \
         restart, {} faults, {} outputs, {} held ({} of them uncharged, from {} epochs where \
         several answers were lost at once), {} duplicate charges, {} lost (seed {seed}, {:.1}s)",
        files - photos,
        tally.kills,
        tally.takeovers,
        tally.pg_restarts,
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

/// The three nodes, their simulator and folders, and the photos still to drop.
struct Fleet<'a> {
    env: Env,
    url: &'a str,
    cluster: Option<&'a PgCluster>,
    logs: PathBuf,
    shared: PathBuf,
    staging: PathBuf,
    nodes: Vec<Node>,
    plan: Vec<Vec<Option<usize>>>,
    written: usize,
}

impl<'a> Fleet<'a> {
    async fn new(
        url: &'a str,
        cluster: Option<&'a PgCluster>,
        seed: u64,
        photos: usize,
        rng: &mut ChaCha8Rng,
    ) -> Fleet<'a> {
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
        let staging = env.dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let nodes = NODES
            .iter()
            .map(|n| Node::new(&env, n, url, &shared))
            .collect();
        Fleet {
            plan: plan(rng, photos),
            env,
            url,
            cluster,
            logs,
            shared,
            staging,
            nodes,
            written: 0,
        }
    }

    fn files(&self) -> usize {
        self.plan.iter().map(Vec::len).sum()
    }

    /// The next `n` photos, each into its folder(s).
    fn drop_batch(&mut self, n: usize) {
        let end = (self.written + n).min(self.plan.len());
        for (i, dests) in self.plan.iter().enumerate().take(end).skip(self.written) {
            for (k, dest) in dests.iter().enumerate() {
                let inbox = dest.map_or(self.shared.join("inbox"), |n| self.nodes[n].inbox.clone());
                let path = inbox.join(format!("d{}/p{i:05}-{k}.jpg", i % 3));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                write_unique_jpeg(&self.staging, &path, i as u32);
            }
        }
        self.written = end;
    }

    /// Starts the nodes that are down: `all`, or those whose time to come back has come.
    fn revive(&mut self, all: bool) {
        for node in &mut self.nodes {
            let due = node.back_at.is_some_and(|t| t <= Instant::now());
            if node.life.is_none() && (all || due) {
                node.start(&self.env, &self.logs);
            }
        }
    }

    /// With every node up and at work, PostgreSQL crashed and back after 1–8 s (longer, in
    /// some seeds, than a statement waits for a connection): every node must live through it.
    async fn restart_postgres(&mut self, cluster: &PgCluster, rng: &mut ChaCha8Rng) {
        self.revive(true);
        for node in &self.nodes {
            node.ready().await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        let down = Duration::from_millis(rng.gen_range(1000..8000));
        println!("fleet chaos: PostgreSQL down for {down:?}");
        tokio::task::block_in_place(|| cluster.restart(down));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
        for node in &mut self.nodes {
            node.check_alive();
        }
    }

    /// Faults off, every node up, until every file is done or held; then SIGTERM, exit 0.
    async fn finish(&mut self) {
        let files = self.files();
        self.drop_batch(files);
        self.env.sim.set_faults(Faults::default());
        self.revive(true);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let c = counts(self.url, self.env.dir.path()).await;
            let n = |s| c.get(&s).copied().unwrap_or(0) as usize;
            let total = c.values().sum::<u64>() as usize;
            if total == files && n(State::Done) + n(State::Held) + n(State::Failed) == files {
                break;
            }
            if Instant::now() >= deadline {
                if let Some(cluster) = self.cluster {
                    eprintln!("--- PostgreSQL log ---\n{}", cluster.log());
                }
                panic!("not finished in time: {c:?} of {files} files");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for node in &mut self.nodes {
            let (code, log) = node.life.take().unwrap().stop();
            assert_eq!(
                code,
                Some(0),
                "node {}: SIGTERM must exit 0:\n{log}",
                node.name
            );
        }
    }
}

#[derive(Default)]
struct Tally {
    kills: usize,
    pg_restarts: usize,
    takeovers: usize,
}

/// A batch of photos per round, a seeded pause, one node killed and brought back (mostly at
/// once; sometimes after its leases ran out, so the others take over its paid work);
/// PostgreSQL crashed and restarted in one round of the middle third.
async fn kill_phase(
    fleet: &mut Fleet<'_>,
    rng: &mut ChaCha8Rng,
    target_kills: usize,
    started: Instant,
) -> Tally {
    fleet.revive(true);
    let per_round = fleet.plan.len().div_ceil(target_kills.max(1));
    let pg_round = rng.gen_range(target_kills / 3..=(2 * target_kills / 3).max(target_kills / 3));
    let budget = Duration::from_secs(40 + (target_kills as u64) * 3);
    let mut tally = Tally::default();
    while tally.kills < target_kills && started.elapsed() < budget {
        fleet.drop_batch(per_round);
        fleet.revive(false);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1800))).await;
        if tally.kills == pg_round
            && let Some(cluster) = fleet.cluster
        {
            fleet.restart_postgres(cluster, rng).await;
            tally.pg_restarts += 1;
        }
        let alive: Vec<usize> = (0..fleet.nodes.len())
            .filter(|&i| fleet.nodes[i].life.is_some())
            .collect();
        if alive.is_empty() {
            continue;
        }
        let victim = alive[rng.gen_range(0..alive.len())];
        let back_in = match rng.gen_bool(0.2) {
            true => {
                tally.takeovers += 1;
                Duration::from_millis(rng.gen_range(11_000..13_000))
            }
            false => Duration::from_millis(rng.gen_range(100..2000)),
        };
        fleet.nodes[victim].kill(back_in);
        tally.kills += 1;
    }
    tally
}
