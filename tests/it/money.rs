//! Money and what `hili add` already knows, as a user sees them through the binary: invalid
//! files recorded failed at `add` (never uploaded, the dry run and the add agree), the dry
//! run's price in the configured currency against the credits left, `run --once --budget N`,
//! the daily budget counted from the queue across runs, and `hili status` saying why a daemon
//! paused its uploads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hili::sim::SimOptions;
use hili::store::State;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

fn add(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["add", "inbox", "--repair", "sr", "--output", "out"];
    v.extend_from_slice(extra);
    v
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The line of `out` starting with `prefix`, without the prefix.
#[track_caller]
fn line_after<'a>(out: &'a Out, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?}\n{}", out.both()))
}

/// What the dry run and the add count besides the photos to queue: "N to queue" and the rest.
#[track_caller]
fn counts(out: &Out, prefix: &str) -> (String, String) {
    let line = line_after(out, prefix);
    let (queue, _) = line.split_once(" to queue").expect("N to queue");
    let done = line.find(" already done").expect("N already done");
    let rest = &line[line[..done].rfind(' ').map_or(0, |i| i + 1)..];
    (queue.trim().to_string(), rest.to_string())
}

/// Four photos and six files the service would refuse, each for its own reason.
fn photos_and_invalid_files(env: &Env) -> (Vec<PathBuf>, Vec<&'static str>) {
    let inbox = &env.inbox;
    let good = vec![
        inbox.join("a.jpg"),
        inbox.join("b.png"),
        inbox.join("sub/c.jpg"),
        inbox.join("sub/d.png"),
    ];
    for (i, p) in good.iter().enumerate() {
        match p.extension().and_then(|e| e.to_str()) {
            Some("png") => write_png(p, i as u32 + 1),
            _ => write_jpeg(p, i as u32 + 1),
        }
    }
    std::fs::write(inbox.join("notes.jpg"), "a shopping list, not a photo\n").unwrap();
    std::fs::write(inbox.join("empty.png"), b"").unwrap();
    std::fs::write(inbox.join("anim.gif"), b"GIF89a\x01\0\x01\0\0\0\0;").unwrap();
    std::fs::write(inbox.join("scan.pdf"), b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n").unwrap();
    image::RgbImage::from_pixel(7000, 10, image::Rgb([9, 9, 9]))
        .save(inbox.join("wide.png"))
        .unwrap();
    // Noise does not compress: over the 1 MiB upload limit of these tests.
    image::RgbImage::from_fn(800, 800, |x, y| {
        let v = (x * 7919 + y * 104_729) ^ (x * y * 31);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
    .save(inbox.join("big.png"))
    .unwrap();
    let bad = vec![
        "notes.jpg",
        "empty.png",
        "anim.gif",
        "scan.pdf",
        "wide.png",
        "big.png",
    ];
    (good, bad)
}

#[tokio::test]
async fn add_records_invalid_files_failed_with_their_reason_and_never_uploads_them() {
    let env = Env::with_queue(fast_sim(), "\n[input]\nmax_upload_bytes = 1048576").await;
    let (good, bad) = photos_and_invalid_files(&env);

    let dry = env.run_hili(add(&["--dry-run"])).await;
    dry.expect_code(0);
    let (dry_queue, dry_rest) = counts(&dry, "dry run: ");
    assert_eq!(dry_queue, "4", "{}", dry.both());
    assert!(dry_rest.contains("6 invalid"), "{}", dry.both());

    let added = env.run_hili(add(&[])).await;
    added.expect_code(0);
    assert_eq!(
        counts(&added, "added: "),
        (dry_queue, dry_rest),
        "the add says what its dry run said\n{}\n{}",
        dry.both(),
        added.both()
    );
    assert_eq!(
        added
            .stdout
            .lines()
            .filter(|l| l.starts_with("invalid  "))
            .count(),
        6,
        "each invalid file is named with its reason\n{}",
        added.both()
    );

    // `hili jobs --state failed` shows each with its reason; nothing was charged.
    let jobs = env.run_hili(["jobs", "--state", "failed", "--json"]).await;
    jobs.expect_code(0);
    let failed: Vec<Value> = serde_json::from_str(&jobs.stdout).unwrap();
    let names: BTreeSet<String> = failed
        .iter()
        .map(|j| {
            let source = PathBuf::from(j["source"].as_str().unwrap());
            let name = source.file_name().unwrap().to_string_lossy().into_owned();
            let reason = j["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(&name), "the reason names the file: {j}");
            assert_eq!(j["credit_spent"], false, "{j}");
            name
        })
        .collect();
    assert_eq!(names, bad.iter().map(|s| s.to_string()).collect());
    let store = env.store().await;
    let one = store.jobs_in(State::Failed).await.unwrap()[0].clone();
    let events = store.events(one.id).await.unwrap();
    store.close().await;
    let last = events.last().unwrap();
    assert_eq!((last.from, last.to), (Some(State::Queued), State::Failed));
    assert_eq!(last.detail.as_deref(), one.reason.as_deref(), "{events:?}");

    // The same files again: no second row, and the dry run and the add still agree.
    let dry = env.run_hili(add(&["--dry-run"])).await;
    let again = env.run_hili(add(&[])).await;
    again.expect_code(0);
    assert_eq!(counts(&again, "added: "), counts(&dry, "dry run: "));
    assert!(
        again.stdout.contains("6 failed or held") && again.stdout.contains("0 invalid"),
        "{}",
        again.both()
    );
    assert_eq!(job_states(&env).await.len(), 10);

    // The run uploads the four photos and nothing else.
    env.run_hili(["run", "--once"]).await.expect_code(0);
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (4, 4));
    let sent: BTreeSet<String> = ledger.charges.iter().map(|c| c.sha256.clone()).collect();
    let photos: BTreeSet<String> = good.iter().map(|p| sha(p)).collect();
    assert_eq!(sent, photos, "only the photos were uploaded");
}

#[tokio::test]
async fn the_dry_run_prices_the_run_in_the_configured_currency_against_the_credits_left() {
    let account = "\n[account]\ncredit_price = 0.7\ncurrency = \"CNY\"";
    let env = Env::with_queue(fast_sim(), account).await;
    for i in 0..3 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    let out = env.run_hili(add(&["--dry-run"])).await;
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("3 to queue (at most 3 credit(s), about 2.10 CNY")
            && out
                .stdout
                .contains("enough for this run; 997 left after it"),
        "{}",
        out.both()
    );

    env.sim.set_credits(2);
    let out = env.run_hili(add(&["--dry-run"])).await;
    assert!(
        out.stdout
            .contains("NOT enough for this run, 1 credit(s) short (about 0.70 CNY)"),
        "{}",
        out.both()
    );

    let out = env.run_hili(add(&["--dry-run", "--json"])).await;
    out.expect_code(0);
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.both()));
    assert_eq!(v["counts"]["to_queue"], 3);
    assert_eq!(v["cost"]["text"], "2.10 CNY");
    assert_eq!(v["cost"]["total"], 2.1);
    assert_eq!(v["credits_left"]["left"], 2);
    assert_eq!(v["credits_left"]["covers"], false);
    assert_eq!(v["files"].as_array().map(Vec::len), Some(3));

    // The service unreachable: said so, and the estimate still printed.
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.sim.base_url(), "http://127.0.0.1:9");
    let offline = env.dir.path().join("offline.toml");
    std::fs::write(&offline, text).unwrap();
    let out = env
        .run_hili(
            ["--config", offline.to_str().unwrap()]
                .into_iter()
                .chain(add(&["--dry-run"])),
        )
        .await;
    out.expect_code(0);
    assert!(
        out.stdout.contains("about 2.10 CNY")
            && out
                .stdout
                .contains("credits left: unknown, the service could not be asked"),
        "{}",
        out.both()
    );
    assert_eq!(env.sim.ledger().upload_requests, 0);
    assert!(!env.db.exists(), "a dry run created the database");
}

