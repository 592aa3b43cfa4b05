//! `hili add`: walks files and folders, checks each file's headers (the same check as the dry
//! run's: an image the service takes or hili converts, within its limits, readable), queues the
//! photos and records the invalid files as failed jobs with their reasons (never uploaded, no
//! credit), so the real add says what its dry run said. `--dry-run` (in [`super::dry_run`])
//! reports the same and what it would cost, changing nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Exit;
use super::add_tally::{Tally, Verdict, count_conversion};
use super::args::AddArgs;
use crate::config::Config;
use crate::media::{self, Found};
use crate::store::{EnqueueOutcome, NewJob, Store};

/// Rows written per transaction: one durable commit per batch keeps a 100,000-file add fast.
const BATCH: usize = 2000;

pub(super) async fn add(config: &Config, args: AddArgs) -> anyhow::Result<Exit> {
    if args.repair.needs_rgb() && args.rgb.is_none() {
        anyhow::bail!(
            "--repair bg needs a background colour: add --rgb R,G,B (e.g. --rgb 255,255,255)"
        );
    }
    if !args.repair.needs_rgb() && args.rgb.is_some() {
        anyhow::bail!("--rgb only applies to --repair bg; remove it or use --repair bg");
    }
    let output = absolute(&args.output)?;
    let paths = args
        .paths
        .iter()
        .map(|p| absolute(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (found, problems) = tokio::task::spawn_blocking(move || walk_all(&paths)).await?;
    for p in &problems {
        eprintln!("hili: skipped {p}");
    }
    let downscale = config.input.oversize == crate::config::Oversize::Downscale;
    let limit = config.input.max_upload_bytes;
    let probed = tokio::task::spawn_blocking(move || probe_all(found, downscale, limit)).await?;
    if args.dry_run {
        return super::dry_run::dry_run(config, probed, &args, &output).await;
    }
    let tally = record(config, probed, &args, &output).await?;
    let cost = config.account.cost(tally.to_queue);
    println!(
        "queued {n} photo(s) for {} (at most {n} credit(s), about {cost}); {} already known",
        args.repair,
        tally.already_done + tally.already_queued + tally.failed_or_held,
        n = tally.to_queue,
    );
    println!("added: {} to queue, {}", tally.to_queue, tally.rest());
    if tally.own_results > 0 {
        println!(
            "skipped {} file(s) that are hili's own results (use --force to process them as photos)",
            tally.own_results
        );
    }
    if tally.invalid > 0 {
        println!(
            "recorded {} invalid file(s) as failed, with the reasons above (`hili jobs --state \
             failed`): fix a file and add it again, or change the configuration and `hili retry` it",
            tally.invalid
        );
    }
    if tally.to_queue > 0 {
        println!("run `hili run --once` to process them");
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::JobsNeedAttention
    })
}

/// Queues the photos and records the invalid files as failed jobs, in batches; prints each
/// newly recorded invalid file with its reason.
async fn record(
    config: &Config,
    probed: Vec<(Found, Verdict)>,
    args: &AddArgs,
    output: &Path,
) -> anyhow::Result<Tally> {
    let store = Store::open_at(&config.queue_location()?).await?;
    let mut tally = Tally::default();
    let mut probed = probed;
    while !probed.is_empty() {
        let rest = probed.split_off(probed.len().min(BATCH));
        let batch = std::mem::replace(&mut probed, rest);
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (f, verdict) in batch {
            let job = NewJob {
                force: args.force,
                ..NewJob::from_found(f, output.to_path_buf(), args.repair, args.rgb)
            };
            match verdict {
                Ok(input) => good.push((job, input)),
                Err(reason) => bad.push((job, reason)),
            }
        }
        let inputs: Vec<media::Input> = good.iter().map(|g| g.1).collect();
        let outcomes = store
            .enqueue_many(good.into_iter().map(|g| g.0).collect())
            .await?;
        for (outcome, input) in outcomes.into_iter().zip(inputs) {
            if let EnqueueOutcome::Queued(_) = outcome {
                count_conversion(&mut tally, &input);
            }
            count(&mut tally, outcome);
        }
        let reasons: Vec<String> = bad.iter().map(|b| b.1.clone()).collect();
        for (outcome, reason) in store.enqueue_invalid(bad).await?.into_iter().zip(reasons) {
            if let EnqueueOutcome::Failed(_) = outcome {
                println!("invalid  {reason}");
            }
            count(&mut tally, outcome);
        }
    }
    store.close().await;
    Ok(tally)
}

fn count(tally: &mut Tally, outcome: EnqueueOutcome) {
    match outcome {
        EnqueueOutcome::Queued(_) => tally.to_queue += 1,
        EnqueueOutcome::AlreadyKnown(_, state) => {
            tally.known(state);
        }
        EnqueueOutcome::OwnResult(_) => tally.own_results += 1,
        EnqueueOutcome::Failed(_) => tally.invalid += 1,
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot resolve the path", p.display()))
}

fn walk_all(paths: &[PathBuf]) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for item in media::walk(paths) {
        match item {
            Ok(f) => found.push(f),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (found, problems)
}

/// The add-time check of one file, headers only: what the service would be sent, or why the
/// file is invalid (not an image, over the service's limits, unreadable…). The upload checks
/// again, and more (a JPEG's or PNG's completeness), before a credit is spent.
fn verdict(path: &Path, downscale: bool, limit: u64) -> Verdict {
    let input = media::examine(path, downscale).map_err(|e| e.to_string())?;
    if let media::Input::Direct(probe) = &input
        && let Some(reason) = crate::pipeline::upload::too_large(path, probe.size, limit)
    {
        return Err(reason);
    }
    Ok(input)
}

/// Header checks of every file, on two threads (the machine's cores): no content is read.
fn probe_all(found: Vec<Found>, downscale: bool, limit: u64) -> Vec<(Found, Verdict)> {
    let half = found.len() / 2;
    let mut found = found;
    let second = found.split_off(half);
    let check = |v: Vec<Found>| -> Vec<(Found, Verdict)> {
        v.into_iter()
            .map(|f| {
                let v = verdict(&f.path, downscale, limit);
                (f, v)
            })
            .collect()
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| check(second));
        let mut a = check(found);
        if let Ok(b) = h.join() {
            a.extend(b);
        }
        a
    })
}
