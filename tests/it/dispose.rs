//! What happens to sources after their job, where a photo could be lost: a scan saved again
//! under the same name while its first version was processing (`delete` and `move`), a
//! symlinked subfolder with `delete`, and moves into a `done_dir` on another filesystem —
//! what they keep, and a kill at each step of one. Against the simulator, whose results
//! differ from their sources.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hili::repair::Repair;
use hili::store::{Job, State, Store};

use crate::helpers::*;

/// Appends a `[[watch]]` table on the inbox to the environment's config.
fn add_watch(env: &Env, extra: &str) {
    let table = format!(
        "\n[[watch]]\npath = \"{}\"\nrepair = \"sr\"\noutput = \"{}\"\nrescan_interval = \"2s\"\n{extra}\n",
        env.inbox.display(),
        env.out.display()
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap();
    f.write_all(table.as_bytes()).unwrap();
}

/// The queue's jobs (none while the database does not exist yet).
async fn jobs(env: &Env) -> Vec<Job> {
    let Ok(store) = Store::open_existing(&env.db).await else {
        return Vec::new();
    };
    let jobs = store.all_jobs(None).await.unwrap_or_default();
    store.close().await;
    jobs
}

/// The details of a job's events, one string.
async fn event_notes(env: &Env, job: &Job) -> String {
    let store = env.store().await;
    let events = store.events(job.id).await.unwrap();
    store.close().await;
    events
        .iter()
        .filter_map(|e| e.detail.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn sha(p: &Path) -> String {
    hili::media::sha256_file(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replaced_during_processing_is_processed_as_its_own_job_not_disposed_of() {
    for after in ["delete", "move"] {
        let mut opts = fast_sim();
        // Long enough to replace the file while the first version is processing; the new
        // version settles (stable_for) only after the first job is done and disposed of, so
        // the identity check, not the later job, is what keeps it.
        opts.processing = Duration::from_millis(1500);
        let env = Env::new(opts).await;
        let done_dir = env.dir.path().join("done");
        let mut extra = format!("after = \"{after}\"\nstable_for = \"3s\"\n");
        if after == "move" {
            extra.push_str(&format!("done_dir = \"{}\"\n", done_dir.display()));
        }
        add_watch(&env, &extra);
        let scan = env.inbox.join("scan.jpg");
        write_jpeg(&scan, 1);
        let first = sha(&scan);
        let d = Daemon::start(&env);
        until(
            Duration::from_secs(30),
            "first job processing",
            async || {
                jobs(&env)
                    .await
                    .iter()
                    .any(|j| j.state() == State::Processing)
            },
        )
        .await;
        if after == "delete" {
            // Saved again in place: the same inode, new size/mtime and content.
            write_jpeg(&scan, 2);
        } else {
            // Saved to a temp name and renamed over: a new inode.
            let tmp = env.inbox.join(".scan.jpg.saving");
            write_jpeg(&tmp, 2);
            fs::rename(&tmp, &scan).unwrap();
        }
        let second = sha(&scan);
        assert_ne!(first, second);
        until(
            Duration::from_secs(40),
            "both versions done and disposed of",
            async || {
                let js = jobs(&env).await;
                js.len() == 2 && js.iter().all(|j| j.state() == State::Done) && !scan.exists()
            },
        )
        .await;
        d.stop();

        let js = jobs(&env).await;
        let hashes: Vec<_> = js
            .iter()
            .map(|j| j.content_sha256.clone().unwrap())
            .collect();
        assert_eq!(hashes, [first.clone(), second.clone()], "{after}");
        let ledger = env.sim.ledger();
        assert_eq!(ledger.total_charges, 2, "{after}");
        let charged: BTreeSet<_> = ledger.charges.iter().map(|c| c.sha256.clone()).collect();
        assert_eq!(
            charged,
            BTreeSet::from([first.clone(), second.clone()]),
            "{after}"
        );
        let outputs = env.outputs();
        assert_eq!(outputs.len(), 2, "{after}: {outputs:?}");
        let out_hashes: BTreeSet<_> = outputs.iter().map(|o| sha(o)).collect();
        assert_eq!(out_hashes.len(), 2, "{after}: two different results");
        assert!(out_hashes.is_disjoint(&BTreeSet::from([first.clone(), second.clone()])));

        let notes = event_notes(&env, &js[0]).await;
        assert!(
            notes.contains("left") && notes.contains("scan.jpg"),
            "{after}: {notes}"
        );
        let notes = event_notes(&env, &js[1]).await;
        if after == "delete" {
            assert!(notes.contains("deleted"), "{notes}");
        } else {
            assert!(notes.contains("moved"), "{notes}");
            // Only the version processed last is there, once: the first was replaced by the
            // scanner itself, and nothing unprocessed was moved.
            let moved = files_under(&done_dir);
            assert_eq!(moved, [done_dir.join("scan.jpg")], "{moved:?}");
            assert_eq!(sha(&moved[0]), second);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_subfolder_with_delete_leaves_the_link_target_alone() {
    let env = Env::new(fast_sim()).await;
    add_watch(&env, "after = \"delete\"\nstable_for = \"200ms\"\n");
    let outside = env.dir.path().join("elsewhere");
    write_jpeg(&outside.join("theirs.jpg"), 1);
    let theirs = sha(&outside.join("theirs.jpg"));
    std::os::unix::fs::symlink(&outside, env.inbox.join("linked")).unwrap();
    write_jpeg(&env.inbox.join("own.jpg"), 2);
    // `hili add` follows the link: the linked photo is a job under the watch folder.
    assert_eq!(env.add(Repair::Sr, None).await, 2);

    let out = env.hili().args(["run", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let js = jobs(&env).await;
    assert_eq!(js.len(), 2, "{stderr}");
    assert!(js.iter().all(|j| j.state() == State::Done), "{js:?}");
    assert_eq!(env.outputs().len(), 2);
    // Its own photo was deleted; the one behind the link was processed and left alone.
    assert!(!env.inbox.join("own.jpg").exists());
    assert_eq!(sha(&outside.join("theirs.jpg")), theirs);
    let linked = js
        .iter()
        .find(|j| j.source_path.ends_with("linked/theirs.jpg"))
        .unwrap();
    let notes = event_notes(&env, linked).await;
    assert!(notes.contains("outside the watch folder"), "{notes}");
}

/// A photo in the inbox with a mode, owner and mtime unlike the defaults; returns its path.
fn odd_photo(env: &Env) -> (PathBuf, i64) {
    let src = env.inbox.join("sub/p.jpg");
    write_jpeg(&src, 7);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&src, Some(4321), Some(4322)).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
        .unwrap();
    (src, 1_600_000_000_123_456_789)
}

/// A watch with `after = "move"` into a done_dir on another filesystem (tmpfs /dev/shm).
async fn cross_fs_env() -> (Env, tempfile::TempDir, PathBuf) {
    let env = Env::new(fast_sim()).await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed");
    let done_dir = shm.path().join("done");
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_ne!(dev(&env.inbox), dev(shm.path()), "not another filesystem");
    add_watch(
        &env,
        &format!(
            "after = \"move\"\ndone_dir = \"{}\"\nstable_for = \"200ms\"\n",
            done_dir.display()
        ),
    );
    (env, shm, done_dir)
}

fn assert_moved_once(done_dir: &Path, src: &Path, photo_sha: &str, mtime_ns: i64, step: &str) {
    assert!(!src.exists(), "{step}: source still in the inbox");
    let moved = files_under(done_dir);
    assert_eq!(
        moved,
        [done_dir.join("sub/p.jpg")],
        "{step}: a duplicate or a temp file in done_dir"
    );
    let m = fs::metadata(&moved[0]).unwrap();
    assert_eq!(sha(&moved[0]), photo_sha, "{step}");
    assert_eq!(m.mode() & 0o7777, 0o640, "{step}: mode");
    assert_eq!(hili::media::mtime_ns(&m), mtime_ns, "{step}: mtime");
    assert_eq!((m.uid(), m.gid()), (4321, 4322), "{step}: owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_filesystem_keeps_mtime_mode_and_owner() {
    let (env, _shm, done_dir) = cross_fs_env().await;
    let (src, mtime) = odd_photo(&env);
    let photo = sha(&src);
    let out = env.hili().args(["run", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_moved_once(&done_dir, &src, &photo, mtime, "plain");
    assert_eq!(env.sim.ledger().total_charges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_each_step_of_a_cross_filesystem_move_leaves_no_duplicate_or_orphan() {
    for step in [
        "move:after-intent",
        "move:during-copy",
        "move:after-copy",
        "move:after-place",
        "move:after-unlink",
    ] {
        let (env, _shm, done_dir) = cross_fs_env().await;
        let (src, mtime) = odd_photo(&env);
        let photo = sha(&src);
        let out = env
            .hili()
            .args(["run", "--once"])
            .env("HILI_CRASH_AT", step)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("aborting on purpose"),
            "{step}: the fail point was not reached:\n{stderr}"
        );
        let out = env.hili().args(["run", "--once"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{step}: {stderr}");

        assert_moved_once(&done_dir, &src, &photo, mtime, step);
        let store = env.store().await;
        assert!(store.pending_moves().await.unwrap().is_empty(), "{step}");
        let js = store.all_jobs(None).await.unwrap();
        store.close().await;
        assert_eq!(js.len(), 1, "{step}");
        assert_eq!(js[0].state(), State::Done, "{step}");
        let notes = event_notes(&env, &js[0]).await;
        assert!(notes.contains("moved"), "{step}: {notes}");
        assert_eq!(env.sim.ledger().total_charges, 1, "{step}: paid twice");
    }
}

#[tokio::test]
async fn a_later_job_at_the_same_path_claims_it_and_the_disposed_mark_is_noted_once() {
    let env = Env::new(fast_sim()).await;
    let store = env.store().await;
    let job = |mtime_ns| hili::store::NewJob {
        source_path: env.inbox.join("scan.jpg"),
        source_root: env.inbox.clone(),
        output_dir: env.out.clone(),
        repair: Repair::Sr,
        rgb: None,
        size: 10,
        mtime_ns,
        file_id: Some(hili::media::FileId { dev: 1, ino: 2 }),
        force: false,
    };
    let first = store.enqueue(job(1)).await.unwrap().id();
    assert_eq!(
        store
            .later_job_at(first, &env.inbox.join("scan.jpg"))
            .await
            .unwrap(),
        None
    );
    let second = store.enqueue(job(2)).await.unwrap().id();
    assert_eq!(
        store
            .later_job_at(first, &env.inbox.join("scan.jpg"))
            .await
            .unwrap(),
        Some(second)
    );
    let got = store.get(first).await.unwrap().unwrap();
    assert_eq!(got.file_id, Some(hili::media::FileId { dev: 1, ino: 2 }));

    store
        .mark_disposed(second, Some("deleted it"))
        .await
        .unwrap();
    store
        .mark_disposed(second, Some("deleted it again"))
        .await
        .unwrap();
    assert_eq!(
        store
            .later_job_at(first, &env.inbox.join("scan.jpg"))
            .await
            .unwrap(),
        None
    );
    let notes: Vec<_> = store
        .events(second)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.detail)
        .filter(|d| d.starts_with("source:"))
        .collect();
    assert_eq!(notes, ["source: deleted it"]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_source_moved_after_a_restart_is_not_counted_as_a_new_failure() {
    let env = Env::new(fast_sim()).await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed");
    let failed_dir = shm.path().join("failed");
    add_watch(
        &env,
        &format!(
            "failed_dir = \"{}\"\nstable_for = \"200ms\"\n",
            failed_dir.display()
        ),
    );
    fs::write(env.inbox.join("bad.jpg"), b"not a photo at all").unwrap();
    let out = env
        .hili()
        .args(["run", "--once"])
        .env("HILI_CRASH_AT", "move:after-copy")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aborting on purpose"), "{stderr}");
    // The restart only finishes the move: this run failed nothing, so it exits 0.
    let out = env.hili().args(["run", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        files_under(&failed_dir).len(),
        2,
        "the photo and its reason"
    );
    assert!(failed_dir.join("bad.jpg.reason.txt").exists());
    assert!(!env.inbox.join("bad.jpg").exists());
    assert_eq!(env.sim.ledger().total_charges, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --test it dispose::measure -- --ignored --nocapture"]
async fn measure_dispose_pass_of_300_sources() {
    use hili::pipeline::dispose::Disposition;
    use hili::watch::After;
    for (label, after, shm) in [
        ("move same-fs", After::Move, false),
        ("move cross-fs", After::Move, true),
        ("delete", After::Delete, false),
    ] {
        let mut opts = fast_sim();
        opts.processing = Duration::from_millis(5);
        let env = Env::new(opts).await;
        for i in 0..300 {
            write_jpeg(&env.inbox.join(format!("d{}/p{i}.jpg", i % 10)), i);
        }
        env.add(Repair::Sr, None).await;
        env.run_once(env.settings()).await;
        let shm_dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let done = if shm {
            shm_dir.path().join("done")
        } else {
            env.dir.path().join("done")
        };
        let ctx = hili::pipeline::Ctx::new(
            env.store().await,
            env.client(),
            env.settings(),
            tokio_util::sync::CancellationToken::new(),
        );
        ctx.set_dispositions(vec![Disposition {
            root: env.inbox.clone(),
            after,
            done_dir: Some(done.clone()),
            failed_dir: None,
        }]);
        let t = Instant::now();
        hili::pipeline::dispose::pass(&ctx).await.unwrap();
        let el = t.elapsed();
        assert_eq!(files_under(&env.inbox).len(), 0);
        if after == After::Move {
            assert_eq!(files_under(&done).len(), 300);
        }
        println!(
            "{label}: 300 sources in {:.2}s = {:.2} ms each",
            el.as_secs_f64(),
            el.as_secs_f64() * 1000.0 / 300.0
        );
        ctx.store.close().await;
    }
}
