//! `hili report [--since DATE | --last-run] [-o FILE]`: writes one self-contained HTML file
//! (see `crate::report`) of every job, of the jobs changed since a moment (the same dates as
//! `hili export --since`), or of the jobs of the latest run — those changed since the start
//! that `hili run` (and `hili demo`) records before anything else — and prints its path.

use std::path::Path;

use anyhow::Context;

use super::Exit;
use super::args::ReportArgs;
use super::export::parse_since;
use crate::config::Config;
use crate::report::{self, Built, ReportJob, when};
use crate::store::Store;

/// Which jobs a report shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Selection {
    All,
    /// Jobs changed at or after this instant (unix ms).
    Since(i64),
    /// Jobs changed since the latest run started.
    LastRun,
}

pub(super) async fn report(config: &Config, args: ReportArgs) -> anyhow::Result<Exit> {
    let which = match (&args.since, args.last_run) {
        (Some(s), _) => Selection::Since(parse_since(s)?),
        (None, true) => Selection::LastRun,
        (None, false) => Selection::All,
    };
    let out = std::path::absolute(&args.output)
        .with_context(|| format!("{}: cannot resolve the path", args.output.display()))?;
    let db = config.database_path();
    let store = Store::open_existing_at(&config.queue_location()?).await?;
    let built = write(&store, &db, which, &out).await;
    store.close().await;
    print_written(&out, &built?);
    Ok(Exit::Ok)
}

/// Writes the report of the jobs `which` selects from `store` (whose database is `db`, beside
/// which the thumbnails are cached) to `out`.
pub(super) async fn write(
    store: &Store,
    db: &Path,
    which: Selection,
    out: &Path,
) -> anyhow::Result<Built> {
    let (since, scope) = match which {
        Selection::All => (None, "every job in the queue".to_string()),
        Selection::Since(ms) => (Some(ms), format!("jobs changed since {}", when(ms))),
        Selection::LastRun => {
            let at = store.last_run_started().await?.with_context(|| {
                format!(
                    "{}: no run is recorded in this queue yet (hili run records when it \
                     starts): give --since DATE, or neither option for every job",
                    db.display()
                )
            })?;
            (Some(at), format!("the last run, started {}", when(at)))
        }
    };
    let rows = store.export_jobs(since).await?;
    let mut notes = store.job_notes().await?;
    let jobs = rows
        .into_iter()
        .map(|r| ReportJob {
            notes: notes.remove(&r.job.id).unwrap_or_default(),
            job: r.job,
        })
        .collect();
    Ok(report::build(jobs, &scope, &report::cache_dir(db), out).await?)
}

/// Says where the report is and what it took.
pub(super) fn print_written(out: &Path, built: &Built) {
    println!("report: {}", out.display());
    println!(
        "  {} job(s); {} thumbnail(s) made, {} from the cache; {:.1} MB",
        built.jobs,
        built.thumbnails_made,
        built.thumbnails_cached,
        built.bytes as f64 / 1e6
    );
}
