//! The `hili` binary as a user runs it: a child process, its stdout, stderr and exit code.
//! `hili sim` as a server child; `credits` and `doctor`; `add` (recursion, dry run, refusals,
//! idempotence); `run --once` and its exit codes; `status`, `jobs`, `retry`; `demo`. Every
//! command's output is checked for the secret key, and the database file for both the key and
//! its permissions.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hili::repair::Repair;
use hili::sim::{Faults, SimOptions};
use hili::store::State;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// `hili ARGS` with the environment's config, in its temp directory.
async fn hili<I, S>(env: &Env, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    env.run_hili(args).await
}

/// The bare binary: no config from the environment.
fn bare_hili() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hili"));
    for var in [
        "HILI_CONFIG",
        "HILI_SECRET_KEY",
        "HILI_CRASH_AT",
        "HILI_SIM_SECRET",
        "CREDENTIALS_DIRECTORY",
    ] {
        c.env_remove(var);
    }
    c.env("HILI_LOG", "info");
    c
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{}", out.both()))
}

/// A config like the environment's but reading the key from a file holding `secret`.
fn config_with_secret(env: &Env, secret: &str) -> PathBuf {
    let key = env.dir.path().join("other-secret");
    std::fs::write(&key, secret).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        &env.dir.path().join("secret").display().to_string(),
        &key.display().to_string(),
    );
    let path = env.dir.path().join("other.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `add inbox --repair REPAIR --output out`, then `extra`.
fn add_inbox<'a>(repair: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["add", "inbox", "--repair", repair, "--output", "out"];
    args.extend_from_slice(extra);
    args
}

/// `add inbox --repair sr --output out`, then `run --once`; both exit 0.
async fn add_and_run_once(env: &Env) {
    hili(env, add_inbox("sr", &[])).await.expect_code(0);
    hili(env, ["run", "--once"]).await.expect_code(0);
}

/// Asserts `out` exited with `code` and its stdout contains each of `what`.
#[track_caller]
fn assert_stdout(out: &Out, code: i32, what: &[&str]) {
    out.expect_code(code);
    for w in what {
        assert!(out.stdout.contains(w), "no {w:?} in stdout\n{}", out.both());
    }
}

fn assert_decodes(files: &[PathBuf]) {
    for f in files {
        image::open(f).unwrap_or_else(|e| panic!("{} does not decode: {e}", f.display()));
    }
}

#[tokio::test]
async fn sim_child_prints_its_url_first_and_credits_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bare_hili();
    cmd.args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--credits",
        "7",
        "--third-code",
        "cli-third",
        "--processing",
        "100ms",
    ])
    .env("HILI_SIM_SECRET", SECRET);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut sim = cmd.spawn().expect("spawn hili sim");

    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("hili sim printed nothing within 20 s")
        .unwrap()
        .expect("hili sim closed stdout without printing its URL");
    let port: u16 = first
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("first stdout line is not the URL: {first:?}"));
    assert_ne!(port, 0);

    let key = dir.path().join("key");
    std::fs::write(&key, SECRET).unwrap();
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbase_url = \"{first}\"\nthird_code = \"cli-third\"\nsecret_key_file = \"{}\"\ntimeout = \"5s\"\n",
            key.display()
        ),
    )
    .unwrap();
    let out = run(
        bare_hili(),
        dir.path(),
        ["--config".as_ref(), config.as_os_str(), "credits".as_ref()],
    )
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout, "7 credits left\n", "{}", out.both());

    sim.start_kill().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), sim.wait_with_output())
        .await
        .expect("hili sim did not exit after kill")
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!stderr.contains(SECRET), "sim logged the secret:\n{stderr}");
    assert!(
        stderr.contains("/api/third/company/nums"),
        "the sim logs each request:\n{stderr}"
    );
}

