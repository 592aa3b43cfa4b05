//! Hostile and broken input through the real pipeline (in-process, against the simulator):
//! each bad file ends `failed` with a reason naming it, the simulator's ledger shows no charge
//! for it, and the good photos of the same run are done. Also a file replaced while being
//! uploaded (the recorded hash is of the bytes sent), awkward names, and a file the daemon's
//! user cannot read (a child process run as `nobody`, because root ignores permission bits).

use std::ffi::OsStr;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::store::{Job, NewJob, State, Store};

use crate::helpers::*;

fn image_bytes(w: u32, h: u32, seed: u32, format: image::ImageFormat) -> Vec<u8> {
    let mut buf = Vec::new();
    photo(seed, w, h)
        .write_to(&mut Cursor::new(&mut buf), format)
        .unwrap();
    buf
}

/// Queues `path` directly (as the watcher or `hili add` would for a file they found), even
/// when it is not a regular file: the pipeline's own check must catch it.
async fn enqueue(store: &Store, env: &Env, path: &Path) {
    let (size, mtime_ns) = match std::fs::symlink_metadata(path) {
        Ok(m) => (m.len(), hili::media::mtime_ns(&m)),
        Err(_) => (0, 0),
    };
    store
        .enqueue(NewJob {
            source_path: path.to_path_buf(),
            source_root: env.inbox.clone(),
            output_dir: env.out.clone(),
            repair: Repair::Sr,
            rgb: None,
            size,
            mtime_ns,
            file_id: None,
            force: false,
        })
        .await
        .unwrap();
}

async fn jobs(env: &Env) -> Vec<Job> {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    jobs
}

fn job_for<'a>(jobs: &'a [Job], path: &Path) -> &'a Job {
    jobs.iter()
        .find(|j| j.source_path == path)
        .unwrap_or_else(|| panic!("no job for {}", path.display()))
}

/// The settings of a fast in-process run.
fn fast(env: &Env) -> hili::pipeline::Settings {
    let mut s = env.settings();
    s.poll_interval = Duration::from_millis(50);
    s
}

#[tokio::test]
async fn broken_inputs_fail_clearly_without_a_charge_and_the_run_goes_on() {
    let env = Env::new(fast_sim()).await;
    let inbox = env.inbox.clone();
    let jpeg = image_bytes(200, 120, 3, image::ImageFormat::Jpeg);
    let w = |name: &str, data: &[u8]| {
        let p = inbox.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };

    let good = w(
        "good.jpg",
        &image_bytes(48, 32, 1, image::ImageFormat::Jpeg),
    );
    let zero = w("zero.jpg", b"");
    // Header intact (through the frame header), cut at the start of the scan: refused by the
    // completeness check before any upload (tests/it/incomplete_input.rs covers the rest).
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let cut_pixels = w("cut-pixels.jpg", &jpeg[..sos + 2]);
    // Cut inside the frame header: refused before any upload.
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let cut_header = w("cut-header.jpg", &jpeg[..sof + 5]);
    let text = w("notes.jpg", b"shopping list: milk, eggs, a new camera\n");
    let huge = w("huge.png", &png_header_only(100_000, 100_000));
    let wide = w(
        "wide.jpg",
        &image_bytes(7000, 10, 2, image::ImageFormat::Jpeg),
    );
    let dir = inbox.join("x.jpg");
    std::fs::create_dir(&dir).unwrap();
    let fifo = inbox.join("pipe.jpg");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let looped = inbox.join("loop.jpg");
    std::os::unix::fs::symlink(inbox.join("loop2.jpg"), &looped).unwrap();
    std::os::unix::fs::symlink(&looped, inbox.join("loop2.jpg")).unwrap();
    // A real photo followed by 2 GB of holes: refused by size, never streamed to the service.
    let sparse = w(
        "sparse.jpg",
        &image_bytes(32, 16, 4, image::ImageFormat::Jpeg),
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let vanished = w(
        "vanished.jpg",
        &image_bytes(48, 32, 5, image::ImageFormat::Jpeg),
    );

    let store = env.store().await;
    let bad: Vec<(&PathBuf, &str)> = vec![
        (&zero, "is empty (0 bytes)"),
        (&cut_pixels, "truncated: JPEG ends at byte"),
        (&cut_header, "header is cut short"),
        (&text, "is not a JPEG or PNG image"),
        (&huge, "100000×100000 px"),
        (&wide, "7000×10 px"),
        (&dir, "is a directory"),
        (&fifo, "named pipe (FIFO)"),
        (&looped, "symbolic link loop"),
        (&sparse, "is 2147483648 bytes"),
        (&vanished, "no such file"),
    ];
    enqueue(&store, &env, &good).await;
    for (p, _) in &bad {
        enqueue(&store, &env, p).await;
    }
    store.close().await;
    // Deleted between enqueue and upload.
    std::fs::remove_file(&vanished).unwrap();

    let started = Instant::now();
    let summary = env.run_once(fast(&env)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (summary.done, summary.failed, summary.held),
        (1, bad.len() as u64, 0),
        "{summary:?}"
    );

    let all = jobs(&env).await;
    assert_eq!(job_for(&all, &good).state(), State::Done);
    for (p, expect) in &bad {
        let j = job_for(&all, p);
        let reason = j.reason.clone().unwrap_or_default();
        assert_eq!(j.state(), State::Failed, "{}: {reason}", p.display());
        assert!(!j.credit_spent, "{}: {reason}", p.display());
        assert!(
            reason.contains(&p.display().to_string()),
            "the reason names the file: {reason}"
        );
        assert!(reason.contains(expect), "{}: {reason}", p.display());
    }
    // Only the good photo was sent, and charged.
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 1, "{ledger:?}");
    assert_eq!(ledger.upload_requests, 1, "{ledger:?}");
    assert_eq!(ledger.duplicate_charges, 0);
    assert_eq!(env.outputs().len(), 1, "{:?}", env.outputs());
}

