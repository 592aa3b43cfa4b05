//! The command-line edge: turns parsed arguments into calls on the library, and results into
//! text, tables, JSON and exit codes. `anyhow` lives here and nowhere else.

mod add;
pub mod args;
mod completions;
mod demo;
pub mod doctor;
mod export;
mod logging;
mod man;
mod report;
mod run;
mod verify;

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use args::Cli;
use args::Command;

use crate::config::Config;

/// Exit codes, as documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Something went wrong that is not about a job (I/O, database, service unreachable).
    Error = 1,
    /// hili cannot run as configured, and waiting will not help: the configuration is invalid
    /// or missing something, another `hili run` drives the same queue, or the service refuses
    /// the account (unknown third_code, rejected token, a base URL that is not the API).
    Config = 2,
    /// Some job ended failed or held, or work was left unfinished.
    JobsNeedAttention = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A configuration problem: reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigProblem(#[from] pub crate::config::ConfigError);

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
        Command::Doctor => {
            let ok = doctor::run(config_path, &mut std::io::stdout()).await;
            Ok(if ok { Exit::Ok } else { Exit::Error })
        }
        Command::Credits => {
            let config = load_config(config_path)?;
            let client = run::client(&config)?;
            let n = client
                .credits()
                .await
                .context("could not read the credits left")?;
            println!("{n} credits left");
            Ok(Exit::Ok)
        }
        Command::Add(args) => add::add(&load_config(config_path)?, args).await,
        Command::Run(args) => run::run(&load_config(config_path)?, config_path, args).await,
        Command::Status(args) => report::status(&load_config(config_path)?, args).await,
        Command::Jobs(args) => report::jobs(&load_config(config_path)?, args).await,
        Command::Retry(args) => report::retry(&load_config(config_path)?, args).await,
        Command::Verify(args) => verify::verify(&load_config(config_path)?, args).await,
        Command::Export(args) => export::export(&load_config(config_path)?, args).await,
        Command::Demo(args) => demo::demo(args).await,
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