#[tokio::test]
async fn credits_and_doctor_against_the_simulator() {
    let env = Env::new(fast_sim()).await;
    let out = hili(&env, ["credits"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1000 credits left\n");

    let out = hili(&env, ["doctor"]).await;
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 8, "{}", out.both());
    for l in &lines {
        assert!(l.starts_with('✔'), "not a pass: {l}\n{}", out.both());
    }
    for what in [
        "config",
        "secret key",
        "endpoint",
        "third_code",
        "clock",
        "credits: 1000",
        "state directory",
    ] {
        assert!(out.stdout.contains(what), "no {what} line\n{}", out.both());
    }

    // A wrong key: doctor names the failing check and exits nonzero; credits says why.
    let wrong = config_with_secret(&env, "not-the-right-key");
    let args = |cmd: &'static str| ["--config".as_ref(), wrong.as_os_str(), cmd.as_ref()];
    let out = hili(&env, args("doctor")).await;
    assert_ne!(out.code, Some(0), "{}", out.both());
    let cross = out
        .stdout
        .lines()
        .find(|l| l.starts_with('✘'))
        .unwrap_or_else(|| panic!("no ✘ line\n{}", out.both()));
    assert!(
        cross.contains("9999") && cross.contains("secret"),
        "{cross}"
    );
    let out = hili(&env, args("credits")).await;
    out.expect_code(1);
    assert!(out.stderr.contains("9999"), "{}", out.both());
}

#[tokio::test]
async fn add_takes_files_and_directories_recursively_and_only_once() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_png(&env.inbox.join("trip/b.png"), 2);
    write_jpeg(&env.inbox.join("trip/day2/c.jpg"), 3);
    let single = env.dir.path().join("elsewhere/single.jpg");
    write_jpeg(&single, 4);
    // Debris the walk ignores.
    std::fs::write(env.inbox.join(".DS_Store"), "x").unwrap();

    // Relative paths, resolved against the working directory.
    let args = [
        "add",
        "inbox",
        "elsewhere/single.jpg",
        "--repair",
        "sr",
        "--output",
        "out",
    ];
    let out = hili(&env, args).await;
    assert_stdout(&out, 0, &["queued 4 photo(s)", "hili run --once"]);
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    let mut sources: Vec<PathBuf> = jobs.iter().map(|j| j.source_path.clone()).collect();
    sources.sort();
    let mut want = vec![
        env.inbox.join("a.jpg"),
        env.inbox.join("trip/b.png"),
        env.inbox.join("trip/day2/c.jpg"),
        single.clone(),
    ];
    want.sort();
    assert_eq!(sources, want);
    assert!(
        jobs.iter().all(|j| j.state() == State::Queued
            && j.repair == Repair::Sr
            && j.output_dir == env.out)
    );

    // The same add again: nothing new, nothing duplicated.
    let out = hili(&env, args).await;
    assert_stdout(&out, 0, &["queued 0 photo(s)", "4 already known"]);
    assert_eq!(job_states(&env).await.len(), 4);
}

#[tokio::test]
async fn add_refuses_bg_without_rgb_and_creates_nothing() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    let out = hili(&env, add_inbox("bg", &[])).await;
    out.expect_code(2);
    assert!(out.stderr.contains("--rgb"), "{}", out.both());
    assert!(!env.db.exists(), "a refused add created the database");

    let out = hili(
        &env,
        [
            "add",
            "inbox",
            "--repair",
            "bg",
            "--rgb",
            "255,255,255",
            "--output",
            "out",
        ],
    )
    .await;
    assert_stdout(&out, 0, &["queued 1 photo(s)"]);
}