#[tokio::test]
async fn a_file_replaced_during_upload_records_the_hash_of_the_bytes_sent() {
    let env = Env::new(fast_sim()).await;
    let src = env.inbox.join("changing.jpg");
    let first = image_bytes(48, 32, 10, image::ImageFormat::Jpeg);
    let second = image_bytes(64, 40, 11, image::ImageFormat::Jpeg);
    std::fs::write(&src, &first).unwrap();
    env.add(Repair::Sr, None).await;

    // Right before the request (after the hash and the persisted intent), a new version is
    // moved over the file, as an editor's "save" does.
    let (path, data) = (src.clone(), second.clone());
    hili::failpoint::on("before-upload-request", src.clone(), move || {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, &data).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    });
    let summary = env.run_once(fast(&env)).await;
    assert_eq!(summary.done, 1, "{summary:?}");

    let all = jobs(&env).await;
    let j = job_for(&all, &src);
    let sent = hili::media::sha256_bytes(&second);
    assert_eq!(j.content_sha256.as_deref(), Some(sent.as_str()));
    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 1);
    assert_eq!(
        ledger.charges[0].sha256, sent,
        "the service got the new bytes"
    );
    // The result is of what was sent: 2x the new version's size.
    let out = image::open(j.output_path.clone().unwrap()).unwrap();
    assert_eq!((out.width(), out.height()), (128, 80));
}

async fn awkward_names(names: &[&[u8]]) {
    let env = Env::new(fast_sim()).await;
    for (i, n) in names.iter().enumerate() {
        write_jpeg(&env.inbox.join(OsStr::from_bytes(n)), 20 + i as u32);
    }
    assert_eq!(env.add(Repair::Sr, None).await, names.len());
    let summary = env.run_once(fast(&env)).await;
    assert_eq!(summary.done, names.len() as u64, "{summary:?}");
    for n in names.iter().copied() {
        let stem = &n[..n.len() - 4];
        let mut out = stem.to_vec();
        out.extend_from_slice(b".sr.jpg");
        let p = env.out.join(OsStr::from_bytes(&out));
        assert!(
            p.is_file(),
            "{} missing; have {:?}",
            p.display(),
            env.outputs()
        );
        image::open(&p).unwrap();
    }
    assert_eq!(env.sim.ledger().total_charges, names.len() as u64);
}

#[tokio::test]
async fn awkward_names_are_processed_and_named_alike() {
    awkward_names(&[
        b"with  spaces .jpg",
        "party \u{1f389}\u{1f4f7}.jpg".as_bytes(),
        b"caf\xe9-latin1.jpg",
        b"tab\there \"quoted\" back\\slash;semi.jpg",
    ])
    .await;
}

/// A newline in a file name reaches the multipart `filename` raw (reqwest escapes it as
/// `\<LF>`), which breaks the part's headers: the service answers 9001 and the photo fails.
#[tokio::test]
async fn a_newline_in_a_name_is_processed() {
    awkward_names(&[b"new\nline.jpg"]).await;
}

/// Root reads any file whatever its mode, so the daemon runs here as `nobody` (uid 65534)
/// in a tree it owns, next to a photo owned by root with mode 000.
#[tokio::test]
async fn an_unreadable_file_fails_clearly_for_the_daemon_user() {
    let env = Env::new(fast_sim()).await;
    let good = env.inbox.join("good.jpg");
    let locked = env.inbox.join("locked.jpg");
    write_jpeg(&good, 30);
    write_jpeg(&locked, 31);
    env.add(Repair::Sr, None).await;
    let chown = std::process::Command::new("chown")
        .arg("-R")
        .arg("65534:65534")
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();

    let mut cmd = env.hili();
    cmd.args(["run", "--once"]).uid(65534).gid(65534);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            println!("skipped: cannot switch to uid 65534 here ({e})");
            return;
        }
        Err(e) => panic!("spawn: {e}"),
    };
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3 (jobs need attention): {log}"
    );
    assert!(log.contains("locked.jpg: cannot be read"), "{log}");

    let all = jobs(&env).await;
    assert_eq!(job_for(&all, &good).state(), State::Done);
    let j = job_for(&all, &locked);
    assert_eq!(j.state(), State::Failed);
    assert!(
        j.reason
            .as_deref()
            .unwrap_or("")
            .contains("check its permissions"),
        "{:?}",
        j.reason
    );
    assert_eq!(env.sim.ledger().total_charges, 1);
}
