//! Throughput of `media::walk` over a 100,000-file tree (1,000 directories × 100 small files).
//! Run with `cargo bench --bench walk`; prints figures to stdout.

use std::fs;
use std::time::{Duration, Instant};

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 100;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("tree");
    let t = Instant::now();
    for d in 0..DIRS {
        let sub = root.join(format!("{:02}/album {d:04}", d % 10));
        fs::create_dir_all(&sub).expect("creating directory");
        for f in 0..FILES_PER_DIR {
            fs::write(sub.join(format!("IMG_{f:04}.jpg")), b"tiny").expect("creating file");
        }
    }
    println!(
        "built {} files in {:.1} s",
        DIRS * FILES_PER_DIR,
        t.elapsed().as_secs_f64()
    );

    let mut runs: Vec<Duration> = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0usize;
        for item in hili::media::walk(std::slice::from_ref(&root)) {
            item.expect("walk error");
            n += 1;
        }
        runs.push(t.elapsed());
        assert_eq!(n, DIRS * FILES_PER_DIR);
    }
    for (i, d) in runs.iter().enumerate() {
        let rate = (DIRS * FILES_PER_DIR) as f64 / d.as_secs_f64();
        println!(
            "walk run {}: {:7.1} ms  {:9.0} files/s",
            i + 1,
            d.as_secs_f64() * 1e3,
            rate
        );
    }
}