#[tokio::test]
async fn add_dry_run_reports_cost_and_invalid_files_and_changes_nothing() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("good1.jpg"), 1);
    write_png(&env.inbox.join("sub/good2.png"), 2);
    std::fs::write(env.inbox.join("notes.jpg"), "not a photo at all\n").unwrap();
    image::RgbImage::from_pixel(7000, 10, image::Rgb([1, 2, 3]))
        .save_with_format(env.inbox.join("panorama.png"), image::ImageFormat::Png)
        .unwrap();

    let dry = add_inbox("sr", &["--dry-run"]);
    let out = hili(&env, &dry).await;
    out.expect_code(0);
    let would: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("would queue"))
        .collect();
    assert_eq!(would.len(), 2, "{}", out.both());
    assert!(would.iter().any(|l| l.ends_with("good1.jpg")));
    assert!(would.iter().any(|l| l.ends_with("sub/good2.png")));
    let invalid: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("invalid"))
        .collect();
    assert_eq!(invalid.len(), 2, "{}", out.both());
    assert!(
        invalid
            .iter()
            .any(|l| l.contains("notes.jpg") && l.contains("not a JPEG or PNG")),
        "{}",
        out.both()
    );
    assert!(
        invalid
            .iter()
            .any(|l| l.contains("panorama.png") && l.contains("6000")),
        "{}",
        out.both()
    );
    assert!(
        out.stdout.contains("2 to queue (at most 2 credit(s)") && out.stdout.contains("2 invalid"),
        "{}",
        out.both()
    );
    assert!(!env.db.exists(), "a dry run created the database");
    assert!(
        !env.db.parent().unwrap().exists(),
        "a dry run created the state directory"
    );
    assert!(!env.out.exists(), "a dry run created the output directory");

    // After a real add, the dry run knows the photos are already queued.
    hili(&env, add_inbox("sr", &[])).await.expect_code(0);
    let out = hili(&env, &dry).await;
    assert_stdout(&out, 0, &["0 to queue", "already queued"]);
    assert_eq!(env.sim.ledger().total_charges, 0);
}

#[tokio::test]
async fn run_once_exits_0_when_every_job_is_done() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_png(&env.inbox.join("deep/b.png"), 2);
    hili(&env, add_inbox("colour", &[])).await.expect_code(0);
    let out = hili(&env, ["run", "--once"]).await;
    assert_stdout(&out, 0, &["2 done, 0 failed, 0 held"]);
    let outputs = env.outputs();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_decodes(&outputs);
    assert!(
        env.out.join("deep").is_dir(),
        "the folder structure is kept"
    );
    let l = env.sim.ledger();
    assert_eq!((l.total_charges, l.duplicate_charges), (2, 0));

    // Nothing left: another run is a no-op that still exits 0.
    let out = hili(&env, ["run", "--once"]).await;
    out.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 2);
}

#[tokio::test]
async fn a_failed_job_exits_3_and_retry_failed_after_a_fix_completes_it() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("good.jpg"), 1);
    // Cut short after its header: `hili add` (headers only) queues it, the run refuses it.
    let broken = env.inbox.join("broken.jpg");
    write_jpeg(&broken, 2);
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    hili(&env, add_inbox("sr", &[])).await.expect_code(0);

    let out = hili(&env, ["run", "--once"]).await;
    assert_stdout(&out, 3, &["1 done, 1 failed", "hili status"]);
    // The broken file never reached the service.
    assert_eq!(env.sim.ledger().total_charges, 1);

    let all = json(&hili(&env, ["jobs", "--json"]).await);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let failed = json(&hili(&env, ["jobs", "--state", "failed", "--json"]).await);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = &failed[0];
    assert_eq!(f["state"], "failed");
    assert!(f["source"].as_str().unwrap().ends_with("broken.jpg"), "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.contains("broken.jpg") && reason.contains("truncated"),
        "{reason}"
    );
    assert_eq!(f["credit_spent"], false);
    let id = f["id"].as_i64().unwrap();

    // The plain listing shows the reason too, under a header.
    let out = hili(&env, ["jobs", "--state", "failed"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.both());
    assert!(out.stdout.starts_with("id "), "{}", out.both());
    assert!(out.stdout.contains("failed") && out.stdout.contains("truncated"));
    let out = hili(&env, ["jobs", "--state", "sideways"]).await;
    out.expect_code(2);

    // A dry run does not pretend the failed photo is waiting in the queue.
    let out = hili(&env, add_inbox("sr", &["--dry-run"])).await;
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("1 already done, 0 already queued, 1 failed or held"),
        "{}",
        out.both()
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.ends_with("broken.jpg"))
        .unwrap();
    assert!(
        line.starts_with("already failed") && line.contains("hili retry"),
        "{line}"
    );

    // Fix the input, retry, run again.
    write_jpeg(&broken, 9);
    let out = hili(&env, ["retry", "--failed"]).await;
    out.expect_code(0);
    assert_eq!(
        out.stdout.trim(),
        format!("job {id}: now queued"),
        "{}",
        out.both()
    );
    let out = hili(&env, ["run", "--once"]).await;
    out.expect_code(0);
    assert_eq!(job_states(&env).await, vec![State::Done, State::Done]);
    let outputs = env.outputs();
    assert_eq!(outputs.len(), 2);
    assert_decodes(&outputs);
    let l = env.sim.ledger();
    assert_eq!((l.total_charges, l.duplicate_charges), (2, 0));
}

