//! Shared test helpers: generated photos, a simulator plus a config and database in a temp
//! directory, and ways to run hili in-process or as a child process against them.

#![allow(dead_code)]

pub(crate) mod backend;
mod daemon;
pub(crate) mod pgcluster;
pub(crate) use daemon::Daemon;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hili::api::client::{ApiClient, ClientOptions};
use hili::config::Config;
use hili::pipeline::{self, Ctx, Progress, RunOptions, Settings, Snapshot, Summary};
use hili::repair::{Repair, Rgb};
use hili::secret::Secret;
use hili::sim::{SimHandle, SimOptions};
use hili::store::{NewJob, Store};
use image::{ImageBuffer, Rgb as Px, RgbImage};
use tokio_util::sync::CancellationToken;

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

/// A temp directory with an inbox, an output dir, a database and a config file pointing at a
/// running simulator.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub inbox: PathBuf,
    pub out: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
}

impl Env {
    pub(crate) async fn new(opts: SimOptions) -> Env {
        Env::with_queue(opts, "").await
    }

    /// `queue_extra` is appended to the `[queue]` section of the config.
    pub(crate) async fn with_queue(opts: SimOptions, queue_extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sim = hili::sim::serve(opts).await.unwrap();
        let inbox = dir.path().join("inbox");
        let out = dir.path().join("out");
        let db = dir.path().join("state/hili.db");
        std::fs::create_dir_all(&inbox).unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let config = dir.path().join("hili.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nbase_url = \"{}\"\nthird_code = \"{THIRD}\"\nsecret_key_file = \"{}\"\n\
                 requests_per_second = 500.0\nburst = 50\ntimeout = \"5s\"\npoll_interval = \"100ms\"\n\n\
                 [queue]\ndatabase = \"{}\"\n{queue_extra}\n",
                sim.base_url(),
                secret_file.display(),
                db.display()
            ),
        )
        .unwrap();
        Env {
            dir,
            sim,
            inbox,
            out,
            db,
            config,
        }
    }

    pub(crate) fn config(&self) -> Config {
        Config::load(Some(&self.config)).unwrap()
    }

    pub(crate) async fn store(&self) -> Store {
        Store::open(&self.db).await.unwrap()
    }

    /// Queues every file under the inbox (as `hili add` does) with `repair`.
    pub(crate) async fn add(&self, repair: Repair, rgb: Option<Rgb>) -> usize {
        let store = self.store().await;
        let jobs: Vec<NewJob> = hili::media::walk(std::slice::from_ref(&self.inbox))
            .map(|f| f.unwrap())
            .map(|f| NewJob::from_found(f, self.out.clone(), repair, rgb))
            .collect();
        let n = jobs.len();
        store.enqueue_many(jobs).await.unwrap();
        store.close().await;
        n
    }

    pub(crate) fn client(&self) -> ApiClient {
        ApiClient::new(ClientOptions {
            base_url: self.sim.base_url(),
            third_code: THIRD.into(),
            secret: Secret::new(SECRET),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// The config's settings, with a short backoff so retries do not dominate test time.
    pub(crate) fn settings(&self) -> Settings {
        let mut s = Settings::from_config(&self.config());
        s.retry_base = Duration::from_millis(50);
        s
    }

    /// Runs the pipeline in-process until the queue is drained, bounded in time.
    pub(crate) async fn run_once(&self, settings: Settings) -> Summary {
        self.run_with(
            settings,
            RunOptions {
                once: true,
                exit_when_blocked: true,
            },
            CancellationToken::new(),
        )
        .await
    }

    pub(crate) async fn run_with(
        &self,
        settings: Settings,
        opts: RunOptions,
        stop: CancellationToken,
    ) -> Summary {
        let store = self.store().await;
        let ctx = Ctx::new(store, self.client(), settings, stop);
        let summary = tokio::time::timeout(
            Duration::from_secs(60),
            pipeline::run(ctx.clone(), opts, Arc::new(NoProgress)),
        )
        .await
        .expect("pipeline run timed out")
        .expect("pipeline run failed");
        ctx.store.close().await;
        summary
    }

    /// `hili ARGS` as a child process using this environment's config.
    pub(crate) fn hili(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hili"));
        c.env("HILI_CONFIG", &self.config)
            .env_remove("HILI_SECRET_KEY")
            .env_remove("HILI_CRASH_AT")
            .env("HILI_LOG", "info");
        c
    }

    /// `hili ARGS` left running in this environment's temp directory, its stderr (the log) in
    /// the file `log` there; returns the child and the log's path.
    pub(crate) fn spawn_logged(&self, args: &[&str], log: &str) -> (std::process::Child, PathBuf) {
        let path = self.dir.path().join(log);
        let file = std::fs::File::create(&path).unwrap();
        let child = self
            .hili()
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn hili");
        (child, path)
    }

    /// `hili ARGS` with this environment's config, in its temp directory, to completion.
    pub(crate) async fn run_hili<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.hili(), self.dir.path(), args).await
    }

    /// Every regular file under the output directory.
    pub(crate) fn outputs(&self) -> Vec<PathBuf> {
        files_under(&self.out)
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
