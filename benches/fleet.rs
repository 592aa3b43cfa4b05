//! The shared queue's throughput: N small JPEGs queued in a shared folder's name (any node's),
//! then 1, 2 and 3 nodes — `hili run --once` child processes, the release binary a user runs,
//! each its own node name — work them together on a local PostgreSQL against the simulator in
//! passthrough (no latency, no processing delay, no faults: the result is the upload). Prints
//! jobs/s (wall time from the first node's start to the last node's exit, start-up included),
//! the nodes' CPU per job (their rusage), and PostgreSQL commits per job (`xact_commit` of
//! `pg_stat_database` before and after: every transaction, reads included), beside the same
//! run on a single node's SQLite queue.
//!
//! Needs `HILI_TEST_DATABASE_URL` (`eval "$(bash .ci/pg-start)"`); without it only the SQLite
//! line is printed. Run with `cargo bench --bench fleet [-- N]`; N (default 1000) may also
//! come from `HILI_BENCH_JOBS`, `upload_concurrency` per node (default 1) from
//! `HILI_BENCH_UC`.

#[path = "common/args.rs"]
mod args;
#[path = "common/inbox.rs"]
mod inbox;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hili::sim::SimOptions;
use hili::store::{PgStore, SqliteStore, Store};

const THIRD: &str = "bench";
const SECRET: &str = "bench-secret-7d31";
/// Bound on one run, so a stuck fleet fails the bench instead of hanging it.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn hili_exe() -> PathBuf {
    option_env!("CARGO_BIN_EXE_hili")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/hili"))
}

/// User + system CPU of the children waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One node's config: the queue at `database`, node `node` (none on SQLite), the rate limit and
/// delays out of the way (the bench measures hili).
fn config(work: &Path, url: &str, database: &str, node: Option<&str>, uc: usize) -> PathBuf {
    let name = node.unwrap_or("sqlite");
    let path = work.join(format!("{name}.toml"));
    let node = node.map_or(String::new(), |n| format!("node = \"{n}\"\n"));
    let text = format!(
        "[api]\nbase_url = \"{url}\"\nthird_code = \"{THIRD}\"\nsecret_key_file = \"{}\"\n\
         requests_per_second = 100000.0\nburst = 1000\ntimeout = \"10s\"\n\
         poll_interval = \"1ms\"\n\n[queue]\ndatabase = \"{database}\"\n{node}\
         upload_concurrency = {uc}\nshutdown_grace = \"5s\"\n",
        work.join("secret").display()
    );
    std::fs::write(&path, text).expect("writing a node's config");
    path
}