#[tokio::test]
async fn a_config_error_exits_2_naming_the_key_and_the_file() {
    let env = Env::new(fast_sim()).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}colour = \"red\"\n")).unwrap();
    for args in [
        &["run", "--once"][..],
        &["status"],
        &["credits"],
        &add_inbox("sr", &[]),
    ] {
        let out = hili(&env, args).await;
        out.expect_code(2);
        assert!(
            out.stderr.contains("colour") && out.stderr.contains(&env.config.display().to_string()),
            "{args:?}: {}",
            out.both()
        );
    }
    assert!(!env.db.exists());
}

#[tokio::test]
async fn a_missing_secret_exits_2_before_creating_a_database() {
    let env = Env::new(fast_sim()).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("secret_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.config, text).unwrap();
    for args in [&["run", "--once"][..], &["credits"]] {
        let out = hili(&env, args).await;
        out.expect_code(2);
        assert!(
            out.stderr.contains("HILI_SECRET_KEY"),
            "{args:?}: {}",
            out.both()
        );
    }
    assert!(
        !env.db.exists(),
        "a run that cannot start created the database"
    );
}

#[tokio::test]
async fn status_shows_a_held_job_with_its_reason_and_how_to_resolve_it() {
    let env = Env::new(fast_sim()).await;
    let out = lose_an_upload_answer(&env).await;
    assert_stdout(&out, 3, &["0 done, 0 failed, 1 held"]);

    let out = hili(&env, ["status"]).await;
    out.expect_code(0);
    let held_line = out.stdout.lines().find(|l| l.starts_with("held")).unwrap();
    assert_eq!(
        held_line.split_whitespace().collect::<Vec<_>>(),
        ["held", "1"]
    );
    assert!(
        out.stdout.contains("lost.jpg")
            && out.stdout.contains("charged, result unknown")
            && out.stdout.contains("resolve: hili retry"),
        "{}",
        out.both()
    );

    let st = json(&hili(&env, ["status", "--json"]).await);
    assert_eq!(st["counts"]["held"], 1, "{st}");
    assert_eq!(st["counts"]["done"], 0, "{st}");
    assert_eq!(st["credits_spent"], 1, "{st}");
    assert_eq!(st["credits_left"], 999, "{st}");
    let held = &st["held"][0];
    let id = held["id"].as_i64().unwrap();
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("charged, result unknown"),
        "{st}"
    );
    let resolve = held["resolve"].as_str().unwrap();
    assert!(
        resolve.contains(&format!("hili retry --reupload {id}")) && resolve.contains("credit"),
        "{resolve}"
    );

    // Re-uploading says it costs money, then completes.
    let out = hili(&env, ["retry", "--reupload", &id.to_string()]).await;
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("job {id}")) && out.stdout.contains("spends another credit"),
        "{}",
        out.both()
    );
    hili(&env, ["run", "--once"]).await.expect_code(0);
    let st = json(&hili(&env, ["status", "--json"]).await);
    assert_eq!(st["counts"]["done"], 1, "{st}");
    assert_eq!(st["held"].as_array().unwrap().len(), 0, "{st}");
    let l = env.sim.ledger();
    // The second charge was asked for by the user.
    assert_eq!((l.total_charges, l.duplicate_charges), (2, 1));
}

/// Runs `command` (as printed by hili, starting with `hili `) through `sh -c`, as a user who
/// pastes it would, against the environment's config.
async fn paste_into_a_shell(env: &Env, command: &str) -> Out {
    let rest = command
        .strip_prefix("hili ")
        .unwrap_or_else(|| panic!("not a hili command: {command:?}"));
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{} {rest}", env!("CARGO_BIN_EXE_hili")))
        .env("HILI_CONFIG", &env.config)
        .env_remove("HILI_SECRET_KEY")
        .env_remove("HILI_CRASH_AT");
    run(sh, env.dir.path(), std::iter::empty::<&str>()).await
}

