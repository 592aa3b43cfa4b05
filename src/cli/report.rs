//! `hili status`, `hili jobs` and `hili retry`: read the store (safely while a daemon runs,
//! through WAL) and print for people or, with `--json`, for programs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Exit;
use super::args::{JobsArgs, RetryArgs, StatusArgs};
use crate::config::Config;
use crate::store::{Job, JobId, State, Store};

async fn open(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open_existing(&config.database_path()).await?)
}

pub(super) async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<Exit> {
    let store = open(config).await?;
    let counts = store.counts().await?;
    let credits = store.latest_credits().await?;
    let spent = store.credits_spent().await?;
    let oldest = store.oldest_queued().await?;
    let held = store.jobs_in(State::Held).await?;
    let paused = store.pause_note().await?;
    let money = super::money::MoneyStatus::read(config, &store).await?;
    store.close().await;

    if args.json {
        let counts: serde_json::Map<String, Value> = State::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_string(),
                    json!(counts.get(s).copied().unwrap_or(0)),
                )
            })
            .collect();
        let out = json!({
            "counts": counts,
            "credits_left": credits.map(|c| c.1),
            "credits_seen_at_ms": credits.map(|c| c.0),
            "credits_spent": spent,
            "money": money.json(),
            "paused": paused.as_ref().map(|(at, why)| json!({"since_ms": at, "why": why})),
            "oldest_queued": oldest.as_ref().map(job_json),
            "held": held.iter().map(|j| json!({
                "id": j.id.0,
                "source": j.source_path.to_string_lossy(),
                "reason": j.reason,
                "resolve": resolve_hint(j),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Ok);
    }

    for s in State::ALL {
        println!(
            "{:<12} {}",
            s.as_str(),
            counts.get(&s).copied().unwrap_or(0)
        );
    }
    match credits {
        Some((at, n)) => println!("credits left: {n} (seen {})", ago(at)),
        None => println!("credits left: not seen yet (run `hili credits`)"),
    }
    println!("credits spent: {spent}");
    money.lines().iter().for_each(|l| println!("{l}"));
    if let Some((at, why)) = &paused {
        println!("{why} (noted {} by the running hili)", ago(*at));
    }
    if let Some(j) = oldest {
        println!(
            "oldest queued: job {} {} (queued {})",
            j.id,
            j.source_path.display(),
            ago(j.created_at_ms)
        );
    }
    if !held.is_empty() {
        println!("\nheld jobs need you:");
        for j in &held {
            println!("  job {} {}", j.id, j.source_path.display());
            println!(
                "    {}",
                j.reason.as_deref().unwrap_or("no reason recorded")
            );
            println!("    resolve: {}", resolve_hint(j));
        }
    }
    Ok(Exit::Ok)
}

pub(super) async fn jobs(config: &Config, args: JobsArgs) -> anyhow::Result<Exit> {
    let filter = match &args.state {
        Some(s) => Some(s.parse::<State>().map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let store = open(config).await?;
    let jobs = store.all_jobs(filter).await?;
    let notes = store.input_notes().await?;
    store.close().await;
    let note = |j: &Job| notes.get(&j.id).map(String::as_str);
    if args.json {
        let all: Vec<Value> = jobs
            .iter()
            .map(|j| {
                let mut v = job_json(j);
                v["input"] = json!(note(j));
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(Exit::Ok);
    }
    for j in &jobs {
        let mut detail = match (&j.output_path, &j.reason) {
            (Some(out), _) if j.state() == State::Done => out.display().to_string(),
            (_, Some(r)) => r.clone(),
            _ => String::new(),
        };
        if let Some(n) = note(j) {
            detail.push_str(&format!("  [{n}]"));
        }
        println!(
            "{:>6}  {:<11} {:<6} {}  {}",
            j.id.0,
            j.state().as_str(),
            j.repair.name(),
            j.source_path.display(),
            detail
        );
    }
    Ok(Exit::Ok)
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

fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id.0,
        "state": j.state().as_str(),
        "repair": j.repair.name(),
        "rgb": j.rgb.map(|c| c.to_string()),
        "source": j.source_path.to_string_lossy(),
        "output": j.output_path.as_ref().map(|p| p.to_string_lossy()),
        "output_sha256": j.output_sha256,
        "content_sha256": j.content_sha256,
        "mdf": j.mdf(),
        "reason": j.reason,
        "attempts": j.attempts,
        "credit_spent": j.credit_spent,
    })
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