/// Starts `hili run --once` for each config, waits for all (bounded); returns the wall time
/// and the CPU they used.
fn run_nodes(work: &Path, configs: &[PathBuf]) -> (Duration, Duration) {
    let cpu0 = children_cpu();
    let t = Instant::now();
    let mut nodes: Vec<(Child, PathBuf)> = configs
        .iter()
        .map(|c| {
            let log = c.with_extension("log");
            let child = Command::new(hili_exe())
                .args(["run", "--once"])
                .env("HILI_CONFIG", c)
                .env("HILI_LOG", "warn")
                .env("STATE_DIRECTORY", work.join(c.file_stem().expect("a name")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("a node's log"))
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", hili_exe().display()));
            (child, log)
        })
        .collect();
    for (child, log) in &mut nodes {
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting for a node") {
                break s;
            }
            assert!(t.elapsed() < RUN_LIMIT, "a node ran past {RUN_LIMIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "a node ended {status}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    (t.elapsed(), children_cpu() - cpu0)
}

fn print(what: &str, n: usize, (wall, cpu): (Duration, Duration), extra: &str) {
    println!(
        "fleet: {what}: {n} jobs in {:.2} s = {:.0} jobs/s, nodes' CPU {:.2} ms/job{extra}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n as f64
    );
}

/// Every transaction committed in the database so far (its sessions' counts are flushed when
/// they end; the nodes have exited by the time this is read after a run).
async fn commits(url: &str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connecting to read the commit count");
    let n: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("reading pg_stat_database");
    let _ = sqlx::Connection::close(conn).await;
    n
}

/// Jobs done, from a queue handle.
async fn done(store: &Store) -> u64 {
    let counts = store.counts().await.expect("counting jobs");
    counts.get(&hili::store::State::Done).copied().unwrap_or(0)
}

async fn sqlite_run(inbox: &Path, work: &Path, url: &str, uc: usize) {
    std::fs::create_dir_all(work).expect("work dir");
    std::fs::write(work.join("secret"), SECRET).expect("secret");
    let db = work.join("state/hili.db");
    let store = Store::new(SqliteStore::open(&db).await.expect("opening SQLite"));
    let n = inbox::queue_inbox(&store, inbox, &work.join("out")).await;
    store.close().await;
    let cfg = config(work, url, &db.display().to_string(), None, uc);
    let figures = run_nodes(work, &[cfg]);
    let store = Store::new(SqliteStore::open(&db).await.expect("reopening SQLite"));
    assert_eq!(done(&store).await, n as u64, "not every job ended done");
    store.close().await;
    print("SQLite, 1 node", n, figures, "");
}

async fn pg_run(inbox: &Path, work: &Path, url: &str, database: &str, nodes: usize, uc: usize) {
    std::fs::create_dir_all(work).expect("work dir");
    std::fs::write(work.join("secret"), SECRET).expect("secret");
    // Queued as a shared folder's photos: any node takes any of them.
    let name = "bench-queue".parse().expect("a node name");
    let pg = PgStore::open(database, name, &work.join("queue"))
        .await
        .expect("opening the shared queue");
    pg.share_roots(vec![inbox.to_path_buf()]);
    let store = Store::new(pg);
    let n = inbox::queue_inbox(&store, inbox, &work.join("out")).await;
    store.close().await;
    let configs: Vec<PathBuf> = (1..=nodes)
        .map(|i| config(work, url, database, Some(&format!("b{i}")), uc))
        .collect();
    let before = commits(database).await;
    let figures = run_nodes(work, &configs);
    let after = commits(database).await;
    let name = "bench-check".parse().expect("a node name");
    let store = Store::new(
        PgStore::open(database, name, &work.join("check"))
            .await
            .expect("reopening the shared queue"),
    );
    assert_eq!(done(&store).await, n as u64, "not every job ended done");
    store.close().await;
    let per_job = (after - before) as f64 / n as f64;
    print(
        &format!("PostgreSQL, {nodes} node(s)"),
        n,
        figures,
        &format!(", {per_job:.1} commits/job"),
    );
}

fn main() {
    if !hili_exe().exists() {
        eprintln!("build the release binary first: cargo build --release");
        std::process::exit(1);
    }
    let n = args::jobs();
    let uc = args::arg_or_env("HILI_BENCH_UC", 1).max(1);
    args::say_load();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let inbox = dir.path().join("inbox");
    inbox::write_inbox(&inbox, n);
    rt.block_on(async {
        let sim = hili::sim::serve(SimOptions {
            third_code: THIRD.into(),
            secret: SECRET.into(),
            credits: (n * 5) as u64,
            processing: Duration::ZERO,
            passthrough: true,
            work_dir: Some(dir.path().join("sim")),
            ..SimOptions::default()
        })
        .await
        .expect("starting the simulator");
        let url = sim.base_url();
        println!("fleet: upload_concurrency {uc} per node, simulator in the bench's process");
        sqlite_run(&inbox, &dir.path().join("sqlite"), &url, uc).await;
        for nodes in 1..=3 {
            let Some(database) = hili::store::pg::testdb::fresh().await else {
                break;
            };
            let work = dir.path().join(format!("pg-{nodes}"));
            pg_run(&inbox, &work, &url, &database, nodes, uc).await;
        }
        sim.shutdown().await;
    });
}
