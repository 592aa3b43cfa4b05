//! Log set-up: human-readable on stderr (coloured on a terminal); under systemd
//! (`JOURNAL_STREAM` set) without timestamps and with `<N>` priority prefixes the journal
//! understands; or JSON lines for collectors. The level comes from `HILI_LOG`, else
//! `RUST_LOG`, else `-v`.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::args::{Command, LogFormat};

pub(super) fn init(format: LogFormat, verbose: u8, command: &Command) {
    let default = match verbose {
        0 => match command {
            // Reports print their own output; only problems are logged.
            Command::Status(_)
            | Command::Jobs(_)
            | Command::Credits
            | Command::Doctor
            | Command::Verify(_)
            | Command::Export(_) => "warn",
            // The demo shows hili's progress, not each simulated request.
            Command::Demo(_) => "info,hili::sim=warn",
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
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Auto if under_journal => {
            builder.with_ansi(false).event_format(Journal).try_init()
        }
        LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// The journal's line format: `<priority>message fields`, no timestamp (journald adds it).
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// syslog priorities: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
