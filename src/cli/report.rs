//! `hili status` and `hili retry` (`hili jobs` is in `jobs.rs`): read the store (safely while a
//! daemon runs, through WAL) and print for people or, with `--json`, for programs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Exit;
use super::args::{RetryArgs, StatusArgs};
use super::jobs::{job_json, plain_table, table_lines, without_path};
use crate::config::Config;
use crate::store::{Job, JobId, NodeInfo, State, Store};

async fn open(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open_existing_at(&config.queue_location()?).await?)
}

/// What `hili status` reports, read in one go.
struct Facts {
    counts: BTreeMap<State, u64>,
    credits: Option<(i64, u64)>,
    spent: u64,
    /// Credits the account lost beyond hili's own uploads (see `pipeline::epochs`).
    elsewhere: u64,
    oldest: Option<Job>,
    held: Vec<Job>,
    paused: Option<(i64, String)>,
    /// The most frequent reasons of failed jobs, with how many failed for each.
    failed_reasons: Vec<(String, u64)>,
    /// Money in the configured currency, and today's spending.
    money: super::money::MoneyStatus,
    /// A shared queue's nodes (`None`: a queue of its own), and when they were read.
    nodes: Option<(Vec<NodeInfo>, i64)>,
}

/// How many of the failed jobs' reasons `hili status` names.
const TOP_REASONS: usize = 3;

pub(super) async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<Exit> {
    let store = open(config).await?;
    let failed = store.jobs_in(State::Failed).await?;
    let facts = Facts {
        counts: store.counts().await?,
        credits: store.latest_credits().await?,
        spent: store.credits_spent().await?,
        elsewhere: store.credits_spent_elsewhere().await?,
        oldest: store.oldest_queued().await?,
        held: store.jobs_in(State::Held).await?,
        paused: store.pause_note().await?,
        failed_reasons: top_reasons(&failed, TOP_REASONS),
        money: super::money::MoneyStatus::read(config, &store).await?,
        nodes: match store.node() {
            Some(_) => Some((store.nodes().await?, crate::store::now_ms())),
            None => None,
        },
    };
    store.close().await;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&status_json(&facts))?),
        false => {
            for line in status_lines(&facts) {
                println!("{line}");
            }
        }
    }
    Ok(Exit::Ok)
}

fn status_json(f: &Facts) -> Value {
    let counts: serde_json::Map<String, Value> = State::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(count(f, *s))))
        .collect();
    let mut v = json!({
        "counts": counts,
        "credits_left": f.credits.map(|c| c.1),
        "credits_seen_at_ms": f.credits.map(|c| c.0),
        "credits_spent": f.spent,
        "credits_spent_elsewhere": f.elsewhere,
        "money": f.money.json(),
        "paused": f.paused.as_ref().map(|(at, why)| json!({"since_ms": at, "why": why})),
        "oldest_queued": f.oldest.as_ref().map(job_json),
        "held": f.held.iter().map(|j| json!({
            "id": j.id.0,
            "source": j.source_path.to_string_lossy(),
            "reason": j.reason,
            "resolve": resolve_hint(j),
        })).collect::<Vec<_>>(),
        "failed_reasons": f.failed_reasons.iter()
            .map(|(reason, n)| json!({"reason": reason, "jobs": n}))
            .collect::<Vec<_>>(),
    });
    if let Some((nodes, now)) = &f.nodes {
        v["nodes"] = super::nodes::status_json(nodes, *now);
    }
    v
}

