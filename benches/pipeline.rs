//! Whole-pipeline throughput: N small JPEGs queued, then `pipeline::run` (once) against the
//! simulator with no latency, no processing delay and no faults (`passthrough`: the result is the
//! upload), `synchronous=FULL` kept. Prints jobs/s and CPU per job for upload_concurrency 1 and
//! 4, with the simulator in-process (CPU figure is client + sim) and as a child process `hili
//! sim` (CPU figure is the client's alone; the sim's is read from /proc).
//!
//! Run with `cargo bench --bench pipeline [-- N]`; N (default 1000) may also come from
//! `HILI_BENCH_JOBS`, the repetitions (default 2) from `HILI_BENCH_RUNS`. With `HILI_BENCH_KEEP`
//! set the bench's files are left in place (their path is printed) instead of deleted.

#[path = "common/args.rs"]
mod args;
#[path = "common/inbox.rs"]
mod inbox;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hili::api::client::{ApiClient, ClientOptions};
use hili::pipeline::{self, Ctx, Progress, RunOptions, Settings, Snapshot};
use hili::secret::Secret;
use hili::sim::SimOptions;
use hili::store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;

const THIRD: &str = "bench";
const SECRET: &str = "bench-secret-7d31";
/// Bound on one run, so a stuck pipeline fails the bench instead of hanging it.
const RUN_LIMIT: Duration = Duration::from_secs(300);

struct NoProgress;
impl Progress for NoProgress {
    fn update(&self, _: &Snapshot) {}
}

/// One small JPEG; each file gets a COM segment with its number right after SOI so every file
/// has distinct content (no dedupe) while the header probe still walks it.
fn settings(upload_concurrency: usize) -> Settings {
    // The defaults, with the rate limit and delays out of the way: the bench measures hili.
    let mut s = Settings::from_config(&hili::config::Config::default());
    s.requests_per_second = 1e6;
    s.burst = 1000;
    s.timeout = Duration::from_secs(10);
    s.poll_interval = Duration::from_millis(1);
    s.upload_concurrency = upload_concurrency;
    s.shutdown_grace = Duration::from_secs(5);
    s
}

/// User + system CPU time of this process.
fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of another process, from /proc/PID/stat (fields 14 and 15).
fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// The simulator as a child process; killed (SIGTERM, then waited) on drop.
struct SimChild {
    child: Child,
    url: String,
}

