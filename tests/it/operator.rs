//! The operator's hooks, as child processes against the simulator: the `/metrics` endpoint
//! (parsed as Prometheus text, its figures moving as jobs run), the `[notify] on_finish`
//! command (once per `--once` run and once per daemon batch, with the run's figures; killed
//! when it hangs), the credentials `hili sim` prints, and `hili doctor` refusing an empty
//! third_code before any request.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hili::store::State;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4): `# HELP`/`# TYPE` lines, then samples
/// `name{label="value",...} number`. Panics on anything else, and on a sample whose family
/// has no `# TYPE` (histogram samples carry `_bucket`, `_sum`, `_count` suffixes).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label is k=\"v\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(&name);
        assert!(types.contains_key(family), "no # TYPE for {name}: {line}");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Appends `text` to the environment's config file.
fn configure(env: &Env, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

/// A notify script that writes each call's `HILI_*` environment and its stdin to
/// `calls/<pid>.env` and `calls/<pid>.json`; returns the calls folder.
fn recording_script(env: &Env) -> PathBuf {
    let calls = env.dir.path().join("calls");
    let script = env.dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={}\nmkdir -p \"$d\"\nenv | grep '^HILI_' > \"$d/$$.env.tmp\"\ncat > \"$d/$$.json\"\nmv \"$d/$$.env.tmp\" \"$d/$$.env\"\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    configure(
        env,
        &format!("[notify]\non_finish = [\"{}\"]\n", script.display()),
    );
    calls
}

/// Each recorded call: its `HILI_*` variables and its JSON, oldest first.
fn calls(dir: &Path) -> Vec<(BTreeMap<String, String>, serde_json::Value)> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new())
        .into_iter()
        .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "env"))
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(_, p)| {
            let vars = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let json = std::fs::read_to_string(p.with_extension("json")).unwrap();
            (vars, serde_json::from_str(&json).expect("stdin is JSON"))
        })
        .collect()
}

fn photos(dir: &Path, seeds: std::ops::Range<u32>) {
    std::fs::create_dir_all(dir).unwrap();
    for i in seeds {
        write_jpeg(&dir.join(format!("p{i}.jpg")), i);
    }
}

async fn add(env: &Env, dir: &Path) {
    let out = env.out.display().to_string();
    env.run_hili([
        "add",
        &dir.display().to_string(),
        "--repair",
        "sr",
        "--output",
        &out,
    ])
    .await
    .expect_code(0);
}

async fn count(env: &Env, state: State) -> usize {
    let Ok(store) = hili::store::Store::open_existing(&env.db).await else {
        return 0;
    };
    let n = store.jobs_in(state).await.map(|v| v.len()).unwrap_or(0);
    store.close().await;
    n
}

async fn scrape(port: u16) -> Option<Vec<Sample>> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    Some(parse_prometheus(&resp.text().await.unwrap()))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_as_jobs_run() {
    let env = Env::new(fast_sim()).await;
    let port = free_port();
    configure(&env, &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env);
    let mut first = None;
    until(
        Duration::from_secs(20),
        "the metrics endpoint answers",
        async || {
            first = scrape(port).await;
            first.is_some()
        },
    )
    .await;
    let first = first.unwrap();
    assert_eq!(value(&first, "hili_jobs", &[("state", "done")]), 0.0);
    assert_eq!(
        value(&first, "hili_api_requests_total", &[("endpoint", "upload")]),
        0.0
    );
    assert_eq!(value(&first, "hili_credits_spent_total", &[]), 0.0);
    assert_eq!(value(&first, "hili_oldest_queued_age_seconds", &[]), 0.0);

    photos(&env.dir.path().join("batch"), 0..3);
    add(&env, &env.dir.path().join("batch")).await;
    let mut after = Vec::new();
    until(
        Duration::from_secs(30),
        "3 jobs done in the metrics",
        async || {
            after = scrape(port).await.unwrap_or_default();
            value(&after, "hili_jobs", &[("state", "done")]) == 3.0
        },
    )
    .await;
    let ok_uploads = [("endpoint", "upload"), ("outcome", "ok")];
    assert_eq!(value(&after, "hili_api_requests_total", &ok_uploads), 3.0);
    assert_eq!(value(&after, "hili_credits_spent_total", &[]), 3.0);
    assert_eq!(value(&after, "hili_jobs", &[("state", "queued")]), 0.0);
    assert_eq!(value(&after, "hili_jobs", &[("state", "held")]), 0.0);
    // Every request is timed, and took its permit from the limiter.
    let requests = value(&after, "hili_api_requests_total", &[]);
    let timed = value(&after, "hili_api_request_duration_seconds_count", &[]);
    assert!(
        requests >= 3.0 * 3.0,
        "upload, status and download each: {requests}"
    );
    assert_eq!(timed, requests);
    assert!(value(&after, "hili_limiter_wait_seconds_count", &[]) >= requests);
    let left = value(&after, "hili_credits_left", &[]);
    assert!((997.0..=1000.0).contains(&left), "credits left {left}");

    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}/metrics")), "{log}");
    assert!(
        scrape(port).await.is_none(),
        "the endpoint outlived the run"
    );
}

