//! `hili add` over a 100,000-file tree (1,000 directories × 100 small JPEGs), timed as the
//! release binary a user runs: `--dry-run` (walk + header probe, no database: it must not
//! create one), the real add (enqueue into a fresh database), a second add over the same
//! database (every file already known), and `find -printf '%s %T@ %p\n'` as the yardstick.
//!
//! Run with `cargo bench --bench add`; prints figures to stdout. `HILI_BENCH_RUNS` sets the
//! repetitions (default 3).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 100;
const FILES: usize = DIRS * FILES_PER_DIR;

fn hili_exe() -> PathBuf {
    option_env!("CARGO_BIN_EXE_hili")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/hili"))
}

fn tiny_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding the bench JPEG");
    out.into_inner()
}

fn build_tree(root: &Path) {
    let jpeg = tiny_jpeg();
    for d in 0..DIRS {
        let sub = root.join(format!("{:02}/album {d:04}", d % 10));
        fs::create_dir_all(&sub).expect("creating directory");
        for f in 0..FILES_PER_DIR {
            fs::write(sub.join(format!("IMG_{f:04}.jpg")), &jpeg).expect("creating file");
        }
    }
}

/// Runs `cmd` with stdout to /dev/null; returns the wall time. Panics when it fails.
fn time(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("starting the command");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn report(what: &str, runs: &[Duration]) {
    for (i, d) in runs.iter().enumerate() {
        println!(
            "{what} run {}: {:7.0} ms  {:9.0} files/s",
            i + 1,
            d.as_secs_f64() * 1e3,
            FILES as f64 / d.as_secs_f64()
        );
    }
    let mut sorted = runs.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!(
        "{what} median: {:.0} files/s over {FILES} files",
        FILES as f64 / median.as_secs_f64()
    );
}

fn main() {
    let runs: usize = std::env::var("HILI_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    // Other work on a shared machine moves these figures: say how busy it was.
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", l.trim());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("tree");
    let out = dir.path().join("out");
    let db = dir.path().join("state/hili.db");
    let config = dir.path().join("hili.toml");
    fs::write(
        &config,
        format!("[queue]\ndatabase = \"{}\"\n", db.display()),
    )
    .expect("writing the config");

    let t = Instant::now();
    build_tree(&root);
    println!("built {FILES} files in {:.1} s", t.elapsed().as_secs_f64());

    let hili = |extra: &[&str]| {
        let mut c = Command::new(hili_exe());
        c.arg("add")
            .arg(&root)
            .args(["--repair", "sr", "--output"])
            .arg(&out)
            .args(extra)
            .env("HILI_CONFIG", &config)
            .env("HILI_LOG", "warn")
            .env_remove("RUST_LOG");
        c
    };
    let find = || {
        let mut c = Command::new("find");
        c.arg(&root).args(["-type", "f", "-printf", "%s %T@ %p\\n"]);
        c
    };

    // Warm the page cache (dentries, inodes, headers) for every contender alike.
    time(&mut find());
    time(&mut hili(&["--dry-run"]));
    assert!(!db.exists(), "a dry run created the database");

    let find_runs: Vec<Duration> = (0..runs).map(|_| time(&mut find())).collect();
    report("find -printf", &find_runs);

    let dry: Vec<Duration> = (0..runs).map(|_| time(&mut hili(&["--dry-run"]))).collect();
    assert!(!db.exists(), "a dry run created the database");
    report("hili add --dry-run", &dry);

    let mut real = Vec::new();
    let mut again = Vec::new();
    for _ in 0..runs {
        let _ = fs::remove_dir_all(db.parent().expect("db has a parent"));
        real.push(time(&mut hili(&[])));
        again.push(time(&mut hili(&[])));
    }
    report("hili add (fresh database)", &real);
    report("hili add (again, all already known)", &again);

    // A dry run next to an existing queue also looks every file up in it.
    let dry_db: Vec<Duration> = (0..runs).map(|_| time(&mut hili(&["--dry-run"]))).collect();
    report("hili add --dry-run (database present)", &dry_db);
}
