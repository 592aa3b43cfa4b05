//! Environment faults and the security of what hili leaves on disk: an output disk that is
//! full or unwritable (the job waits in `downloading`, nothing is lost, it completes when
//! space returns, or is held if the result expires meanwhile), a database locked by another
//! writer, a state directory deleted or a database damaged (a clear refusal at start, never a
//! silent new empty queue), the database's mode from the daemon path, and output paths
//! confined to the output directory (`..` in names, symlinked subdirectories).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hili::pipeline::{RunOptions, Settings};
use hili::repair::Repair;
use hili::sim::SimOptions;
use hili::store::{Job, NewJob, State};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

// ------------------------------------------------------------------ helpers

/// Log lines captured from the pipeline running on this test's thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log (the tests' runtime is single-threaded, so the pipeline's async
/// tasks log here) until the guard is dropped.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let cap = Captured::default();
    let w = cap.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (cap, tracing::subscriber::set_default(sub))
}

async fn jobs(env: &Env) -> Vec<Job> {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    jobs
}

async fn only_job(env: &Env) -> Job {
    let mut v = jobs(env).await;
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn fast(env: &Env) -> Settings {
    let mut s = env.settings();
    s.poll_interval = Duration::from_millis(50);
    s.retry_base = Duration::from_millis(50);
    s
}

/// Starts an in-process `--once` run in the background.
fn spawn_run(
    env: &Arc<Env>,
    settings: Settings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<hili::pipeline::Summary>,
) {
    let stop = CancellationToken::new();
    let (env, s) = (env.clone(), stop.clone());
    let opts = RunOptions {
        once: true,
        exit_when_blocked: true,
    };
    let h = tokio::spawn(async move { env.run_with(settings, opts, s).await });
    (stop, h)
}

fn temps_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(hili::media::TEMP_PREFIX)
        })
        .map(|e| e.into_path())
        .collect()
}

// ------------------------------------------------------------------ output disk

