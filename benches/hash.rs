//! SHA-256 throughput of `media::sha256_file` on a 1 GB file, against `openssl dgst -sha256`
//! when the binary exists. Run with `cargo bench --bench hash`; prints figures to stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SIZE: usize = 1 << 30;
const RUNS: usize = 3;

fn best(mut f: impl FnMut() -> bool) -> Option<Duration> {
    (0..RUNS)
        .filter_map(|_| {
            let t = Instant::now();
            f().then(|| t.elapsed())
        })
        .min()
}

fn mb_per_s(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

fn write_file(path: &Path) -> std::io::Result<()> {
    // Non-zero, non-repeating-looking data from a seeded xorshift.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut out = BufWriter::new(File::create(path)?);
    for _ in 0..SIZE / chunk.len() {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&chunk)?;
    }
    out.flush()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("1g.bin");
    write_file(&path).expect("writing the 1 GB file");
    // Warm the page cache identically for both contenders.
    let sha = hili::media::sha256_file(&path).expect("hashing");

    let ours = best(|| hili::media::sha256_file(&path).is_ok()).expect("hashing");
    println!(
        "sha256_file   1 GiB: {:8.1} ms  {:7.1} MB/s  ({sha})",
        ours.as_secs_f64() * 1e3,
        mb_per_s(ours)
    );

    let mut openssl_sha = String::new();
    let theirs = best(|| {
        match Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .arg(&path)
            .output()
        {
            Ok(o) if o.status.success() => {
                openssl_sha = String::from_utf8_lossy(&o.stdout).trim().to_string();
                true
            }
            _ => false,
        }
    });
    match theirs {
        Some(t) => {
            println!(
                "openssl dgst  1 GiB: {:8.1} ms  {:7.1} MB/s  ({openssl_sha})",
                t.as_secs_f64() * 1e3,
                mb_per_s(t)
            );
            println!(
                "ratio (ours / openssl speed): {:.2}",
                t.as_secs_f64() / ours.as_secs_f64()
            );
            assert!(openssl_sha.ends_with(&sha), "digests differ");
        }
        None => println!("openssl not available: no comparison"),
    }
}
