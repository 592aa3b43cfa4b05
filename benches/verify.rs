//! `hili verify` over 1 GiB of results (256 files of 4 MiB, recorded done in a fresh queue),
//! timed as the release binary a user runs, against `sha256sum` over the same files (one
//! process, and one per core with the files split between them, as `hili verify` does) and
//! `cat` of the files to /dev/null, the speed of reading alone. Warm page cache by default;
//! with `HILI_BENCH_COLD=1` the caches are dropped before every run (root only: it slows
//! everything else on the machine for a moment), so the figures are those of the disk.
//!
//! Run with `cargo bench --bench verify`; prints figures to stdout. The 1 GiB is written under
//! `$TMPDIR` and removed at the end. `HILI_BENCH_RUNS` sets the repetitions (default 3).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::store::{EnqueueOutcome, NewJob, State, Store};

const FILES: usize = 256;
const FILE_SIZE: usize = 4 << 20;
const TOTAL: usize = FILES * FILE_SIZE;

/// One contender: runs once over the 1 GiB.
type Case<'a> = Box<dyn Fn() + 'a>;

fn hili_exe() -> PathBuf {
    option_env!("CARGO_BIN_EXE_hili")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/hili"))
}

/// Writes the results (seeded xorshift data, so nothing compresses or dedups) and returns
/// each with its SHA-256.
fn write_results(out: &Path) -> Vec<(PathBuf, String)> {
    fs::create_dir_all(out).expect("creating the output folder");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = vec![0u8; FILE_SIZE];
    (0..FILES)
        .map(|i| {
            for word in data.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            let path = out.join(format!("scan-{i:04}.sr.jpg"));
            fs::write(&path, &data).expect("writing a result");
            (path, hili::media::sha256_bytes(&data))
        })
        .collect()
}

/// A queue where each result is the done job of a source that is gone (moved away after its
/// job), so `hili verify` hashes exactly the 1 GiB of results.
async fn record(db: &Path, root: &Path, results: &[(PathBuf, String)]) {
    let store = Store::open(db).await.expect("opening the bench queue");
    let jobs = results
        .iter()
        .enumerate()
        .map(|(i, _)| NewJob {
            source_path: root.join(format!("in/scan-{i:04}.jpg")),
            source_root: root.join("in"),
            output_dir: root.join("out"),
            repair: Repair::Sr,
            rgb: None,
            size: FILE_SIZE as u64,
            mtime_ns: 1,
            file_id: None,
            force: false,
        })
        .collect();
    let outcomes = store.enqueue_many(jobs).await.expect("enqueue");
    for (o, (path, sha)) in outcomes.into_iter().zip(results) {
        let EnqueueOutcome::Queued(id) = o else {
            panic!("not queued: {o:?}");
        };
        store
            .finish(id, State::Queued, path, sha)
            .await
            .expect("recording a result");
    }
    store.close().await;
}

fn drop_caches(cold: bool) {
    if cold {
        let _ = Command::new("sync").status();
        if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
            panic!("HILI_BENCH_COLD=1 needs root to drop the page cache: {e}");
        }
    }
}

/// Best and median of `runs` timings of `f`, each after `drop_caches(cold)`.
fn measure(runs: usize, cold: bool, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            drop_caches(cold);
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[0], v[v.len() / 2])
}

fn check(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let runs: usize = std::env::var("HILI_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let cold = std::env::var("HILI_BENCH_COLD").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().expect("temp dir under $TMPDIR");
    let root = dir.path();
    let results = write_results(&root.join("out"));
    let db = root.join("state/hili.db");
    let config = root.join("hili.toml");
    fs::write(
        &config,
        format!("[queue]\ndatabase = \"{}\"\n", db.display()),
    )
    .expect("config");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(record(&db, root, &results));
    let paths: Vec<&Path> = results.iter().map(|(p, _)| p.as_path()).collect();
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);

    let hili = || {
        let out = Command::new(hili_exe())
            .arg("verify")
            .env("HILI_CONFIG", &config)
            .stdin(Stdio::null())
            .output()
            .expect("running hili verify");
        check(out, "hili verify");
    };
    let sha256sum = |parts: usize| {
        let children: Vec<_> = paths
            .chunks(paths.len().div_ceil(parts))
            .map(|chunk| {
                Command::new("sha256sum")
                    .args(chunk)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("running sha256sum")
            })
            .collect();
        for c in children {
            let status = c.wait_with_output().expect("waiting for sha256sum").status;
            assert!(status.success(), "sha256sum failed: {status}");
        }
    };
    // Warm-up (and a check that everything matches) before timing.
    hili();
    sha256sum(1);

    let mb_s = |d: Duration| TOTAL as f64 / 1e6 / d.as_secs_f64();
    // What the disk (or the page cache) gives at all: the yardstick of "disk speed".
    let cat = || {
        let out = Command::new("cat")
            .args(&paths)
            .stdout(Stdio::null())
            .output()
            .expect("running cat");
        check(out, "cat");
    };
    let cases: [(&str, Case); 4] = [
        ("cat > /dev/null", Box::new(cat)),
        ("hili verify", Box::new(hili)),
        ("sha256sum (1 process)", Box::new(|| sha256sum(1))),
        ("sha256sum (1 per core)", Box::new(|| sha256sum(cores))),
    ];
    println!(
        "1 GiB in {FILES} files of {} MiB, {} cache, best and median of {runs}, {cores} core(s):",
        FILE_SIZE >> 20,
        if cold { "cold" } else { "warm" }
    );
    for (name, f) in &cases {
        let (best, median) = measure(runs, cold, f);
        println!(
            "{name:<24} best {:7.0} ms {:7.1} MB/s   median {:7.0} ms {:7.1} MB/s",
            best.as_secs_f64() * 1e3,
            mb_s(best),
            median.as_secs_f64() * 1e3,
            mb_s(median)
        );
    }
    if let Ok(l) = fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
}