#[tokio::test]
async fn a_full_output_disk_keeps_the_job_downloading_until_space_returns() {
    let env = Arc::new(Env::new(slow_processing()).await);
    let tmpfs = match Tmpfs::mount_sized(&env.out, "4m") {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    write_jpeg(&env.inbox.join("p.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let (logs, _guard) = capture_logs();

    let (_stop, run) = spawn_run(&env, fast(&env));
    // The disk fills after the upload (with room, as hili checks), while it is processed.
    until(
        Duration::from_secs(10),
        "the job is processing",
        async || only_job(&env).await.state() == State::Processing,
    )
    .await;
    let filler = fill(&env.out);
    // Downloading, and staying there through several attempts.
    let seen = Instant::now();
    until(
        Duration::from_secs(10),
        "the job reaches downloading",
        async || only_job(&env).await.state() == State::Downloading,
    )
    .await;
    until(Duration::from_secs(10), "two failed writes", async || {
        logs.text().matches("No space left on device").count() >= 2
    })
    .await;
    assert_eq!(only_job(&env).await.state(), State::Downloading);
    assert!(temps_under(&env.out).is_empty(), "no temp file is left");
    let log = logs.text();
    assert!(
        log.contains("download failed, again in") && log.contains(&env.out.display().to_string()),
        "the log says what failed and where: {log}"
    );

    // Space returns: the run finishes by itself.
    std::fs::remove_file(&filler).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run finished")
        .unwrap();
    assert_eq!(summary.done, 1, "{summary:?}");
    let j = only_job(&env).await;
    let out = j.output_path.clone().unwrap();
    image::open(&out).unwrap();
    assert_eq!(
        hili::media::sha256_file(&out).unwrap(),
        j.output_sha256.unwrap()
    );
    assert_eq!(env.sim.ledger().total_charges, 1);
    println!("disk full for {:?}, then done", seen.elapsed());
    drop(tmpfs);
}

#[tokio::test]
async fn a_result_that_expires_while_the_output_is_unwritable_is_held() {
    let env = Arc::new(
        Env::new(SimOptions {
            retention: Duration::from_millis(800),
            ..slow_processing()
        })
        .await,
    );
    write_jpeg(&env.inbox.join("p.jpg"), 2);
    env.add(Repair::Sr, None).await;

    let (_stop, run) = spawn_run(&env, fast(&env));
    // After the upload: a regular file where the output directory should be.
    until(
        Duration::from_secs(10),
        "the job is processing",
        async || only_job(&env).await.state() == State::Processing,
    )
    .await;
    block_output(&env);
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run finished")
        .unwrap();
    assert_eq!(summary.held, 1, "{summary:?}");
    let j = only_job(&env).await;
    assert_eq!(j.state(), State::Held);
    let reason = j.reason.unwrap_or_default();
    assert!(reason.contains("result expired, credit lost"), "{reason}");
    assert!(reason.contains("p.jpg"), "{reason}");
    assert_eq!(std::fs::read(&env.out).unwrap(), b"in the way");
    assert_eq!(env.sim.ledger().total_charges, 1);
}

/// A `[[watch]]` table for the inbox, written into the config.
fn add_watch(env: &Env) {
    let table = format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\noutput = \"{}\"\nstable_for = \"300ms\"\nrescan_interval = \"1s\"\n",
        env.inbox.display(),
        env.out.display()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
}

/// `hili run` as a child, logging to a file; killed on drop.
struct Daemon(Child, PathBuf);

impl Daemon {
    fn start(env: &Env, umask0: bool) -> Daemon {
        let log = env.dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = env.hili();
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if umask0 {
            // SAFETY: umask is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::umask(0);
                    Ok(())
                });
            }
        }
        Daemon(cmd.spawn().unwrap(), log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// Processing long enough for a test to change the output folder between upload and download
/// (before the upload, hili would see it has no room and not upload at all).
fn slow_processing() -> SimOptions {
    SimOptions {
        processing: Duration::from_millis(1500),
        ..fast_sim()
    }
}

/// A regular file where the output directory should be (what the upload made of it removed).
fn block_output(env: &Env) {
    if env.out.is_dir() {
        std::fs::remove_dir_all(&env.out).unwrap();
    }
    std::fs::write(&env.out, b"in the way").unwrap();
}

async fn open_state(env: &Env) -> Option<State> {
    let store = hili::store::Store::open_existing(&env.db).await.ok()?;
    let s = store.all_jobs(None).await.ok()?.first().map(|j| j.state());
    store.close().await;
    s
}

#[tokio::test]
async fn the_daemon_keeps_running_while_the_output_is_unwritable() {
    let env = Env::new(slow_processing()).await;
    add_watch(&env);
    let mut d = Daemon::start(&env, true);
    write_jpeg(&env.inbox.join("p.jpg"), 3);
    until(
        Duration::from_secs(15),
        "the job is processing",
        async || open_state(&env).await == Some(State::Processing),
    )
    .await;
    block_output(&env);

    until(
        Duration::from_secs(15),
        "a logged failed write",
        async || d.log().contains("download failed, again in"),
    )
    .await;
    assert!(d.running());
    assert_eq!(open_state(&env).await, Some(State::Downloading));
    let log = d.log();
    assert!(
        log.contains(&format!("writing the result to {}", env.out.display())),
        "{log}"
    );

    // The database is private even under umask 0, as are its WAL files.
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", env.db.display()));
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        } else {
            assert!(!suffix.is_empty(), "the database exists");
        }
    }
    let state_dir = env.db.parent().unwrap();
    assert_eq!(
        std::fs::metadata(state_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    std::fs::remove_file(&env.out).unwrap();
    until(
        Duration::from_secs(15),
        "done once the blocker is gone",
        async || open_state(&env).await == Some(State::Done),
    )
    .await;
    assert!(d.running(), "the daemon is still running");
    assert_eq!(env.sim.ledger().total_charges, 1);
}

// ------------------------------------------------------------------ database

#[tokio::test]
async fn a_busy_database_is_waited_for() {
    use sqlx::Connection;
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("p.jpg"), 4);
    env.add(Repair::Sr, None).await;

    // Another writer holds the write lock for 5 s.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", env.db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let hold = Duration::from_secs(5);
    let release = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        other.close().await.unwrap();
    });

    let started = Instant::now();
    let summary = env.run_once(fast(&env)).await;
    release.await.unwrap();
    assert_eq!(summary.done, 1, "{summary:?}");
    assert!(
        started.elapsed() >= hold - Duration::from_millis(200),
        "it had to wait for the lock: {:?}",
        started.elapsed()
    );
    assert_eq!(env.sim.ledger().total_charges, 1);
}