#[tokio::test]
async fn run_once_with_budget_2_spends_exactly_2_credits_and_leaves_the_rest_queued() {
    let env = Env::new(fast_sim()).await;
    for i in 0..5 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.run_hili(add(&[])).await.expect_code(0);
    // The flag is for a run that ends; 0 would read as "no limit", so it is refused.
    assert_eq!(env.run_hili(["run", "--budget", "2"]).await.code, Some(2));
    assert_eq!(
        env.run_hili(["run", "--once", "--budget", "0"]).await.code,
        Some(2)
    );

    let out = env.run_hili(["run", "--once", "--budget", "2"]).await;
    out.expect_code(3);
    assert!(
        out.stdout
            .contains("paused by the budget: this run spent its 2 credit(s)")
            && out.stdout.contains("spent: 2 credit(s), about ¥10.00"),
        "{}",
        out.both()
    );
    assert_eq!(env.sim.ledger().total_charges, 2);
    let mut states = job_states(&env).await;
    states.sort();
    assert_eq!(
        states,
        [
            State::Queued,
            State::Queued,
            State::Queued,
            State::Done,
            State::Done
        ]
    );
}

/// Seconds until the next local midnight, from the C library (the binary's own rule).
fn secs_to_local_midnight() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r fills the struct it is given.
    assert!(!unsafe { libc::localtime_r(&now, &mut tm) }.is_null());
    86_400 - i64::from(tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec)
}

