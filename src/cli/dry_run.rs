//! `hili add --dry-run`: what an add would do with each file — queue it (converted or
//! downscaled first, or not), leave it (already done, queued, failed or held, hili's own
//! result), or record it invalid with its reason — and what it would cost, in credits and in
//! money, against the credits left on the account. Reads nothing but image headers and the
//! queue, creates nothing; `--json` prints it as one object.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::Exit;
use super::add_tally::{Tally, Verdict, count_conversion};
use super::args::AddArgs;
use super::money::{self, CreditsLeft};
use crate::config::Config;
use crate::media::{self, Found};
use crate::store::{Location, State, Store};

/// (path, size, mtime) → the state of the latest job for that file version.
type SourceIndex = HashMap<(PathBuf, u64, i64), State>;

/// One file's line: what the add would do with it, and its detail (a note or a reason).
struct Line {
    path: PathBuf,
    action: &'static str,
    detail: String,
}

pub(super) async fn dry_run(
    config: &Config,
    probed: Vec<(Found, Verdict)>,
    args: &AddArgs,
    output: &Path,
) -> anyhow::Result<Exit> {
    let (known, results) = what_the_queue_knows(&config.queue_location()?, args, output).await?;
    let mut tally = Tally::default();
    let lines: Vec<Line> = probed
        .into_iter()
        .map(|(f, verdict)| classify(&mut tally, &known, &results, args.force, f, verdict))
        .collect();
    let left = money::credits_left(config).await;
    if args.json {
        print_json(config, args, &tally, &lines, &left)?;
        return Ok(Exit::Ok);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in &lines {
        let _ = match l.action {
            "queue" => writeln!(out, "would queue{}  {}", l.detail, l.path.display()),
            "invalid" => writeln!(out, "invalid  {}", l.detail),
            "own_result" => writeln!(out, "hili's own result  {}", l.path.display()),
            _ => writeln!(out, "{}  {}", l.detail, l.path.display()),
        };
    }
    let _ = writeln!(
        out,
        "dry run: {n} to queue (at most {n} credit(s), about {}; {} converted to PNG or JPEG \
         first, {} downscaled to fit {} px), {}",
        config.account.cost(tally.to_queue),
        tally.converted,
        tally.downscaled,
        media::MAX_SIDE,
        tally.rest(),
        n = tally.to_queue,
    );
    let _ = writeln!(out, "{}", money::covers_line(config, tally.to_queue, &left));
    Ok(Exit::Ok)
}

/// The queue's jobs for these settings, and hili's own results (none with `--force`). Without
/// a database nothing is known yet; a dry run never creates one.
async fn what_the_queue_knows(
    queue: &Location,
    args: &AddArgs,
    output: &Path,
) -> anyhow::Result<(SourceIndex, HashSet<PathBuf>)> {
    if queue.sqlite_path().is_some_and(|db| !db.exists()) {
        return Ok((HashMap::new(), HashSet::new()));
    }
    let store = Store::open_existing_at(queue).await?;
    let index = store.source_index(args.repair, args.rgb, output).await?;
    let results = match args.force {
        true => HashSet::new(),
        false => store.result_paths().await?,
    };
    store.close().await;
    Ok((index, results))
}

/// What the add would do with one file, as the real add decides it: hili's own result first,
/// then a file version already known (an invalid one always: it is never forced), then the
/// verdict of the check.
fn classify(
    tally: &mut Tally,
    known: &SourceIndex,
    results: &HashSet<PathBuf>,
    force: bool,
    f: Found,
    verdict: Verdict,
) -> Line {
    let line = |action, detail| Line {
        path: f.path.clone(),
        action,
        detail,
    };
    if results.contains(&f.path) {
        tally.own_results += 1;
        return line("own_result", String::new());
    }
    let state = known.get(&(f.path.clone(), f.size, f.mtime_ns)).copied();
    match (state, verdict) {
        (Some(s), Err(_)) => line(action_of(s), tally.known(s)),
        // `--force` queues a known file again, except one still queued (it is marked forced).
        (Some(s), Ok(_)) if !force || s == State::Queued => line(action_of(s), tally.known(s)),
        (_, Err(reason)) => {
            tally.invalid += 1;
            line("invalid", reason)
        }
        (_, Ok(input)) => {
            tally.to_queue += 1;
            line("queue", count_conversion(tally, &input))
        }
    }
}

/// The JSON name of what happens to a file already known in `state`.
fn action_of(state: State) -> &'static str {
    match state {
        State::Done => "already_done",
        State::Failed | State::Held | State::Skipped => "failed_or_held",
        _ => "already_queued",
    }
}

fn print_json(
    config: &Config,
    args: &AddArgs,
    tally: &Tally,
    lines: &[Line],
    left: &CreditsLeft,
) -> anyhow::Result<()> {
    let files: Vec<_> = lines
        .iter()
        .map(|l| {
            json!({
                "path": l.path.to_string_lossy(),
                "action": l.action,
                "detail": (!l.detail.is_empty()).then_some(l.detail.trim()),
            })
        })
        .collect();
    let out = json!({
        "dry_run": true,
        "repair": args.repair.name(),
        "counts": tally,
        "credits": tally.to_queue,
        "cost": money::cost_json(config, tally.to_queue),
        "credits_left": money::left_json(left, tally.to_queue),
        "files": files,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
