//! The command line, as clap types. `main.rs` parses these and hands them to [`super::dispatch`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::repair::{Repair, Rgb};
use crate::store::State;

/// `hili --version`: the release and the commit it was built from (see build.rs), e.g.
/// `0.1.0 (f6c82fe, modified)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HILI_BUILD"), ")");

/// hili feeds photos through the Hili PhotoEnhance cloud API (super-resolution, old-photo
/// repair, colourisation, ID-photo background) without ever paying twice for a photo.
#[derive(Debug, Parser)]
#[command(
    name = "hili",
    version = VERSION,
    about,
    max_term_width = 100,
    after_help = super::exit_codes_help()
)]
pub struct Cli {
    /// Configuration file (default: $HILI_CONFIG, ./hili.toml, $XDG_CONFIG_HOME/hili/hili.toml,
    /// /etc/hili/hili.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// More log detail (-v: debug, -vv: trace). HILI_LOG or RUST_LOG override it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable; coloured on a terminal.
    Auto,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue photos (files or directories, recursively) for processing.
    Add(AddArgs),
    /// Process the queue: `--once` processes everything queued and exits.
    Run(RunArgs),
    /// Counts per state, credits, and the held jobs that need you.
    Status(StatusArgs),
    /// One line per job.
    Jobs(JobsArgs),
    /// Queue failed or held jobs again.
    Retry(RetryArgs),
    /// The nodes of a shared queue: live or not, last heartbeat, leases, jobs by state.
    Nodes(NodesArgs),
    /// Re-hash every result (and every source still present) against the queue's SHA-256s,
    /// and check the output folders' manifests: exit 3 when anything changed or is missing.
    Verify(VerifyArgs),
    /// One row per job (or per event, with --events) as CSV or JSON, for the archive's records.
    Export(ExportArgs),
    /// One HTML file to look at: before/after of every job (or those of a period or of the
    /// last run), with sizes, repair, conversion, state, reasons and credits.
    Report(ReportArgs),
    /// Print the credits left on the account.
    Credits(CreditsArgs),
    /// Check the configuration, the secret, the clock and the service, one line each.
    Doctor(DoctorArgs),
    /// Try hili end to end on generated photos against the built-in simulator.
    Demo(DemoArgs),
    /// Run the built-in simulator of the Hili API (offline stand-in, not the real AI).
    Sim(crate::sim::SimArgs),
    /// Print a shell completion script to stdout (the .deb installs them; from source e.g.
    /// `hili completions bash > ~/.local/share/bash-completion/completions/hili`).
    Completions(CompletionsArgs),
    /// Print this manual page (roff) to stdout: `hili man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Photos or directories of photos.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// What to do: sr (super-resolution), repair, colour (or color), bg (background).
    #[arg(long, value_parser = clap::value_parser!(Repair))]
    pub repair: Repair,
    /// Background colour for bg, as R,G,B (e.g. 255,255,255).
    #[arg(long, value_parser = clap::value_parser!(Rgb))]
    pub rgb: Option<Rgb>,
    /// Where results go; the sources' folder structure is kept below it.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Show what would be queued, what is already done, invalid files, and the cost; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Process again even photos whose result already exists (spends credits).
    #[arg(long)]
    pub force: bool,
    /// With --dry-run: print it as one JSON object.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Process everything queued, then exit (0: all done, 3: some failed or held).
    #[arg(long)]
    pub once: bool,
    /// With --once: print the run's summary as one JSON object on stdout.
    #[arg(long, requires = "once")]
    pub json: bool,
    /// With --once: spend at most N credits in this run (in place of [queue] budget); the rest
    /// stays queued and the run exits 3.
    #[arg(long, value_name = "N", requires = "once", value_parser = clap::value_parser!(u64).range(1..))]
    pub budget: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CreditsArgs {
    /// Machine-readable output: {"credits_left": N}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output: every check with its outcome and detail.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, uploading, processing, downloading, done, failed, held,
    /// skipped).
    #[arg(long, value_parser = clap::value_parser!(State))]
    pub state: Option<State>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Machine-readable output: one array, times in RFC 3339 UTC.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Job ids (see `hili jobs`).
    #[arg(value_name = "ID", required_unless_present_any = ["failed", "held"])]
    pub ids: Vec<i64>,
    /// Every failed job.
    #[arg(long)]
    pub failed: bool,
    /// Every held job.
    #[arg(long)]
    pub held: bool,
    /// Upload again even if the service already has the photo: spends a credit per job.
    #[arg(long)]
    pub reupload: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only the results written below this folder (and their sources).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// csv (a header line, then one line per row) or json (an array of objects).
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only jobs changed (or events written) at or after this moment: RFC 3339
    /// (2026-11-30T08:00:00Z, 2026-11-30T09:00:00+01:00) or a day, YYYY-MM-DD (from 00:00 UTC).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// One row per event (PREMIS: type, UTC time, object, agent, outcome) instead of per job.
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only jobs changed at or after this moment: RFC 3339 (2026-11-30T08:00:00Z) or a day,
    /// YYYY-MM-DD (from 00:00 UTC), as for `hili export --since`.
    #[arg(long, value_name = "DATE", conflicts_with = "last_run")]
    pub since: Option<String>,
    /// Only the jobs of the latest `hili run`: those changed since it started.
    #[arg(long)]
    pub last_run: bool,
    /// Where to write the report.
    #[arg(short, long, value_name = "FILE", default_value = "hili-report.html")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo writes its photos, database and results.
    #[arg(long, default_value = "hili-demo")]
    pub dir: PathBuf,
}