impl SimChild {
    fn start(credits: usize, work_dir: &Path) -> SimChild {
        let exe = option_env!("CARGO_BIN_EXE_hili")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/hili"));
        let mut child = Command::new(&exe)
            .args(["sim", "--listen", "127.0.0.1:0", "--passthrough"])
            .args(["--processing", "0s", "--third-code", THIRD])
            .args(["--credits", &credits.to_string()])
            .arg("--work-dir")
            .arg(work_dir)
            .env("HILI_SIM_SECRET", SECRET)
            .env("HILI_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the sim's URL");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "sim said {url:?}");
        SimChild { child, url }
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Figures {
    jobs: usize,
    wall: Duration,
    cpu: Duration,
    sim_cpu: Option<Duration>,
    /// Commits shared by two or more writes.
    groups: u64,
}

/// Queues the inbox into a fresh database and runs the pipeline over it against `url`.
/// `work` must not exist yet. Earlier runs' outputs are kept until the bench ends: deleting a
/// thousand files right before creating a thousand more makes ext4 step over every freshly
/// freed inode on each create, a cost no real run (which writes into a growing output tree)
/// has, and which showed as the largest kernel item in the profile.
async fn run_once(inbox: &Path, work: &Path, url: &str, upload_concurrency: usize) -> Figures {
    assert!(
        !work.exists(),
        "{} is left from an earlier run",
        work.display()
    );
    let db = work.join("state/hili.db");
    let out = work.join("out");
    // The SQLite queue itself, kept for its group-commit count after the run.
    let sqlite = SqliteStore::open(&db).await.expect("opening the store");
    let store = Store::new(sqlite.clone());
    let n = inbox::queue_inbox(&store, inbox, &out).await;

    let api = ApiClient::new(ClientOptions {
        base_url: url.to_string(),
        third_code: THIRD.into(),
        secret: Secret::new(SECRET),
        timeout: Duration::from_secs(10),
    })
    .expect("building the client");
    let ctx = Ctx::new(
        store,
        api,
        settings(upload_concurrency),
        CancellationToken::new(),
    );
    let opts = RunOptions {
        once: true,
        exit_when_blocked: true,
    };
    let cpu0 = self_cpu();
    let t = Instant::now();
    let summary = tokio::time::timeout(
        RUN_LIMIT,
        pipeline::run(ctx.clone(), opts, Arc::new(NoProgress)),
    )
    .await
    .expect("the pipeline run took too long")
    .expect("the pipeline run failed");
    let wall = t.elapsed();
    let cpu = self_cpu() - cpu0;
    let groups = sqlite.group_commits();
    ctx.store.close().await;
    assert_eq!(
        (
            summary.done,
            summary.failed,
            summary.held,
            summary.unfinished
        ),
        (n as u64, 0, 0, 0),
        "not every job ended done: {summary:?}"
    );
    assert_eq!(summary.credits_spent, n as u64);
    Figures {
        jobs: n,
        wall,
        cpu,
        sim_cpu: None,
        groups,
    }
}

fn print(f: &Figures, what: &str) {
    let per_job = |d: Duration| d.as_secs_f64() * 1e3 / f.jobs as f64;
    let sim = match f.sim_cpu {
        Some(s) => format!(", sim CPU {:.2} ms/job", per_job(s)),
        None => String::new(),
    };
    println!(
        "pipeline: {} jobs in {:.2} s = {:.0} jobs/s, {what} {:.2} ms/job{sim}, {} group commits",
        f.jobs,
        f.wall.as_secs_f64(),
        f.jobs as f64 / f.wall.as_secs_f64(),
        per_job(f.cpu),
        f.groups,
    );
}

/// Durable SQLite commits per second in `dir` (WAL, synchronous=FULL, one-row BEGIN IMMEDIATE
/// transactions, one connection): the disk's pace, which bounds the pipeline (each job makes
/// several such commits), measured right before the runs because a shared disk varies.
async fn commits_per_s(dir: &Path) -> f64 {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    const N: usize = 300;
    std::fs::create_dir_all(dir).expect("creating the calibration dir");
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join("calibrate.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .expect("opening the calibration database");
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&mut conn)
        .await
        .expect("creating the calibration table");
    let t = Instant::now();
    for i in 0..N {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("begin");
        sqlx::query("INSERT INTO t (x) VALUES (?)")
            .bind(i as i64)
            .execute(&mut conn)
            .await
            .expect("insert");
        sqlx::query("COMMIT")
            .execute(&mut conn)
            .await
            .expect("commit");
    }
    N as f64 / t.elapsed().as_secs_f64()
}

/// Small files created (written, not synced) per second in `dir`: the pace of the output and
/// simulator files. On ext4 without a journal (this VM's disk) it drops from ~17,000/s to
/// ~1,400/s for about five minutes after many files were deleted in the same block group
/// (every create steps over each recently freed inode), e.g. by a test run or by the previous
/// bench run's cleanup; this line shows whether a run was measured in that state.
fn creates_per_s(dir: &Path) -> f64 {
    const N: usize = 1000;
    std::fs::create_dir_all(dir).expect("creating the calibration dir");
    let t = Instant::now();
    for i in 0..N {
        std::fs::write(dir.join(format!("f{i:04}")), [0u8; 256]).expect("creating a file");
    }
    N as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let n = args::jobs();
    let runs = args::arg_or_env("HILI_BENCH_RUNS", 2).max(1);
    args::say_load();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "disk: {:.0} file creations/s in {} before the runs",
        creates_per_s(&dir.path().join("calibrate-files")),
        dir.path().display()
    );
    let inbox = dir.path().join("inbox");
    inbox::write_inbox(&inbox, n);
    let run_no = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let n = run_no.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        dir.path().join(format!("work-{n}"))
    };
    let credits = n * (runs * 4 + 1);

    rt.block_on(async {
        let rate = commits_per_s(dir.path()).await;
        println!(
            "disk: {rate:.0} durable SQLite commits/s (WAL, synchronous=FULL) before the runs"
        );
        let sim = hili::sim::serve(SimOptions {
            third_code: THIRD.into(),
            secret: SECRET.into(),
            credits: credits as u64,
            processing: Duration::ZERO,
            passthrough: true,
            // Kept until the bench ends, like the runs' outputs (see `run_once`).
            work_dir: Some(dir.path().join("sim-in-process")),
            ..SimOptions::default()
        })
        .await
        .expect("starting the simulator");
        let url = sim.base_url();
        for uc in [1, 4] {
            for _ in 0..runs {
                let f = run_once(&inbox, &work(), &url, uc).await;
                print(
                    &f,
                    &format!("CPU client+sim (upload_concurrency={uc}, sim in-process)"),
                );
            }
        }
        sim.shutdown().await;
    });

    let child = SimChild::start(credits, &dir.path().join("sim-child"));
    rt.block_on(async {
        for uc in [1, 4] {
            for _ in 0..runs {
                let sim0 = proc_cpu(child.child.id());
                let mut f = run_once(&inbox, &work(), &child.url, uc).await;
                f.sim_cpu = match (sim0, proc_cpu(child.child.id())) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                print(
                    &f,
                    &format!("client CPU (upload_concurrency={uc}, sim in child)"),
                );
            }
        }
    });
    drop(child);
    let rate = rt.block_on(commits_per_s(&dir.path().join("after")));
    println!("disk: {rate:.0} durable SQLite commits/s after the runs");
    if std::env::var_os("HILI_BENCH_KEEP").is_some() {
        // Deleting ~8,000 files slows file creation in this part of the disk for minutes
        // (see `creates_per_s`): back-to-back runs keep their files and delete them later.
        println!("kept {}", dir.keep().display());
    }
}
