//! Fixity and provenance: `hili verify` against the queue's SHA-256s, `hili export` rows
//! against the store, and the output folder's `manifest-sha256.txt` against the files —
//! including after a real `hili run --once` child is killed mid-write and mid-run.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hili::media::manifest::{self, MANIFEST_NAME, ManifestEntry};
use hili::repair::Repair;
use hili::store::{Job, State};
use serde_json::Value;

use crate::helpers::*;

const MANIFEST_ON: &str = "\n[output]\nmanifest = true\n";

async fn env_with_photos(n: u32, extra: &str) -> Env {
    let env = Env::with_queue(fast_sim(), extra).await;
    add_photos(&env, 0..n).await;
    env
}

async fn add_photos(env: &Env, seeds: std::ops::Range<u32>) {
    for i in seeds {
        write_jpeg(&env.inbox.join(format!("p{i:03}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
}

async fn jobs(env: &Env) -> Vec<Job> {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    jobs
}

fn done(jobs: &[Job]) -> Vec<&Job> {
    jobs.iter().filter(|j| j.state() == State::Done).collect()
}

/// The manifest of the output folder, which must parse (never torn).
fn read_manifest(env: &Env) -> Vec<ManifestEntry> {
    manifest::read(&env.out)
        .unwrap_or_else(|e| panic!("torn or unreadable manifest: {e}"))
        .expect("a manifest in the output folder")
}

/// Every line names a file with that very content, and a done job that recorded it.
fn assert_manifest_true(env: &Env, listed: &[ManifestEntry], jobs: &[Job]) {
    let recorded: BTreeMap<PathBuf, String> = done(jobs)
        .iter()
        .map(|j| {
            (
                j.output_path.clone().unwrap(),
                j.output_sha256.clone().unwrap(),
            )
        })
        .collect();
    let mut sorted = listed.to_vec();
    sorted.sort();
    assert_eq!(sorted, listed, "the manifest is sorted by path");
    for e in listed {
        let path = env.out.join(&e.path);
        assert_eq!(
            hili::media::sha256_file(&path).unwrap(),
            e.sha256,
            "{path:?}"
        );
        assert_eq!(
            recorded.get(&path),
            Some(&e.sha256),
            "{path:?} is a done result"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_changed_and_a_missing_result_and_passes_when_all_match() {
    let env = env_with_photos(3, "").await;
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let ok = env.run_hili(["verify"]).await;
    ok.expect_code(0);
    assert!(
        ok.stdout.contains("verified 3 result(s) and 3 source(s)")
            && ok.stdout.contains("all match"),
        "{}",
        ok.both()
    );

    let jobs = jobs(&env).await;
    let out = |i: usize| jobs[i].output_path.clone().unwrap();
    let mut bytes = std::fs::read(out(0)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40; // one flipped bit, same size
    std::fs::write(out(0), bytes).unwrap();
    std::fs::remove_file(out(1)).unwrap();
    let changed_source = jobs[2].source_path.clone();
    std::fs::write(&changed_source, b"not the photo that was sent").unwrap();

    let bad = env.run_hili(["verify"]).await;
    bad.expect_code(3);
    let line_with = |what: &str, path: &Path| {
        bad.stdout
            .lines()
            .any(|l| l.starts_with(what) && l.contains(&path.display().to_string()))
    };
    assert!(line_with("changed: result", &out(0)), "{}", bad.both());
    assert!(line_with("missing: result", &out(1)), "{}", bad.both());
    assert!(
        line_with("changed: source", &changed_source),
        "{}",
        bad.both()
    );
    assert!(
        !line_with("", &out(2)),
        "the intact result is not named:\n{}",
        bad.both()
    );
    assert!(bad.stdout.contains("3 problem(s)"), "{}", bad.both());

    // --output limits the check to results below that folder: elsewhere, nothing to report.
    let elsewhere = env.dir.path().join("elsewhere");
    let args = [
        OsStr::new("verify"),
        OsStr::new("--output"),
        elsewhere.as_os_str(),
    ];
    let scoped = env.run_hili(args).await;
    scoped.expect_code(0);
    assert!(
        scoped.stdout.contains("verified 0 result(s)"),
        "{}",
        scoped.both()
    );
}

/// `hili export` rows, parsed from JSON or CSV, keyed by column.
fn json_rows(out: &Out) -> Vec<BTreeMap<String, Value>> {
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.both()));
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone().into_iter().collect())
        .collect()
}

fn csv_rows(out: &Out) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{l}");
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect()
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_rows_match_the_store_in_csv_and_json_and_since_selects_later_jobs() {
    let env = env_with_photos(2, "").await;
    env.run_hili(["run", "--once"]).await.expect_code(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A BMP is converted before its upload: its row says how.
    photo(9, 40, 30)
        .save_with_format(env.inbox.join("scan.bmp"), image::ImageFormat::Bmp)
        .unwrap();
    add_photos(&env, 2..3).await;
    env.run_hili(["run", "--once"]).await.expect_code(0);

    let jobs = jobs(&env).await;
    assert_eq!(done(&jobs).len(), 4);
    let json = env.run_hili(["export", "--format", "json"]).await;
    json.expect_code(0);
    let rows = json_rows(&json);
    assert_eq!(rows.len(), 4);
    for (row, j) in rows.iter().zip(&jobs) {
        if j.source_path.extension().is_some_and(|e| e == "bmp") {
            let conversion = text(&row["conversion"]);
            assert!(conversion.to_lowercase().contains("bmp"), "{row:?}");
            continue;
        }
        let s = |k: &str| text(&row[k]);
        assert_eq!(s("job_id"), j.id.0.to_string());
        assert_eq!(s("source_path"), j.source_path.display().to_string());
        assert_eq!(s("source_sha256"), j.content_sha256.clone().unwrap());
        assert_eq!(
            s("result_path"),
            j.output_path.clone().unwrap().display().to_string()
        );
        assert_eq!(s("result_sha256"), j.output_sha256.clone().unwrap());
        assert_eq!(
            (s("state"), s("repair"), s("mdf")),
            ("done".into(), "sr".into(), j.mdf().unwrap().into())
        );
        assert_eq!(
            row["conversion"],
            Value::Null,
            "no conversion is recorded yet"
        );
        // The credits are read once a credit epoch (here: at a run's first upload and at its
        // end): `credits_before` is the epoch's opening count, `credits_after` the first
        // reading after the charge — lower by the run's two uploads.
        let before = j.credits_before.unwrap();
        assert_eq!(row["credits_before"].as_u64(), Some(before));
        assert_eq!(row["credits_after"].as_u64(), Some(before - 2), "{row:?}");
        assert!(
            s("uploaded_at").ends_with('Z') && s("uploaded_at") >= s("queued_at"),
            "{row:?}"
        );
    }

    let csv = env.run_hili(["export", "--format", "csv"]).await;
    csv.expect_code(0);
    let csv = csv_rows(&csv);
    assert_eq!(csv.len(), rows.len());
    for (c, j) in csv.iter().zip(&rows) {
        for (k, v) in j {
            assert_eq!(&c[k], &text(v), "column {k}");
        }
    }

    let later = env
        .run_hili(["export", "--format", "json", "--since", between.as_str()])
        .await;
    let later = json_rows(later.expect_code(0));
    let later_ids: Vec<String> = later.iter().map(|r| text(&r["job_id"])).collect();
    let second: Vec<String> = jobs[2..].iter().map(|j| j.id.0.to_string()).collect();
    assert_eq!(later_ids, second, "only the jobs of the second run");
    let all = env
        .run_hili(["export", "--format", "csv", "--since", "2000-01-01"])
        .await;
    assert_eq!(csv_rows(all.expect_code(0)).len(), 4);
    let none = env
        .run_hili(["export", "--format", "json", "--since", "2999-01-01"])
        .await;
    assert!(json_rows(none.expect_code(0)).is_empty());
    // A date it cannot read is a usage error.
    env.run_hili(["export", "--format", "csv", "--since", "last week"])
        .await
        .expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_events_carry_premis_type_time_object_agent_and_outcome() {
    let env = env_with_photos(1, "").await;
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let out = env
        .run_hili(["export", "--format", "json", "--events"])
        .await;
    let rows = json_rows(out.expect_code(0));
    let job = &jobs(&env).await[0];
    let types: Vec<String> = rows.iter().map(|r| text(&r["type"])).collect();
    assert_eq!(
        types,
        [
            "enqueue",
            "begin_upload",
            "uploaded",
            "begin_download",
            "finish"
        ]
    );
    let outcomes: Vec<String> = rows.iter().map(|r| text(&r["outcome"])).collect();
    assert_eq!(
        outcomes,
        ["queued", "uploading", "processing", "downloading", "done"]
    );
    let agent = format!("hili/{}", env!("CARGO_PKG_VERSION"));
    for r in &rows {
        assert_eq!(text(&r["agent"]), agent, "{r:?}");
        assert_eq!(text(&r["agent_service"]), "Hili PhotoEnhance");
        assert_eq!(text(&r["agent_repair"]), "sr");
        assert_eq!(
            text(&r["object_path"]),
            job.source_path.display().to_string()
        );
        assert_eq!(
            text(&r["object_sha256"]),
            job.content_sha256.clone().unwrap()
        );
        let t = text(&r["time"]);
        assert!(humantime::parse_rfc3339(&t).is_ok(), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_lists_every_result_and_a_crash_mid_write_leaves_the_old_one_whole() {
    let env = env_with_photos(3, MANIFEST_ON).await;
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let first = read_manifest(&env);
    assert_eq!(first.len(), 3);
    assert_manifest_true(&env, &first, &jobs(&env).await);
    env.run_hili(["verify"]).await.expect_code(0);

    // The next run dies right before its first manifest replace: its result is done in the
    // queue, the manifest on disk is the previous one, whole.
    add_photos(&env, 3..6).await;
    let mut crash = env.hili();
    crash.env("HILI_CRASH_AT", "before-manifest-rename");
    let crashed = run(crash, env.dir.path(), ["run", "--once"]).await;
    assert!(
        crashed.stderr.contains("aborting on purpose"),
        "{}",
        crashed.both()
    );
    let after_crash = jobs(&env).await;
    assert!(
        done(&after_crash).len() > 3,
        "a result landed before the crash"
    );
    assert_eq!(read_manifest(&env), first, "the old manifest, untouched");
    let verify = env.run_hili(["verify"]).await;
    verify.expect_code(3);
    assert!(
        verify.stdout.contains("manifest incomplete"),
        "{}",
        verify.both()
    );

    // The next run lists everything, and leaves no temp file behind.
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let jobs = jobs(&env).await;
    let complete = read_manifest(&env);
    assert_eq!(complete.len(), 6);
    assert_manifest_true(&env, &complete, &jobs);
    let temps: Vec<_> = files_under(&env.out)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".hili-tmp")
        })
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    env.run_hili(["verify"]).await.expect_code(0);

    // A hand-edited manifest is caught.
    let path = env.out.join(MANIFEST_NAME);
    let edited =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen(&complete[0].sha256, &"0".repeat(64), 1);
    std::fs::write(&path, edited).unwrap();
    let verify = env.run_hili(["verify"]).await;
    verify.expect_code(3);
    assert!(
        verify.stdout.contains("manifest differs"),
        "{}",
        verify.both()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_run_leaves_a_whole_manifest_that_the_next_run_completes() {
    let env = env_with_photos(60, MANIFEST_ON).await;
    let (mut child, log) = env.spawn_logged(&["run", "--once"], "killed.log");
    until(
        Duration::from_secs(60),
        "five results in the manifest",
        async || {
            manifest::read(&env.out)
                .ok()
                .flatten()
                .is_some_and(|m| m.len() >= 5)
        },
    )
    .await;
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(
        still_running,
        "the run ended before the kill:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let jobs_then = jobs(&env).await;
    let listed = read_manifest(&env);
    assert!(listed.len() >= 5);
    assert_manifest_true(&env, &listed, &jobs_then);
    assert!(done(&jobs_then).len() < 60, "killed before the end");

    // A kill during an upload may leave one job held as "charged, result unknown" (exit 3);
    // every job that is done is listed.
    let rerun = env.run_hili(["run", "--once"]).await;
    assert!(matches!(rerun.code, Some(0 | 3)), "{}", rerun.both());
    let jobs = jobs(&env).await;
    let complete = read_manifest(&env);
    assert!(done(&jobs).len() >= 59, "{}", rerun.both());
    assert_eq!(complete.len(), done(&jobs).len());
    assert_manifest_true(&env, &complete, &jobs);
    env.run_hili(["verify"]).await.expect_code(0);
}
