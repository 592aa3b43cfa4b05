//! `hili report` over N done jobs (`HILI_BENCH_JOBS`, default 500), timed as the release binary
//! a user runs: cold (the thumbnail cache emptied first, so every original and result is
//! decoded and scaled) and warm (every thumbnail read from the cache). Each job is a photo of
//! 1600×1200 and its 3200×2400 result, JPEGs with photo-like content; every file is distinct
//! (a numbered comment segment) so no two share a cached thumbnail.
//!
//! Run with `cargo bench --bench report`; prints figures to stdout. The files are written under
//! `$TMPDIR` and removed at the end. `HILI_BENCH_RUNS` sets the warm repetitions (default 3).

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::store::{EnqueueOutcome, NewJob, State, Store};

fn hili_exe() -> PathBuf {
    option_env!("CARGO_BIN_EXE_hili")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/hili"))
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    common::picture(w, h)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding a bench JPEG");
    out.into_inner()
}

/// `base` with a comment segment naming `n` after its SOI: the same pixels, its own content.
fn numbered(base: &[u8], n: usize) -> Vec<u8> {
    let payload = format!("hili report bench {n:08}");
    let mut v = Vec::with_capacity(base.len() + payload.len() + 4);
    v.extend_from_slice(&base[..2]);
    v.extend_from_slice(&[0xFF, 0xFE]);
    v.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    v.extend_from_slice(payload.as_bytes());
    v.extend_from_slice(&base[2..]);
    v
}

/// Writes `n` photos and their results, and records each job done in a fresh queue at `db`.
async fn record(db: &Path, root: &Path, n: usize) {
    let (inbox, out) = (root.join("in"), root.join("out"));
    fs::create_dir_all(&inbox).expect("creating the inbox");
    fs::create_dir_all(&out).expect("creating the output folder");
    let (photo, result) = (jpeg(1600, 1200), jpeg(3200, 2400));
    let mut jobs = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for i in 0..n {
        let source = inbox.join(format!("scan-{i:05}.jpg"));
        fs::write(&source, numbered(&photo, i)).expect("writing a photo");
        let meta = fs::metadata(&source).expect("stat of a photo");
        jobs.push(NewJob {
            source_path: source,
            source_root: inbox.clone(),
            output_dir: out.clone(),
            repair: Repair::Sr,
            rgb: None,
            size: meta.len(),
            mtime_ns: hili::media::mtime_ns(&meta),
            file_id: None,
            force: false,
        });
        let bytes = numbered(&result, i);
        let path = out.join(format!("scan-{i:05}.sr.jpg"));
        fs::write(&path, &bytes).expect("writing a result");
        results.push((path, hili::media::sha256_bytes(&bytes)));
    }
    let store = Store::open(db).await.expect("opening the bench queue");
    let outcomes = store.enqueue_many(jobs).await.expect("enqueue");
    for (o, (path, sha)) in outcomes.into_iter().zip(&results) {
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

/// One `hili report`; its time and the line saying what it made.
fn report(config: &Path, out: &Path) -> (Duration, String) {
    let t = Instant::now();
    let run = Command::new(hili_exe())
        .args(["report", "-o"])
        .arg(out)
        .env("HILI_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .expect("running hili report");
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "hili report failed ({}): {stdout}{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let made = stdout.lines().nth(1).unwrap_or("").trim().to_string();
    (took, made)
}

fn main() {
    let n: usize = std::env::var("HILI_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
        .max(1);
    let runs: usize = std::env::var("HILI_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::tempdir().expect("temp dir under $TMPDIR");
    let root = dir.path();
    let db = root.join("state/hili.db");
    let config = root.join("hili.toml");
    fs::write(
        &config,
        format!("[queue]\ndatabase = \"{}\"\n", db.display()),
    )
    .expect("config");
    let t = Instant::now();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(record(&db, root, n));
    println!(
        "{n} done jobs (1600×1200 photo, 3200×2400 result) written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let out = root.join("report.html");
    let cache = hili::report::cache_dir(&db);

    let _ = fs::remove_dir_all(&cache);
    let (cold, made) = report(&config, &out);
    println!("cold (no cache):  {:7.2} s   {made}", cold.as_secs_f64());
    let (took, made) = report(&config, &out);
    println!("warm (cached):    {:7.2} s   {made}", took.as_secs_f64());
    let warm = common::best(runs, || {
        report(&config, &out);
    });
    let size = fs::metadata(&out).map_or(0, |m| m.len());
    println!(
        "warm best of {runs}: {:.2} s; report {:.1} MB ({:.0} kB a job); {} core(s)",
        warm.as_secs_f64(),
        size as f64 / 1e6,
        size as f64 / 1e3 / n as f64,
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    if let Ok(l) = fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
}
