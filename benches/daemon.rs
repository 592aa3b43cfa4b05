//! The daemon at rest and its reaction time, measured on the release binary a user runs:
//!
//! 1. idle cost: `hili run` watching 10,000 files in 1,000 folders (all already queued; the
//!    simulator has no credits, so nothing is uploaded) — CPU time used over 60 s and resident
//!    memory, read from /proc;
//! 2. latency: a fresh daemon and database, photos dropped one at a time; the time from the
//!    file's last write to its upload starting (the `uploading` event), minus `stable_for`.
//!
//! Run with `cargo bench --bench daemon`. `HILI_BENCH_IDLE_SECS` shortens the idle window.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hili::store::{State, Store};

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 10;
const STABLE_FOR_MS: u64 = 1000;

fn hili_exe() -> PathBuf {
    option_env!("CARGO_BIN_EXE_hili")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/hili"))
}

fn jpeg(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, (seed % 251) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding JPEG");
    out.into_inner()
}

/// `hili sim` as a child; returns it and its base URL.
fn sim(credits: u64) -> (Child, String) {
    let mut child = Command::new(hili_exe())
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--passthrough",
            "--processing",
            "0s",
        ])
        .args(["--credits", &credits.to_string()])
        .env("HILI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting hili sim");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("sim stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("sim address");
    (child, line.trim().to_string())
}

fn config(dir: &Path, url: &str, watch: &Path) -> PathBuf {
    let path = dir.join("hili.toml");
    let text = format!(
        "[api]\nbase_url = \"{url}\"\nthird_code = \"demo\"\nsecret_key = \"demo-secret\"\n\
         requests_per_second = 1000.0\nburst = 100\npoll_interval = \"200ms\"\n\n\
         [queue]\ndatabase = \"{}\"\n\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\n\
         output = \"{}\"\nstable_for = \"{STABLE_FOR_MS}ms\"\n",
        dir.join("hili.db").display(),
        watch.display(),
        dir.join("out").display()
    );
    std::fs::write(&path, text).expect("writing config");
    path
}

fn daemon(config: &Path) -> Child {
    Command::new(hili_exe())
        .arg("run")
        .env("HILI_CONFIG", config)
        .env("HILI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting hili run")
}

/// User + system CPU of a process, from /proc/PID/stat.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn jobs(db: &Path) -> Vec<hili::store::Job> {
    match Store::open_existing(db).await {
        Ok(s) => {
            let j = s.all_jobs(None).await.unwrap_or_default();
            s.close().await;
            j
        }
        Err(_) => Vec::new(),
    }
}

async fn idle() {
    let t = tempfile::tempdir().expect("temp dir");
    let tree = t.path().join("watch");
    let photo = jpeg(1);
    for d in 0..DIRS {
        let sub = tree.join(format!("{:02}/album {d:04}", d % 10));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            std::fs::write(sub.join(format!("IMG_{f:04}.jpg")), &photo).expect("write");
        }
    }
    let (mut sim, url) = sim(0);
    let cfg = config(t.path(), &url, &tree);
    let mut d = daemon(&cfg);
    let total = DIRS * FILES_PER_DIR;
    let started = Instant::now();
    while jobs(&t.path().join("hili.db")).await.len() < total {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the daemon did not queue the tree"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "daemon: queued {total} files in {DIRS} folders in {:.1} s (start-up scan + stability wait)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secs: u64 = std::env::var("HILI_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let before = cpu(d.id());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let used = cpu(d.id()) - before;
    println!(
        "daemon idle: {:.3} s CPU over {secs} s watching {total} files in {DIRS} folders; RSS {} MB (peak {} MB)  [targets: < 0.5 s, < 40 MB]",
        used.as_secs_f64(),
        status_kb(d.id(), "VmRSS:") / 1024,
        status_kb(d.id(), "VmHWM:") / 1024
    );
    let _ = d.kill();
    let _ = d.wait();
    let _ = sim.kill();
    let _ = sim.wait();
}

async fn latency() {
    let t = tempfile::tempdir().expect("temp dir");
    let inbox = t.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("mkdir");
    let (mut sim, url) = sim(1000);
    let cfg = config(t.path(), &url, &inbox);
    let mut d = daemon(&cfg);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut worst = 0i64;
    let mut all = Vec::new();
    for i in 0..5u32 {
        let p = inbox.join(format!("drop-{i}.jpg"));
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(&jpeg(100 + i)).expect("write");
        drop(f);
        let written = now_ms();
        let started = Instant::now();
        let upload_at = loop {
            let js = jobs(&t.path().join("hili.db")).await;
            if let Some(j) = js.iter().find(|j| j.source_path == p) {
                let s = Store::open_existing(&t.path().join("hili.db"))
                    .await
                    .expect("db");
                let ev = s.events(j.id).await.unwrap_or_default();
                s.close().await;
                if let Some(e) = ev.iter().find(|e| e.to == State::Uploading) {
                    break e.at_ms;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no upload for {}",
                p.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let beyond = upload_at - written - STABLE_FOR_MS as i64;
        worst = worst.max(beyond);
        all.push(beyond);
    }
    println!(
        "daemon latency: upload started {all:?} ms after stable_for ({STABLE_FOR_MS} ms) had passed; worst {worst} ms  [target: < 1000 ms]"
    );
    let _ = d.kill();
    let _ = d.wait();
    let _ = sim.kill();
    let _ = sim.wait();
}

#[tokio::main]
async fn main() {
    if !hili_exe().exists() {
        eprintln!("build the release binary first: cargo build --release");
        std::process::exit(1);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    idle().await;
    latency().await;
}