/// Queues `lost.jpg` and runs once with the upload charged and its answer dropped (the
/// credit count shows the charge); the run exits 3. Returns the run's output.
async fn lose_an_upload_answer(env: &Env) -> Out {
    write_jpeg(&env.inbox.join("lost.jpg"), 1);
    hili(env, add_inbox("sr", &[])).await.expect_code(0);
    env.sim.set_faults(Faults {
        charge_drop: 1.0,
        ..Faults::default()
    });
    let out = hili(env, ["run", "--once"]).await;
    out.expect_code(3);
    env.sim.set_faults(Faults::default());
    out
}

/// A held job whose upload answer was lost; returns its id.
async fn held_job(env: &Env) -> i64 {
    lose_an_upload_answer(env).await;
    let held = json(&hili(env, ["jobs", "--state", "held", "--json"]).await);
    held[0]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn the_resolve_command_of_status_works_when_pasted_into_a_shell() {
    let env = Env::new(fast_sim()).await;
    let id = held_job(&env).await;
    let st = json(&hili(&env, ["status", "--json"]).await);
    let resolve = st["held"][0]["resolve"].as_str().unwrap();
    let command = resolve.split(" (").next().unwrap();
    let out = paste_into_a_shell(&env, command).await;
    assert_stdout(&out, 0, &["spends another credit"]);
    hili(&env, ["run", "--once"]).await.expect_code(0);
    let done = json(&hili(&env, ["jobs", "--state", "done", "--json"]).await);
    assert_eq!(done[0]["id"], id);
}

#[tokio::test]
async fn the_command_in_a_held_reason_works_when_pasted_into_a_shell() {
    let env = Env::new(fast_sim()).await;
    let id = held_job(&env).await;
    let held = json(&hili(&env, ["jobs", "--state", "held", "--json"]).await);
    let reason = held[0]["reason"].as_str().unwrap();
    let command = reason
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no `command` in the reason: {reason}"));
    assert!(command.ends_with(&format!(" {id}")), "{reason}");
    let out = paste_into_a_shell(&env, command).await;
    out.expect_code(0);
    hili(&env, ["run", "--once"]).await.expect_code(0);
}

#[tokio::test]
async fn status_after_a_run_shows_the_credits_the_service_has() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_jpeg(&env.inbox.join("b.jpg"), 2);
    add_and_run_once(&env).await;
    let st = json(&hili(&env, ["status", "--json"]).await);
    assert_eq!(st["credits_spent"], 2, "{st}");
    assert_eq!(st["credits_left"], env.sim.credits(), "{st}");
}

#[tokio::test]
async fn retry_of_a_done_job_without_reupload_is_refused() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    add_and_run_once(&env).await;
    let jobs = json(&hili(&env, ["jobs", "--json"]).await);
    let id = jobs[0]["id"].as_i64().unwrap().to_string();
    let out = hili(&env, ["retry", &id]).await;
    assert_ne!(out.code, Some(0), "{}", out.both());
    assert!(out.stderr.contains("--reupload"), "{}", out.both());
    assert_eq!(
        out.stderr.matches(&format!("job {id}")).count(),
        1,
        "{}",
        out.both()
    );
    let out = hili(&env, ["retry", "--reupload", &id]).await;
    assert_stdout(&out, 0, &["spends another credit"]);
    let out = hili(&env, ["retry", "999"]).await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("job 999 does not exist") && out.stderr.contains("hili jobs"),
        "{}",
        out.both()
    );
}

