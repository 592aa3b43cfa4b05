//! `hili add`: walks files and folders and queues the photos found, recording only what `stat`
//! gives (path, size, mtime). `--dry-run` instead reports what would happen and what it would
//! cost, reading nothing but image headers and changing nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Exit;
use super::args::AddArgs;
use crate::config::Config;
use crate::media::{self, Found};
use crate::store::{EnqueueOutcome, NewJob, State, Store};

/// (path, size, mtime) → the state of the latest job for that file version.
type SourceIndex = HashMap<(PathBuf, u64, i64), State>;

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
    let db = config.database_path();
    if args.dry_run {
        let downscale = config.input.oversize == crate::config::Oversize::Downscale;
        return dry_run(&db, found, &args, &output, downscale).await;
    }

    let store = Store::open(&db).await?;
    let (mut queued, mut known, mut results) = (0u64, 0u64, 0u64);
    let mut jobs: Vec<NewJob> = found
        .into_iter()
        .map(|f| NewJob {
            force: args.force,
            ..NewJob::from_found(f, output.clone(), args.repair, args.rgb)
        })
        .collect();
    while !jobs.is_empty() {
        let rest = jobs.split_off(jobs.len().min(BATCH));
        let batch = std::mem::replace(&mut jobs, rest);
        for outcome in store.enqueue_many(batch).await? {
            match outcome {
                EnqueueOutcome::Queued(_) => queued += 1,
                EnqueueOutcome::AlreadyKnown(..) => known += 1,
                EnqueueOutcome::OwnResult(_) => results += 1,
            }
        }
    }
    store.close().await;
    println!(
        "queued {queued} photo(s) for {} (at most {queued} credit(s)); {known} already known",
        args.repair
    );
    if results > 0 {
        println!(
            "skipped {results} file(s) that are hili's own results (use --force to process them as photos)"
        );
    }
    if queued > 0 {
        println!("run `hili run --once` to process them");
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::JobsNeedAttention
    })
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

async fn dry_run(
    db: &Path,
    found: Vec<Found>,
    args: &AddArgs,
    output: &Path,
    downscale: bool,
) -> anyhow::Result<Exit> {
    // Without a database nothing is known yet; a dry run never creates one.
    let (known, results): (SourceIndex, HashSet<PathBuf>) = match db.exists() {
        true => {
            let store = Store::open_existing(db).await?;
            let index = store.source_index(args.repair, args.rgb, output).await?;
            let results = match args.force {
                true => HashSet::new(),
                false => store.result_paths().await?,
            };
            store.close().await;
            (index, results)
        }
        false => (HashMap::new(), HashSet::new()),
    };
    let mut own = 0u64;
    let (mut to_queue, mut done, mut pending, mut invalid) = (0u64, 0u64, 0u64, 0u64);
    let (mut stuck, mut converted, mut downscaled) = (0u64, 0u64, 0u64);
    let probed = tokio::task::spawn_blocking(move || probe_all(found, downscale)).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    for (f, problem) in probed {
        if results.contains(&f.path) {
            own += 1;
            let _ = writeln!(out, "hili's own result  {}", f.path.display());
            continue;
        }
        let state = known.get(&(f.path.clone(), f.size, f.mtime_ns));
        let line = match (state, problem) {
            (Some(State::Done), _) if !args.force => {
                done += 1;
                format!("already done  {}", f.path.display())
            }
            // A failed or held job is not waiting for anything: adding the file again does not
            // queue it (only `hili retry` does), so it is not reported as queued.
            (Some(s @ (State::Failed | State::Held | State::Skipped)), _) if !args.force => {
                stuck += 1;
                format!(
                    "already {s} (see `hili status`, then `hili retry`)  {}",
                    f.path.display()
                )
            }
            (Some(s), _) if !args.force && *s != State::Done => {
                pending += 1;
                format!("already queued ({s})  {}", f.path.display())
            }
            (_, Err(reason)) => {
                invalid += 1;
                format!("invalid  {reason}")
            }
            (_, Ok(input)) => {
                to_queue += 1;
                let how = match input {
                    media::Input::Direct(_) => String::new(),
                    media::Input::Convert(plan) => {
                        converted += u64::from(plan.from.is_converted());
                        downscaled += u64::from(plan.fit.is_some());
                        convert_note(&plan)
                    }
                };
                format!("would queue{how}  {}", f.path.display())
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "dry run: {to_queue} to queue (at most {to_queue} credit(s), about ¥{}; {converted} converted to PNG or JPEG first, {downscaled} downscaled to fit {} px), {done} already done, {pending} already queued, {stuck} failed or held, {invalid} invalid (never uploaded), {own} hili's own results (skipped)",
        to_queue * 5,
        media::MAX_SIDE
    );
    Ok(Exit::Ok)
}

/// What a dry run says of a source it would convert: " (convert TIFF, downscale 8000×6000 →
/// 6000×4500)".
fn convert_note(plan: &media::Plan) -> String {
    let mut parts = Vec::new();
    if plan.from.is_converted() {
        parts.push(format!("convert {}", plan.from));
    }
    if let Some((w, h)) = plan.fit {
        parts.push(format!(
            "downscale {}×{} → {w}×{h}",
            plan.width, plan.height
        ));
    }
    format!(" ({})", parts.join(", "))
}

/// Header checks of every file, on two threads (the machine's cores): no content is read.
fn probe_all(found: Vec<Found>, downscale: bool) -> Vec<(Found, Result<media::Input, String>)> {
    let half = found.len() / 2;
    let mut found = found;
    let second = found.split_off(half);
    let check = |v: Vec<Found>| -> Vec<(Found, Result<media::Input, String>)> {
        v.into_iter()
            .map(|f| {
                let p = media::examine(&f.path, downscale).map_err(|e| e.to_string());
                (f, p)
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
