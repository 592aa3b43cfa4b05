//! Integration tests: the drop-folder watcher, in-process. A temp dir, a Store and a Watcher;
//! outcomes are read from the store (no pipeline). Real time, small `stable_for`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hili::repair::Repair;
use hili::store::{Job, Store};
use hili::watch::{After, PollMode, ScanReport, WatchConfig, Watcher, scan_once};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const STABLE: Duration = Duration::from_secs(1);

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

impl Rig {
    async fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = Store::open(&root.join("state/hili.db")).await.unwrap();
        Rig {
            _tmp: tmp,
            root,
            store,
        }
    }

    /// A watch on `<root>/<name>` (created unless `create` is false), output outside it.
    fn watch(&self, name: &str, create: bool) -> WatchConfig {
        let path = self.root.join(name);
        if create {
            fs::create_dir_all(&path).unwrap();
        }
        let mut w = WatchConfig::new(path, Repair::Sr, self.root.join(format!("{name}-out")));
        w.stable_for = STABLE;
        w.rescan_interval = Duration::from_secs(60);
        w
    }

    fn start(&self, watches: Vec<WatchConfig>) -> Running {
        let shutdown = CancellationToken::new();
        let notify = Arc::new(Notify::new());
        let watcher = Watcher::start(
            watches,
            self.store.clone(),
            shutdown.clone(),
            notify.clone(),
        );
        Running {
            watcher,
            shutdown,
            notify,
        }
    }

    async fn jobs(&self) -> Vec<Job> {
        self.store.all_jobs(None).await.unwrap()
    }

    /// path → sizes of its jobs.
    async fn by_path(&self) -> BTreeMap<PathBuf, Vec<u64>> {
        let mut m: BTreeMap<PathBuf, Vec<u64>> = BTreeMap::new();
        for j in self.jobs().await {
            m.entry(j.source_path).or_default().push(j.size);
        }
        m
    }

    /// Waits (bounded) until `paths` all have a job; returns how long it took.
    async fn wait_for(&self, paths: &[PathBuf], within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let have = self.by_path().await;
            if paths.iter().all(|p| have.contains_key(p)) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "not queued within {within:?}: {:?}; queued: {:?}",
                paths
                    .iter()
                    .filter(|p| !have.contains_key(*p))
                    .collect::<Vec<_>>(),
                have.keys().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Running {
    watcher: Watcher,
    shutdown: CancellationToken,
    notify: Arc<Notify>,
}

impl Running {
    async fn ready(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.watcher.first_scan_done())
            .await
            .expect("first scan did not finish within 10 s");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.watcher.join())
            .await
            .expect("watcher did not stop within 10 s");
    }
}

