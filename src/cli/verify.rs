//! `hili verify [--output DIR]`: fixity. Re-hashes every done result, and every source still
//! at its path, against the SHA-256 the queue recorded, and compares each output folder's
//! `manifest-sha256.txt` with the queue. Prints one line per changed, missing or unreadable
//! file and per manifest discrepancy, then a summary; exit 3 when there is any.
//!
//! Files are streamed through the hash on several threads (`media::sha256_files`), with a
//! byte-counting progress bar on a terminal. Read-only: it changes no file and no job.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::Exit;
use super::args::VerifyArgs;
use crate::config::Config;
use crate::media::manifest::{self, ManifestEntry};
use crate::media::{self, blocking};
use crate::store::{Job, JobId, State, Store};

/// What a file is to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Result,
    Source,
}

/// One file to re-hash: the latest job that recorded it, and the SHA-256 recorded.
#[derive(Debug, Clone)]
struct Check {
    role: Role,
    path: PathBuf,
    job: JobId,
    expected: String,
}

pub(super) async fn verify(config: &Config, args: VerifyArgs) -> anyhow::Result<Exit> {
    let scope = match &args.output {
        Some(p) => Some(media::normalise(
            &std::path::absolute(p)
                .with_context(|| format!("{}: cannot resolve the path", p.display()))?,
        )),
        None => None,
    };
    let store = Store::open_existing_at(&config.queue_location()?).await?;
    let jobs = store.all_jobs(None).await?;
    let checks = plan(&jobs, scope.as_deref());
    let roots: BTreeSet<PathBuf> = jobs
        .iter()
        .filter(|j| j.state() == State::Done && in_scope(j, scope.as_deref()))
        .map(|j| j.output_dir.clone())
        .collect();
    let mut recorded = Vec::new();
    for root in roots {
        let results = store.done_results_in(&root).await?;
        recorded.push((root.clone(), manifest::entries_in(&root, results)));
    }
    store.close().await;

    let started = Instant::now();
    let required = config.output.manifest;
    let (mut problems, hashed) = blocking(move || {
        let (mut problems, hashed) = rehash(&checks);
        for (root, expected) in &recorded {
            problems.extend(check_manifest(root, expected, required));
        }
        (problems, hashed)
    })
    .await?;
    problems.sort();
    for p in &problems {
        println!("{p}");
    }
    print_summary(&hashed, problems.len(), started.elapsed());
    if problems.is_empty() {
        return Ok(Exit::Ok);
    }
    eprintln!(
        "hili: {} problem(s) found: restore changed or missing files from a backup (the lines \
         above name them and their jobs); a manifest that disagrees with the queue is \
         rewritten by the next `hili run` with [output] manifest = true",
        problems.len()
    );
    Ok(Exit::JobsNeedAttention)
}

/// Whether a job is within `--output DIR`: its output folder or its result is below DIR.
fn in_scope(j: &Job, scope: Option<&Path>) -> bool {
    scope.is_none_or(|dir| {
        j.output_dir.starts_with(dir) || j.output_path.as_ref().is_some_and(|p| p.starts_with(dir))
    })
}

/// Every file to re-hash, sorted by path: each done result, and each source as its latest job
/// (skipped jobs aside) recorded it. Jobs are in id order, so later ones overwrite earlier.
fn plan(jobs: &[Job], scope: Option<&Path>) -> Vec<Check> {
    let mut results = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for j in jobs.iter().filter(|j| in_scope(j, scope)) {
        if let (State::Done, Some(path), Some(sha)) = (j.state(), &j.output_path, &j.output_sha256)
        {
            results.insert(path.clone(), (j.id, sha.clone()));
        }
        if let (false, Some(sha)) = (j.state() == State::Skipped, &j.content_sha256) {
            sources.insert(j.source_path.clone(), (j.id, sha.clone()));
        }
    }
    let checks = |role, map: BTreeMap<PathBuf, (JobId, String)>| {
        map.into_iter().map(move |(path, (job, expected))| Check {
            role,
            path,
            job,
            expected,
        })
    };
    checks(Role::Result, results)
        .chain(checks(Role::Source, sources))
        .collect()
}

/// Counts for the summary: results, sources present, sources gone, bytes to hash.
#[derive(Debug, Default)]
struct Hashed {
    results: usize,
    sources: usize,
    sources_gone: usize,
    bytes: u64,
}

