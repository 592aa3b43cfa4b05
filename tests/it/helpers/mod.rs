//! Shared test helpers: generated photos, a simulator plus a config and a queue (a SQLite file
//! in a temp directory, or a fresh database on the PostgreSQL test server: [`Env::on`]), and
//! ways to run hili in-process or as a child process against them.

#![allow(dead_code)]

pub(crate) mod backend;
mod daemon;
mod env;
pub(crate) mod pgcluster;
pub(crate) use daemon::Daemon;
pub(crate) use env::Env;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hili::pipeline::{Progress, Snapshot};
use hili::sim::SimOptions;
use image::{ImageBuffer, Rgb as Px, RgbImage};

pub(crate) const SECRET: &str = "it-secret-4f9a1c";
pub(crate) const THIRD: &str = "it-third";

/// A small photo whose pixels depend on `seed`, so different seeds give different content.
pub(crate) fn photo(seed: u32, w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        Px([
            (x.wrapping_mul(3).wrapping_add(seed * 37)) as u8,
            (y.wrapping_mul(5).wrapping_add(seed * 11)) as u8,
            ((x ^ y).wrapping_add(seed * 101)) as u8,
        ])
    })
}

/// A PNG signature and IHDR claiming `w`×`h` (correct CRC), and nothing after it.
pub(crate) fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut crc = !0u32;
    for &b in &v[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    v.extend_from_slice(&(!crc).to_be_bytes());
    v
}

pub(crate) fn write_jpeg(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    photo(seed, 48, 32)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

pub(crate) fn write_png(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    photo(seed, 40, 30)
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

/// Simulator options for fast tests: short processing, no faults.
pub(crate) fn fast_sim() -> SimOptions {
    SimOptions {
        third_code: THIRD.into(),
        secret: SECRET.into(),
        credits: 1000,
        processing: Duration::from_millis(150),
        seed: 42,
        ..SimOptions::default()
    }
}

/// How long any one command may take before it is killed and the test fails.
pub(crate) const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub(crate) fn both(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "exit code\n{}", self.both());
        self
    }
}

/// Runs `cmd args` to completion in `cwd`, bounded by [`COMMAND_LIMIT`] (killed past it), and
/// asserts that the secret key appears in neither of its outputs.
pub(crate) async fn run<I, S>(cmd: Command, cwd: &Path, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let child = cmd.spawn().expect("spawn hili");
    // On timeout the child is dropped, which kills it.
    let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{shown} ran longer than {COMMAND_LIMIT:?}"))
        .expect("wait for hili");
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "the secret key was printed by {shown}\n{}",
        out.both()
    );
    out
}

/// A tmpfs at `dir` (64 kB unless sized), unmounted on drop. Mounting needs root.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path) -> Result<Tmpfs, String> {
        Tmpfs::mount_sized(dir, "64k")
    }

    /// A tmpfs of `size` (`mount -o size=`, e.g. "4m") at `dir`.
    pub(crate) fn mount_sized(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` with one file; returns it.
pub(crate) fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![7u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    p
}

/// Waits (polling every 50 ms) until `f` holds; fails the test naming `what` past `limit`.
pub(crate) async fn until<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut f: F) {
    let deadline = std::time::Instant::now() + limit;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every job's state, by id.
pub(crate) async fn job_states(env: &Env) -> Vec<hili::store::State> {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    jobs.iter().map(|j| j.state()).collect()
}

/// `PRAGMA integrity_check` of the queue database at `db`, on a connection of its own: `Ok(())` when
/// SQLite answers "ok", else what it found.
pub(crate) async fn integrity(db: &std::path::Path) -> Result<(), String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

pub(crate) struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &Snapshot) {}
}
