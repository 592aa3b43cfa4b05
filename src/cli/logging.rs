//! Log set-up: human-readable on stderr (coloured on a terminal), or JSON lines for collectors.
//! The level comes from `HILI_LOG`, else `RUST_LOG`, else `-v`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::args::{Command, LogFormat};

pub fn init(format: LogFormat, verbose: u8, command: &Command) {
    let default = match verbose {
        0 => match command {
            // Reports print their own output; only problems are logged.
            Command::Status(_) | Command::Jobs(_) | Command::Credits | Command::Doctor => "warn",
            _ => "info",
        },
        1 => "hili=debug,info",
        _ => "hili=trace,debug",
    };
    let filter = std::env::var("HILI_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