#[tokio::test]
async fn a_busy_metrics_port_stops_the_run_and_names_the_address() {
    let env = Env::new(fast_sim()).await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    configure(&env, &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = env.run_hili(["run", "--once"]).await;
    assert_ne!(out.code, Some(0), "{}", out.both());
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}"))
            && out.stderr.contains("[metrics] listen"),
        "{}",
        out.both()
    );
}

#[tokio::test]
async fn on_finish_runs_once_after_run_once_with_its_figures() {
    let env = Env::new(fast_sim()).await;
    let calls_dir = recording_script(&env);
    let batch = env.dir.path().join("batch");
    photos(&batch, 0..3);
    // Complete headers, no pixel data: refused before upload, so the run has a failure.
    std::fs::write(batch.join("broken.png"), png_header_only(64, 64)).unwrap();
    add(&env, &batch).await;
    let mut cmd = env.hili();
    // The secret in hili's environment must not reach the command.
    cmd.env("HILI_SECRET_KEY", SECRET);
    let out = run(cmd, env.dir.path(), ["run", "--once"]).await;
    out.expect_code(3);

    let calls = calls(&calls_dir);
    assert_eq!(calls.len(), 1, "one call per run: {calls:?}");
    let (vars, json) = &calls[0];
    let var = |k: &str| vars.get(k).map(String::as_str).unwrap_or("<unset>");
    assert_eq!(var("HILI_TRIGGER"), "once");
    assert_eq!(var("HILI_DONE"), "3");
    assert_eq!(var("HILI_FAILED"), "1");
    assert_eq!(var("HILI_HELD"), "0");
    assert_eq!(var("HILI_CREDITS_SPENT"), "3");
    assert_eq!(var("HILI_CREDITS_LEFT"), "997");
    assert_eq!(var("HILI_CANNOT_RUN"), "0");
    assert!(
        var("HILI_DURATION_S").parse::<f64>().unwrap() > 0.0,
        "{vars:?}"
    );
    assert!(var("HILI_SUMMARY").contains("3 done, 1 failed"), "{vars:?}");
    assert!(
        !vars.contains_key("HILI_SECRET_KEY"),
        "the secret was passed on"
    );
    assert_eq!(json["done"], 3);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["credits_spent"], 3);
    assert_eq!(json["credits_left"], 997);
    assert_eq!(json["trigger"], "once");
}

#[tokio::test]
async fn a_daemon_tells_on_finish_once_per_batch_not_per_idle_look() {
    let env = Env::new(fast_sim()).await;
    let calls_dir = recording_script(&env);
    let daemon = Daemon::start(&env);
    let first = env.dir.path().join("first");
    photos(&first, 0..3);
    add(&env, &first).await;
    until(
        Duration::from_secs(30),
        "the first batch's call",
        async || !calls(&calls_dir).is_empty(),
    )
    .await;
    assert_eq!(count(&env, State::Done).await, 3);
    // Many idle looks (every 0.5 s) later, still one call.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = calls(&calls_dir);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let var = |i: usize, k: &str| seen[i].0.get(k).cloned().unwrap_or_default();
    assert_eq!(var(0, "HILI_TRIGGER"), "idle");
    assert_eq!(var(0, "HILI_DONE"), "3");
    assert_eq!(var(0, "HILI_CREDITS_SPENT"), "3");

    let second = env.dir.path().join("second");
    photos(&second, 10..12);
    add(&env, &second).await;
    until(
        Duration::from_secs(30),
        "the second batch's call",
        async || calls(&calls_dir).len() >= 2,
    )
    .await;
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let seen = calls(&calls_dir);
    assert_eq!(seen.len(), 2, "{seen:?}\n{log}");
    let var = |i: usize, k: &str| seen[i].0.get(k).cloned().unwrap_or_default();
    assert_eq!(var(1, "HILI_DONE"), "2");
    assert_eq!(var(1, "HILI_CREDITS_SPENT"), "2");
    assert_eq!(seen[1].1["done"], 2);
}