fn put(path: &Path, bytes: &[u8]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_files_are_queued_within_stable_for_plus_one_second() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    let files: Vec<PathBuf> = (0..3)
        .map(|i| put(&w.path.join(format!("IMG_{i}.jpg")), &[i as u8; 1000]))
        .chain([put(&w.path.join("sub/deeper/a.JPG"), b"x")])
        .collect();
    let took = rig.wait_for(&files, Duration::from_secs(10)).await;
    assert!(took < STABLE + Duration::from_secs(1), "took {took:?}");
    tokio::time::timeout(Duration::from_secs(1), run.notify.notified())
        .await
        .expect("on_enqueued was not notified");
    let jobs = rig.jobs().await;
    assert_eq!(jobs.len(), 4);
    for j in &jobs {
        assert_eq!(j.source_root, w.path);
        assert_eq!(j.output_dir, w.output);
        assert_eq!((j.repair, j.rgb), (Repair::Sr, None));
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_chunks_is_queued_once_with_its_final_size() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    let path = w.path.join("slow-scan.jpg");
    let mut f = fs::File::create(&path).unwrap();
    // 10 chunks over 3 s: never still for stable_for (1 s).
    for i in 0..10u8 {
        f.write_all(&[i; 4096]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(f);
    let done = Instant::now();
    assert!(
        rig.jobs().await.is_empty(),
        "queued while still being written"
    );
    rig.wait_for(std::slice::from_ref(&path), Duration::from_secs(10))
        .await;
    assert!(done.elapsed() < STABLE + Duration::from_secs(1));
    tokio::time::sleep(STABLE + Duration::from_millis(500)).await;
    assert_eq!(rig.by_path().await[&path], vec![40960]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_moved_in_is_queued() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    let outside = rig.root.join("staging/batch");
    put(&outside.join("a.jpg"), b"a");
    put(&outside.join("b.png"), b"b");
    put(&outside.join("nested/c.jpg"), b"c");
    put(&outside.join(".DS_Store"), b"junk");
    fs::rename(&outside, w.path.join("batch")).unwrap();
    let want: Vec<PathBuf> = ["batch/a.jpg", "batch/b.png", "batch/nested/c.jpg"]
        .iter()
        .map(|p| w.path.join(p))
        .collect();
    rig.wait_for(&want, Duration::from_secs(10)).await;
    // A single file renamed in from outside, too.
    let single = put(&rig.root.join("staging/d.jpg"), b"d");
    fs::rename(&single, w.path.join("d.jpg")).unwrap();
    rig.wait_for(&[w.path.join("d.jpg")], Duration::from_secs(10))
        .await;
    assert_eq!(rig.jobs().await.len(), 4);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_before_start_are_queued_by_the_first_scan() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let old: Vec<PathBuf> = (0..20)
        .map(|i| put(&w.path.join(format!("d{}/p{i}.jpg", i % 4)), &[i as u8; 10]))
        .collect();
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    rig.wait_for(&old, STABLE + Duration::from_secs(5)).await;
    assert_eq!(rig.jobs().await.len(), 20);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_names_globs_and_written_dirs_are_never_queued() {
    let rig = Rig::new().await;
    let mut w = rig.watch("in", true);
    w.ignore = vec!["*.raw".into(), "/private".into()];
    w.output = w.path.join("out");
    w.after = After::Move;
    w.done_dir = Some(w.path.join("done"));
    w.failed_dir = Some(w.path.join("failed"));
    let junk = [
        ".DS_Store",
        "x.part",
        "~$x.jpg",
        "._x.jpg",
        "Thumbs.db",
        "@eaDir/x.jpg",
        "sub/@eaDir/SYNOPHOTO_THUMB.jpg",
        "photo.RAW",
        "private/a.jpg",
        "out/IMG_1_sr.jpg",
        "done/IMG_0.jpg",
        "failed/IMG_2.jpg",
        "failed/IMG_2.jpg.reason.txt",
    ];
    // Half before start (scan), half after (events).
    for name in &junk[..6] {
        put(&w.path.join(name), b"junk");
    }
    let before = put(&w.path.join("good-before.jpg"), b"ok");
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    for name in &junk[6..] {
        put(&w.path.join(name), b"junk");
    }
    let after = put(&w.path.join("sub/good-after.jpg"), b"ok");
    let private_ok = put(&w.path.join("sub/private/fine.jpg"), b"ok");
    rig.wait_for(&[before, after, private_ok], Duration::from_secs(10))
        .await;
    tokio::time::sleep(STABLE + Duration::from_millis(500)).await;
    let queued: Vec<PathBuf> = rig.by_path().await.into_keys().collect();
    assert_eq!(queued.len(), 3, "{queued:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_files_without_events() {
    let rig = Rig::new().await;
    let mut w = rig.watch("in", true);
    w.poll = PollMode::Always;
    w.poll_interval = Duration::from_millis(500);
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    let a = put(&w.path.join("a.jpg"), b"a");
    let b = put(&w.path.join("deep/b.jpg"), b"b");
    // Worst case: found one poll interval late, then stable_for (two stats) later.
    rig.wait_for(
        &[a, b],
        w.poll_interval + STABLE * 2 + Duration::from_secs(2),
    )
    .await;
    // A moved-in folder is found by the next poll too.
    let staged = rig.root.join("staging/batch");
    put(&staged.join("c.jpg"), b"c");
    fs::rename(&staged, w.path.join("batch")).unwrap();
    rig.wait_for(&[w.path.join("batch/c.jpg")], Duration::from_secs(6))
        .await;
    assert_eq!(rig.jobs().await.len(), 3);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_queues_nothing_new() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let files: Vec<PathBuf> = (0..5)
        .map(|i| put(&w.path.join(format!("p{i}.jpg")), &[i as u8; 5]))
        .collect();
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    rig.wait_for(&files, Duration::from_secs(10)).await;
    run.stop().await;
    // Same store, new watcher (a restart), and a rescan-heavy config.
    let mut w2 = w.clone();
    w2.rescan_interval = Duration::from_millis(300);
    let run = rig.start(vec![w2.clone()]);
    run.ready().await;
    tokio::time::sleep(STABLE * 2 + Duration::from_millis(500)).await;
    assert_eq!(rig.jobs().await.len(), 5);
    // Touching a file (same size, new mtime) is a new version: queued once more.
    let f = fs::File::options().write(true).open(&files[0]).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let t0 = Instant::now();
    while rig.jobs().await.len() < 6 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "new version not queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(STABLE + Duration::from_millis(700)).await;
    assert_eq!(rig.jobs().await.len(), 6);
    run.stop().await;
    // And a one-shot scan agrees that nothing is new.
    let report = scan_once(&[w2], &rig.store).await.unwrap();
    assert_eq!(
        report,
        ScanReport {
            seen: 5,
            ..ScanReport::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_is_retried_while_another_works() {
    let rig = Rig::new().await;
    let mut missing = rig.watch("later", false);
    missing.rescan_interval = Duration::from_secs(1); // retry period: min(rescan, 10 s)
    let present = rig.watch("now", true);
    let run = rig.start(vec![missing.clone(), present.clone()]);
    run.ready().await; // a missing folder does not hold READY back
    let a = put(&present.path.join("a.jpg"), b"a");
    rig.wait_for(&[a], Duration::from_secs(10)).await;
    fs::create_dir_all(&missing.path).unwrap();
    let b = put(&missing.path.join("b.jpg"), b"b");
    rig.wait_for(std::slice::from_ref(&b), Duration::from_secs(10))
        .await;
    // The folder disappears and comes back: still watched.
    fs::remove_dir_all(&missing.path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = put(&missing.path.join("c.jpg"), b"c");
    rig.wait_for(&[c], Duration::from_secs(10)).await;
    assert_eq!(rig.jobs().await.len(), 3);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_folder_and_keeps_the_others() {
    let rig = Rig::new().await;
    let a = rig.watch("a", true);
    let run = rig.start(vec![a.clone()]);
    run.ready().await;
    let a1 = put(&a.path.join("1.jpg"), b"1");
    rig.wait_for(&[a1], Duration::from_secs(10)).await;
    let mut b = rig.watch("b", true);
    b.repair = Repair::Colour;
    run.watcher.reload(vec![a.clone(), b.clone()]);
    let b1 = put(&b.path.join("1.jpg"), b"1");
    let a2 = put(&a.path.join("2.jpg"), b"2");
    rig.wait_for(&[b1.clone(), a2], Duration::from_secs(10))
        .await;
    assert_eq!(rig.jobs().await.len(), 3);
    let jobs = rig.jobs().await;
    let b_job = jobs.iter().find(|j| j.source_path == b1).unwrap();
    assert_eq!(b_job.repair, Repair::Colour);
    // Removing a folder from the list stops it.
    run.watcher.reload(vec![b.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&a.path.join("3.jpg"), b"3");
    let b2 = put(&b.path.join("2.jpg"), b"2");
    rig.wait_for(&[b2], Duration::from_secs(10)).await;
    tokio::time::sleep(STABLE).await;
    assert_eq!(rig.jobs().await.len(), 4);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_once_waits_for_stability_and_counts() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    let missing = rig.watch("gone", false);
    put(&w.path.join("a.jpg"), b"a");
    put(&w.path.join("b.jpg"), b"b");
    put(&w.path.join(".DS_Store"), b"x");
    let t0 = Instant::now();
    let r = scan_once(&[w.clone(), missing], &rig.store).await.unwrap();
    assert!(t0.elapsed() >= STABLE, "queued without a stability wait");
    assert_eq!(
        r,
        ScanReport {
            seen: 2,
            enqueued: 2,
            ignored: 1,
            errors: 1,
            still_changing: 0
        }
    );
    // Nothing new: no wait at all.
    let t0 = Instant::now();
    let r = scan_once(std::slice::from_ref(&w), &rig.store)
        .await
        .unwrap();
    assert_eq!((r.seen, r.enqueued), (2, 0));
    assert!(t0.elapsed() < STABLE);
    assert_eq!(rig.jobs().await.len(), 2);
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_kb() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Idle cost of watching 10,000 files in 1,000 folders (run alone:
/// `cargo test --test it watch::idle_cost -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 40 s, run alone"]
async fn idle_cost_of_10k_files_in_1k_folders() {
    let rig = Rig::new().await;
    let w = rig.watch("in", true);
    for d in 0..1000 {
        for f in 0..10 {
            put(&w.path.join(format!("d{d:04}/p{f}.jpg")), b"x");
        }
    }
    let rss_start = rss_kb();
    let t0 = Instant::now();
    let run = rig.start(vec![w.clone()]);
    run.ready().await;
    let first_scan = t0.elapsed();
    // counts(), not all_jobs(): loading 10k rows would inflate the RSS being measured.
    while rig.store.counts().await.unwrap().values().sum::<u64>() < 10_000 {
        assert!(t0.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_queued = t0.elapsed();
    let (c0, r0) = (cpu_time(), rss_kb());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = cpu_time() - c0;
    run.stop().await;
    // Restart: the cache comes from the store, and a rescan every second.
    let mut fast = w.clone();
    fast.rescan_interval = Duration::from_secs(1);
    let run = rig.start(vec![fast]);
    run.ready().await;
    let c1 = cpu_time();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let per_rescan = (cpu_time() - c1) / 10;
    run.stop().await;
    eprintln!(
        "first scan {first_scan:?}, all queued {all_queued:?}; idle CPU over 20 s: {idle:?}; \
         test process RSS {} MB (before the watcher {} MB, idle {} MB); CPU per full rescan of 10k known files: {per_rescan:?}",
        rss_kb() / 1024,
        rss_start / 1024,
        r0 / 1024
    );
    assert_eq!(rig.jobs().await.len(), 10_000);
    assert!(
        idle < Duration::from_millis(170),
        "idle CPU {idle:?} per 20 s"
    );
}