/// `hili run --once` as a child: (exit code, stderr).
async fn run_once_child(env: &Env) -> (Option<i32>, String) {
    let mut cmd = env.hili();
    cmd.args(["run", "--once"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_deleted_state_directory_is_refused_not_started_afresh() {
    let env = Env::new(fast_sim()).await;
    add_watch(&env);
    write_jpeg(&env.inbox.join("p.jpg"), 5);
    let (code, log) = run_once_child(&env).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(env.sim.ledger().total_charges, 1);
    let marker = env.out.join(".hili-queue");
    assert!(std::fs::symlink_metadata(&marker).is_ok(), "marker written");

    // The state directory is lost.
    let state_dir = env.db.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&state_dir).unwrap();
    let (code, log) = run_once_child(&env).await;
    assert_eq!(code, Some(1), "{log}");
    for needle in [
        "holds results of another hili queue",
        &marker.display().to_string(),
        &env.db.display().to_string(),
        "restore",
        "delete",
    ] {
        assert!(log.contains(needle), "{needle:?} in: {log}");
    }
    assert!(!env.db.exists(), "no new empty queue was created");

    // `hili add` into the same output with a new database: refused too.
    let add = env
        .hili()
        .arg("add")
        .arg(&env.inbox)
        .args(["--repair", "sr", "--output"])
        .arg(&env.out)
        .output()
        .unwrap();
    assert!(add.status.success());
    let (code, log) = run_once_child(&env).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("holds results of another hili queue"), "{log}");
    assert_eq!(env.sim.ledger().total_charges, 1, "nothing was paid again");

    // Deleting the marker is the documented way to start afresh on purpose.
    std::fs::remove_file(&marker).unwrap();
    let (code, log) = run_once_child(&env).await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_start() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("p.jpg"), 6);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(fast(&env)).await;
    assert_eq!(summary.done, 1);

    // Garbage over the header.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&env.db)
        .unwrap();
    f.write_all(&[0xA5; 100]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let size = std::fs::metadata(&env.db).unwrap().len();

    let (code, log) = run_once_child(&env).await;
    assert_eq!(code, Some(1), "{log}");
    for needle in [
        &env.db.display().to_string(),
        "is damaged",
        "restore the file from a backup",
    ] {
        assert!(log.contains(needle), "{needle:?} in: {log}");
    }
    // Left as it was, for a backup restore or diagnosis.
    assert_eq!(std::fs::metadata(&env.db).unwrap().len(), size);
    assert_eq!(&std::fs::read(&env.db).unwrap()[..100], &[0xA5; 100][..]);
    assert_eq!(env.sim.ledger().total_charges, 1);
}

// ------------------------------------------------------------------ confinement

#[tokio::test]
async fn outputs_stay_in_the_output_directory() {
    let env = Arc::new(Env::new(fast_sim()).await);
    // `..` in the source path (as a careless script might queue it).
    let outside = env.dir.path().join("outside.jpg");
    write_jpeg(&outside, 7);
    std::fs::create_dir_all(env.inbox.join("sub")).unwrap();
    // A subdirectory of the output tree that is a link to elsewhere.
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&env.out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.out.join("linked")).unwrap();
    let linked_src = env.inbox.join("linked/q.jpg");
    write_jpeg(&linked_src, 8);

    let store = env.store().await;
    for p in [env.inbox.join("sub/../../outside.jpg"), linked_src.clone()] {
        let m = std::fs::metadata(&p).unwrap();
        store
            .enqueue(NewJob {
                source_path: p,
                source_root: env.inbox.clone(),
                output_dir: env.out.clone(),
                repair: Repair::Sr,
                rgb: None,
                size: m.len(),
                mtime_ns: hili::media::mtime_ns(&m),
                file_id: None,
                force: false,
            })
            .await
            .unwrap();
    }
    store.close().await;
    let (logs, _guard) = capture_logs();

    let (stop, run) = spawn_run(&env, fast(&env));
    until(
        Duration::from_secs(10),
        "the `..` job is done",
        async || jobs(&env).await.iter().any(|j| j.state() == State::Done),
    )
    .await;
    until(Duration::from_secs(10), "a refused write", async || {
        logs.text()
            .contains("is a symbolic link inside the output directory")
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run stopped")
        .unwrap();

    assert!(env.out.join("outside.sr.jpg").is_file());
    let all = jobs(&env).await;
    let linked = all.iter().find(|j| j.source_path == linked_src).unwrap();
    assert_eq!(linked.state(), State::Downloading, "waits for a person");
    let escaped: Vec<_> = walkdir::WalkDir::new(&elsewhere)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.depth() > 0)
        .map(|e| e.into_path())
        .collect();
    assert!(escaped.is_empty(), "written through the link: {escaped:?}");
    for p in files_under(&env.out) {
        assert!(p.starts_with(&env.out), "{}", p.display());
    }
    let log = logs.text();
    assert!(
        log.contains(&env.out.join("linked").display().to_string()),
        "{log}"
    );
}