/// Re-hashes the files of `checks` that are there; returns a line per problem. A result that
/// is not there is missing; a source that is not there was moved or deleted after its job
/// (`after = "move"`/`"delete"`, or by hand), which is not a problem.
fn rehash(checks: &[Check]) -> (Vec<String>, Hashed) {
    let mut problems = Vec::new();
    let mut present = Vec::new();
    let mut h = Hashed::default();
    for c in checks {
        match c.role {
            Role::Result => h.results += 1,
            Role::Source => h.sources += 1,
        }
        match std::fs::metadata(&c.path) {
            Ok(m) if m.is_file() => {
                h.bytes += m.len();
                present.push(c);
            }
            Ok(_) => problems.push(format!("{}: is not a file", line_head(c, "changed"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match c.role {
                Role::Result => problems.push(line_head(c, "missing")),
                Role::Source => {
                    h.sources -= 1;
                    h.sources_gone += 1;
                }
            },
            Err(e) => problems.push(format!("{}: {e}", line_head(c, "unreadable"))),
        }
    }
    let bar = progress(h.bytes);
    let paths: Vec<PathBuf> = present.iter().map(|c| c.path.clone()).collect();
    // One per core: SHA-256 (SHA extensions) runs near the speed of a fast disk on one core,
    // and each thread has the disk read ahead for it while it hashes.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let got = media::sha256_files(&paths, threads, &|n| bar.inc(n));
    bar.finish_and_clear();
    for (c, r) in present.into_iter().zip(got) {
        match r {
            Ok(sha) if sha == c.expected => {}
            Ok(sha) => problems.push(format!(
                "{}: the queue recorded SHA-256 {}, the file now has {sha}",
                line_head(c, "changed"),
                c.expected
            )),
            Err(e) => problems.push(format!("{}: {e}", line_head(c, "unreadable"))),
        }
    }
    (problems, h)
}

/// `changed: result /out/a.sr.jpg (job 3)`.
fn line_head(c: &Check, what: &str) -> String {
    let role = match c.role {
        Role::Result => "result",
        Role::Source => "source",
    };
    format!("{what}: {role} {} (job {})", c.path.display(), c.job.0)
}

/// A byte-counting bar on a terminal; hidden otherwise.
fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "verifying {bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// The manifest of `root` against the results the queue records there (`expected`). With
/// `required` (`[output] manifest = true`), a folder with results and no manifest is a
/// problem too.
fn check_manifest(root: &Path, expected: &[ManifestEntry], required: bool) -> Vec<String> {
    let file = root.join(manifest::MANIFEST_NAME);
    let listed = match manifest::read(root) {
        Ok(Some(listed)) => listed,
        Ok(None) if required && !expected.is_empty() => {
            return vec![format!(
                "manifest missing: {} (the queue has {} result(s) there)",
                file.display(),
                expected.len()
            )];
        }
        Ok(None) => return Vec::new(),
        Err(e) => return vec![format!("manifest damaged: {e}")],
    };
    let want: BTreeMap<&Path, &str> = expected
        .iter()
        .map(|e| (e.path.as_path(), e.sha256.as_str()))
        .collect();
    let have: BTreeMap<&Path, &str> = listed
        .iter()
        .map(|e| (e.path.as_path(), e.sha256.as_str()))
        .collect();
    let mut out = Vec::new();
    for (path, sha) in &want {
        match have.get(path) {
            None => out.push(format!(
                "manifest incomplete: {} does not list {}",
                file.display(),
                path.display()
            )),
            Some(h) if h != sha => out.push(format!(
                "manifest differs: {} lists {} with SHA-256 {h}, the queue recorded {sha}",
                file.display(),
                path.display()
            )),
            Some(_) => {}
        }
    }
    for path in have.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!(
            "manifest differs: {} lists {}, which is not a done result in the queue",
            file.display(),
            path.display()
        ));
    }
    out
}

fn print_summary(h: &Hashed, problems: usize, took: Duration) {
    let secs = took.as_secs_f64().max(1e-3);
    println!(
        "verified {} result(s) and {} source(s), {:.1} MB in {:.1}s ({:.0} MB/s): {}",
        h.results,
        h.sources,
        h.bytes as f64 / 1e6,
        secs,
        h.bytes as f64 / 1e6 / secs,
        match problems {
            0 => "all match".to_string(),
            n => format!("{n} problem(s)"),
        }
    );
    if h.sources_gone > 0 {
        println!(
            "{} source(s) no longer at their path (moved or deleted after their jobs): not checked",
            h.sources_gone
        );
    }
}