/// Whether `pid` is gone (or a zombie: dead, waiting to be reaped).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_on_finish_is_killed_and_the_run_still_exits() {
    let env = Env::new(fast_sim()).await;
    let pids = env.dir.path().join("pids");
    configure(
        &env,
        &format!(
            "[notify]\non_finish = [\"/bin/sh\", \"-c\", \"sleep 600 & echo $$ $! > {}; wait\"]\ntimeout = \"1s\"\n",
            pids.display()
        ),
    );
    photos(&env.inbox, 0..1);
    add(&env, &env.inbox).await;
    let started = Instant::now();
    let out = env.run_hili(["run", "--once"]).await;
    out.expect_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("still running after 1s: killed"),
        "{}",
        out.both()
    );
    let text = std::fs::read_to_string(&pids).unwrap();
    let both: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(both.len(), 2, "{text}");
    until(
        Duration::from_secs(5),
        "the command and its child are gone",
        async || both.iter().all(|&p| dead(p)),
    )
    .await;
}

#[tokio::test]
async fn sim_prints_credentials_that_work_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sim-own-secret-81";
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hili"));
    cmd.args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--third-code",
        "pasted",
        "--credits",
        "11",
    ])
    .env("HILI_SIM_SECRET", secret)
    .env_remove("HILI_CONFIG")
    .current_dir(dir.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let mut sim = cmd.spawn().unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.starts_with("secret_key")) {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("hili sim printed no credentials within 20 s")
            .unwrap()
            .expect("hili sim closed stdout before its credentials");
        printed.push(line);
    }
    assert!(printed[0].starts_with("http://127.0.0.1:"), "{printed:?}");
    assert!(
        printed.contains(&"third_code = \"pasted\"".to_string()),
        "{printed:?}"
    );
    assert!(
        printed.contains(&format!("secret_key = \"{secret}\"")),
        "{printed:?}"
    );

    // The lines, pasted as they are, make a configuration that works.
    let pasted: String = printed[1..].iter().map(|l| format!("{l}\n")).collect();
    let config = dir.path().join("hili.toml");
    std::fs::write(
        &config,
        format!(
            "{pasted}\n[queue]\ndatabase = \"{}\"\n",
            dir.path().join("q.db").display()
        ),
    )
    .unwrap();
    let mut credits = std::process::Command::new(env!("CARGO_BIN_EXE_hili"));
    credits
        .env("HILI_CONFIG", &config)
        .env_remove("HILI_SECRET_KEY");
    let out = run(credits, dir.path(), ["credits"]).await;
    out.expect_code(0);
    assert!(out.stdout.contains("11"), "{}", out.both());
}

#[tokio::test]
async fn doctor_fails_an_empty_third_code_with_exit_2_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    // Whatever connects here would be a request doctor should not have made.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let config = dir.path().join("hili.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbase_url = \"http://{}\"\nthird_code = \"\"\n\n[queue]\ndatabase = \"{}\"\n",
            listener.local_addr().unwrap(),
            dir.path().join("q.db").display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hili"));
    cmd.env("HILI_CONFIG", &config)
        .env("HILI_SECRET_KEY", "doctor-test-key");
    let out = run(cmd, dir.path(), ["doctor"]).await;
    out.expect_code(2);
    let line = out
        .stdout
        .lines()
        .find(|l| l[l.char_indices().nth(2).map_or(0, |(i, _)| i)..].starts_with("third_code:"))
        .unwrap_or_default();
    assert!(
        line.starts_with('✘') && line.contains("empty"),
        "{}",
        out.both()
    );
    assert!(out.stdout.contains("- endpoint: skipped"), "{}", out.both());
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "doctor connected to the API with an empty third_code"
    );
}