#[tokio::test]
async fn the_daily_budget_counts_what_the_queue_spent_today_across_runs() {
    // Two runs must fall on the same local day.
    let left = secs_to_local_midnight();
    if left < 90 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 2)).await;
    }
    let env = Env::with_queue(fast_sim(), "budget_per_day = 3").await;
    for i in 0..2 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.run_hili(add(&[])).await.expect_code(0);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(env.sim.ledger().total_charges, 2);

    for i in 2..5 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.run_hili(add(&[])).await.expect_code(0);
    let out = env.run_hili(["run", "--once"]).await;
    out.expect_code(3);
    assert!(
        out.stdout.contains("paused by the daily budget"),
        "{}",
        out.both()
    );
    assert_eq!(
        env.sim.ledger().total_charges,
        3,
        "the second run spends what remains"
    );
    let done = job_states(&env)
        .await
        .into_iter()
        .filter(|s| *s == State::Done)
        .count();
    assert_eq!(done, 3);

    let json = env.run_hili(["status", "--json"]).await;
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["money"]["spent_today_credits"], 3, "{}", json.both());
    assert_eq!(v["money"]["spent_today"], 15.0);
    assert_eq!(v["money"]["budget_per_day"], 3);
    let status = env.run_hili(["status"]).await;
    assert!(
        status.stdout.contains(
            "today: 3 credit(s) spent since local midnight, about ¥15.00: the daily budget of 3"
        ),
        "{}",
        status.both()
    );
}

/// Waits until `hili status` says `what`; returns its output.
async fn status_saying(env: &Env, what: &str) -> Out {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = env.run_hili(["status"]).await;
        if out.stdout.contains(what) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "status never said {what:?}\n{}",
            out.both()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn status_says_why_the_daemon_paused_uploads() {
    // The daily budget: one credit spent, the second photo waits for midnight, and the first
    // one's result is still fetched.
    let env = Env::with_queue(fast_sim(), "budget_per_day = 1").await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    write_jpeg(&env.inbox.join("b.jpg"), 2);
    env.run_hili(add(&[])).await.expect_code(0);
    let daemon = Daemon::start(&env);
    status_saying(&env, "uploads paused by the daily budget").await;
    until(
        Duration::from_secs(30),
        "the paid result fetched",
        async || job_states(&env).await.contains(&State::Done),
    )
    .await;
    assert_eq!(env.sim.ledger().total_charges, 1);
    assert_eq!(daemon.stop().0, Some(0));
    let out = env.run_hili(["status"]).await;
    assert!(
        !out.stdout.contains("paused"),
        "cleared when the daemon stops\n{}",
        out.both()
    );

    // No credits on the account.
    let env = Env::new(SimOptions {
        credits: 0,
        ..fast_sim()
    })
    .await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.run_hili(add(&[])).await.expect_code(0);
    let daemon = Daemon::start(&env);
    status_saying(&env, "uploads paused: the account has no credits left").await;
    assert_eq!(daemon.stop().0, Some(0));

    // A rejected token (the wrong secret).
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.run_hili(add(&[])).await.expect_code(0);
    std::fs::write(env.dir.path().join("secret"), "not-the-secret").unwrap();
    let daemon = Daemon::start(&env);
    let out = status_saying(&env, "the service refuses this configuration").await;
    assert!(out.stdout.contains("9999"), "{}", out.both());
    assert_eq!(daemon.stop().0, Some(0));
    assert_eq!(env.sim.ledger().total_charges, 0);
}

#[tokio::test]
async fn retry_of_a_file_failed_at_add_checks_it_again_at_the_upload() {
    let env = Env::new(fast_sim()).await;
    image::RgbImage::from_pixel(6400, 16, image::Rgb([90, 60, 30]))
        .save(env.inbox.join("wide.png"))
        .unwrap();
    let added = env.run_hili(add(&[])).await;
    assert!(added.stdout.contains("1 invalid"), "{}", added.both());

    // Unchanged, a retry fails again at the upload's check, for free.
    env.run_hili(["retry", "--failed"]).await.expect_code(0);
    let out = env.run_hili(["run", "--once"]).await;
    assert!(out.stdout.contains("0 done, 1 failed"), "{}", out.both());
    assert_eq!(env.sim.ledger().upload_requests, 0);

    // After the change the reason suggests, the retry processes it.
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str("\n[input]\noversize = \"downscale\"\n");
    std::fs::write(&env.config, text).unwrap();
    env.run_hili(["retry", "--failed"]).await.expect_code(0);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    assert_eq!(job_states(&env).await, [State::Done]);
    assert_eq!(env.sim.ledger().total_charges, 1);
}