/// `hili status` for people, one line after another: a new fact is one more push.
fn status_lines(f: &Facts) -> Vec<String> {
    let mut counts = plain_table(&[]);
    for s in State::ALL {
        counts.add_row(vec![s.as_str().to_string(), count(f, s).to_string()]);
    }
    let mut out = table_lines(&counts);
    out.push(match f.credits {
        Some((at, n)) => format!("credits left: {n} (seen {})", ago(at)),
        None => "credits left: not seen yet (run `hili credits`)".into(),
    });
    out.push(format!("credits spent: {}", f.spent));
    if f.elsewhere > 0 {
        out.push(format!(
            "credits spent elsewhere: {} (the account lost them while hili ran, beyond its own \
             uploads: another program or person on the same account)",
            f.elsewhere
        ));
    }
    out.extend(f.money.lines());
    if let Some((at, why)) = &f.paused {
        out.push(format!("{why} (noted {} by the running hili)", ago(*at)));
    }
    if let Some(j) = &f.oldest {
        out.push(format!(
            "oldest queued: job {} {} (queued {})",
            j.id,
            j.source_path.display(),
            ago(j.created_at_ms)
        ));
    }
    let failed = count(f, State::Failed);
    if failed > 0 {
        out.push(String::new());
        out.push(format!("{failed} failed job(s), most often because:"));
        for (reason, n) in &f.failed_reasons {
            out.push(format!("  {n} × {reason}"));
        }
        out.push("  every failed job and its file: hili jobs --state failed".into());
        out.push("  queue them again once fixed: hili retry --failed".into());
    }
    if !f.held.is_empty() {
        out.push(String::new());
        out.push("held jobs need you:".into());
        for j in &f.held {
            out.push(format!("  job {} {}", j.id, j.source_path.display()));
            out.push(format!(
                "    {}",
                j.reason.as_deref().unwrap_or("no reason recorded")
            ));
            out.push(format!("    resolve: {}", resolve_hint(j)));
        }
    }
    if let Some((nodes, now)) = &f.nodes {
        out.push(String::new());
        out.extend(super::nodes::status_lines(nodes, *now));
    }
    out
}

fn count(f: &Facts, s: State) -> u64 {
    f.counts.get(&s).copied().unwrap_or(0)
}

/// The `n` most frequent reasons among `failed` jobs, most frequent first (ties by reason).
/// A reason names its file; that name is taken out so that jobs failing for the same cause
/// count together.
fn top_reasons(failed: &[Job], n: usize) -> Vec<(String, u64)> {
    let mut by_reason: HashMap<String, u64> = HashMap::new();
    for j in failed {
        let reason = j.reason.as_deref().unwrap_or("no reason recorded");
        *by_reason.entry(without_path(reason, j)).or_default() += 1;
    }
    let mut all: Vec<(String, u64)> = by_reason.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

pub(super) async fn retry(config: &Config, args: RetryArgs) -> anyhow::Result<Exit> {
    let store = open(config).await?;
    let mut ids: Vec<JobId> = args.ids.iter().map(|i| JobId(*i)).collect();
    if args.failed {
        ids.extend(store.jobs_in(State::Failed).await?.iter().map(|j| j.id));
    }
    if args.held {
        ids.extend(store.jobs_in(State::Held).await?.iter().map(|j| j.id));
    }
    let mut code = Exit::Ok;
    for id in ids {
        let before = store.get(id).await?;
        match store.retry(id, args.reupload).await {
            Ok(state) => {
                let spent_before = before.is_some_and(|j| j.credit_spent);
                match state {
                    State::Queued if spent_before => {
                        println!("job {id}: queued for a new upload: this spends another credit")
                    }
                    State::Queued if args.reupload => {
                        println!("job {id}: queued for a new upload: this spends a credit")
                    }
                    _ => println!("job {id}: now {state}"),
                }
            }
            Err(e) => {
                // Store errors about a job already name it ("job #3 is done: ...").
                let msg = e.to_string();
                match msg.contains(&id.to_string()) {
                    true => eprintln!("hili: {msg}"),
                    false => eprintln!("hili: job {id}: {msg}"),
                }
                code = Exit::Error;
            }
        }
    }
    store.close().await;
    Ok(code)
}

/// The command that resolves a held job. Ids are printed bare: `JobId`'s Display is `#N`,
/// and a `#` in a shell command starts a comment, so a pasted `hili retry #3` would do nothing.
fn resolve_hint(j: &Job) -> String {
    let id = j.id.0;
    match (j.mdf(), j.credit_spent) {
        (Some(_), _) => format!(
            "hili retry {id} (fetch the result again), or hili retry --reupload {id} (spends a credit)"
        ),
        // Without an mdf there is nothing to fetch: any retry uploads again, and this job's
        // credit was already spent once.
        (None, true) => {
            format!("hili retry --reupload {id} (uploads it again: spends another credit)")
        }
        (None, false) => format!("hili retry {id}"),
    }
}

fn ago(at_ms: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(at_ms);
    let secs = ((now - at_ms).max(0) / 1000) as u64;
    let d = humantime::format_duration(Duration::from_secs(secs));
    format!("{d} ago")
}
