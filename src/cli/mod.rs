//! The command-line edge: turns parsed arguments into calls on the library, and results into
//! text, tables, JSON and exit codes. `anyhow` lives here and nowhere else.

mod add;
mod add_tally;
pub mod args;
mod client;
mod completions;
mod demo;
pub mod doctor;
mod doctor_queue;
mod dry_run;
mod export;
mod html_report;
mod jobs;
mod logging;
mod man;
mod money;
mod nodes;
mod progress;
mod report;
mod run;
mod usage;
mod verify;

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use args::Cli;
use args::Command;

use crate::config::Config;

/// Exit codes: the one table every command uses, printed by `hili --help` and in the README
/// (a unit test keeps the README's table the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Anything else: I/O, the database, a service that could not be reached, a job refused.
    Error = 1,
    /// A usage or configuration problem, which waiting will not fix: a command-line error
    /// (clap's own, and hili's: `bg` without `--rgb`, a path that does not exist…), an invalid
    /// or incomplete configuration, another `hili run` driving the same queue, or the service
    /// refusing the account (unknown third_code, rejected token, a base URL that is not the API).
    Config = 2,
    /// Some job did not end done: it failed, is held, or was left unfinished.
    JobsNeedAttention = 3,
}

impl Exit {
    /// Every code, in the order the table lists them.
    pub const ALL: [Exit; 4] = [Exit::Ok, Exit::Error, Exit::Config, Exit::JobsNeedAttention];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, as `hili --help` and the README say it.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success: everything asked for was done",
            Exit::Error => {
                "anything else: I/O, the database, the service unreachable, a job refused"
            }
            Exit::Config => {
                "usage or configuration: wrong arguments, a bad config, the queue in use, the account refused"
            }
            Exit::JobsNeedAttention => {
                "some job did not end done: failed, held, or left unfinished (see `hili status`)"
            }
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// The exit-code table at the end of `hili --help`.
pub fn exit_codes_help() -> String {
    let mut s = String::from("Exit codes (every command):\n");
    for e in Exit::ALL {
        s.push_str(&format!("  {}  {}\n", e.code(), e.meaning()));
    }
    s
}

/// A command-line mistake hili finds itself (clap finds the others): exit code 2, like clap's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A configuration problem: reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigProblem(#[from] pub crate::config::ConfigError);

/// Parses the command line. clap's help and errors follow hili's colour rule (`NO_COLOR`,
/// `TERM=dumb`), the same as the log's.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    if !logging::colour_allowed() {
        command = command.color(clap::ColorChoice::Never);
    }
    let mut matches = command.get_matches_mut();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// Runs one command to completion.
pub fn dispatch(cli: Cli) -> ExitCode {
    logging::init(cli.log_format, cli.verbose, &cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hili: cannot start the async runtime: {e}");
            return Exit::Error.into();
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("hili: {e:#}");
            if e.downcast_ref::<ConfigProblem>().is_some()
                || e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<crate::store::RunLockError>()
                    .is_some_and(|l| matches!(l, crate::store::RunLockError::Held { .. }))
            {
                Exit::Config.into()
            } else {
                Exit::Error.into()
            }
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<Exit> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Sim(args) => {
            let shutdown = stop_on_signal();
            crate::sim::run(args, shutdown)
                .await
                .context("the simulator stopped with an error")?;
            Ok(Exit::Ok)
        }
        Command::Doctor(args) => {
            Ok(doctor::run(config_path, &mut std::io::stdout(), args.json).await)
        }
        Command::Credits(args) => {
            let config = load_config(config_path)?;
            let client = client::client(&config)?;
            let n = client
                .credits()
                .await
                .context("could not read the credits left")?;
            match args.json {
                true => println!("{}", serde_json::json!({ "credits_left": n })),
                false => println!("{n} credits left"),
            }
            Ok(Exit::Ok)
        }
        Command::Add(args) => {
            usage::check_add(&args)?;
            add::add(&load_config(config_path)?, args).await
        }
        Command::Run(args) => run::run(&load_config(config_path)?, config_path, args).await,
        Command::Status(args) => report::status(&load_config(config_path)?, args).await,
        Command::Jobs(args) => jobs::jobs(&load_config(config_path)?, args).await,
        Command::Retry(args) => report::retry(&load_config(config_path)?, args).await,
        Command::Nodes(args) => nodes::nodes(&load_config(config_path)?, args).await,
        Command::Verify(args) => verify::verify(&load_config(config_path)?, args).await,
        Command::Export(args) => export::export(&load_config(config_path)?, args).await,
        Command::Report(args) => html_report::report(&load_config(config_path)?, args).await,
        Command::Demo(args) => demo::demo(args, config_path).await,
        Command::Completions(args) => print(&completions::script(args.shell)),
        Command::Man => print(&man::page().context("could not render the manual page")?),
    }
}

/// Writes a generated script or page to stdout.
fn print(bytes: &[u8]) -> anyhow::Result<Exit> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("could not write to stdout")?;
    Ok(Exit::Ok)
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path).map_err(ConfigProblem)?)
}

/// A token cancelled by the first SIGINT or SIGTERM; a second signal exits at once (the store
/// is consistent at every instant, so that is safe).
pub fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested: finishing requests in flight (signal again to exit now)");
        t.cancel();
        wait_for_signal().await;
        eprintln!("hili: second signal, exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_and_help_list_the_one_exit_code_table() {
        let readme = include_str!("../../README.md");
        let help = exit_codes_help();
        for e in Exit::ALL {
            let row = format!("| {} | {} |", e.code(), e.meaning());
            assert!(readme.contains(&row), "README lacks the row {row}");
            assert!(help.contains(&format!("  {}  {}", e.code(), e.meaning())));
        }
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