#[tokio::test]
async fn demo_writes_four_results_that_decode() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = run(
        bare_hili(),
        dir.path(),
        ["demo".as_ref(), "--dir".as_ref(), demo.as_os_str()],
    )
    .await;
    let report = demo.join("hili-report.html");
    assert_stdout(
        &out,
        0,
        &[
            "the originals are in inbox/",
            "inbox/shop-sign.png  --sr-->  results/shop-sign.sr.png",
            &format!("report: {}", report.display()),
        ],
    );
    let results = files_under(&demo.join("results"));
    assert_eq!(results.len(), 4, "{results:?}\n{}", out.both());
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("<div class=\"cmp\"").count(), 4);
    assert_decodes(&results);
    assert!(
        out.stdout.contains("0 duplicate charge(s)"),
        "{}",
        out.both()
    );

    // Again in the same directory: the photos are known, nothing is paid twice.
    let out = run(
        bare_hili(),
        dir.path(),
        ["demo".as_ref(), "--dir".as_ref(), demo.as_os_str()],
    )
    .await;
    assert_stdout(&out, 0, &["charged 0 credit(s)"]);
    assert_eq!(files_under(&demo.join("results")), results);

    // A configuration names the real service: the demo refuses it rather than ignore it.
    let mut with_config = bare_hili();
    with_config.args(["--config", "mine.toml"]);
    let out = run(with_config, dir.path(), ["demo"]).await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("demo takes no --config") && out.stderr.contains("hili run --once"),
        "{}",
        out.both()
    );
    assert!(!dir.path().join("hili-demo").exists());
}

/// The demo's super-resolution sample has sharp detail, so its 2× result differs from a plain
/// enlargement of it (a smooth gradient would not show the difference).
#[tokio::test]
async fn the_demo_sr_sample_changes_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = run(
        bare_hili(),
        dir.path(),
        ["demo", "--dir", demo.to_str().unwrap()],
    )
    .await;
    out.expect_code(0);
    let before = image::open(demo.join("inbox/shop-sign.png"))
        .unwrap()
        .to_rgb8();
    let after = image::open(demo.join("results/shop-sign.sr.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        after.dimensions(),
        (before.width() * 2, before.height() * 2)
    );
    let blocky = image::imageops::resize(
        &before,
        after.width(),
        after.height(),
        image::imageops::FilterType::Nearest,
    );
    let changed = blocky
        .pixels()
        .zip(after.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 24))
        .count();
    let share = changed as f64 / f64::from(after.width() * after.height());
    assert!(
        share > 0.05,
        "only {:.1}% of the pixels differ visibly",
        share * 100.0
    );
}

#[tokio::test]
async fn the_secret_never_shows_and_the_database_is_private() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_png(&env.inbox.join("b.png"), 2);
    std::fs::write(env.inbox.join("c.jpg"), "text").unwrap();

    // `hili()` asserts every command's stdout and stderr is free of the key.
    hili(&env, ["credits"]).await.expect_code(0);
    hili(&env, ["doctor"]).await.expect_code(0);
    hili(&env, add_inbox("repair", &["--dry-run"]))
        .await
        .expect_code(0);
    hili(&env, add_inbox("repair", &[])).await.expect_code(0);
    let mut traced = env.hili();
    traced.env("HILI_LOG", "trace");
    let out = run(traced, env.dir.path(), ["-vv", "run", "--once"]).await;
    // c.jpg was recorded failed at `hili add`: the run has nothing left to fail.
    out.expect_code(0);
    assert!(
        out.stderr.lines().count() > 20,
        "expected a full trace log\n{}",
        out.both()
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["jobs"],
        &["jobs", "--json"],
        &["retry", "--failed"],
    ] {
        let out = hili(&env, args).await;
        out.expect_code(0);
    }
    // Also through the environment variable and the --log-format json logger.
    let mut by_env = env.hili();
    by_env
        .env("HILI_SECRET_KEY", SECRET)
        .env("HILI_LOG", "trace");
    run(
        by_env,
        env.dir.path(),
        ["--log-format", "json", "run", "--once"],
    )
    .await;

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.db), 0o600, "database file mode");
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", env.db.display()));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{} mode", side.display());
        }
    }
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", env.db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret key is stored in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn status_before_anything_was_added_says_what_to_do() {
    let env = Env::new(SimOptions {
        credits: 3,
        ..fast_sim()
    })
    .await;
    let out = hili(&env, ["status"]).await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("hili add") && out.stderr.contains("[queue] database"),
        "{}",
        out.both()
    );
    assert!(!env.db.exists(), "status created a database");
}
