//! Log set-up: human-readable on stderr (coloured on a terminal unless `NO_COLOR` is set or
//! `TERM=dumb`, see [`colour`]); under systemd
//! (`JOURNAL_STREAM` set) without timestamps and with `<N>` priority prefixes the journal
//! understands; or JSON lines for collectors. The level comes from `HILI_LOG`, else
//! `RUST_LOG`, else `-v`.

use std::ffi::OsStr;
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
            | Command::Nodes(_)
            | Command::Credits(_)
            | Command::Doctor(_)
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
        .unwrap_or_else(|| quiet_dependencies(EnvFilter::new(default)));
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
        LogFormat::Auto => builder.with_ansi(colour_on_stderr()).try_init(),
    };
}

/// hili's own default filter, with two chatty dependencies kept at `warn`.
fn quiet_dependencies(filter: EnvFilter) -> EnvFilter {
    filter
        // PostgreSQL's notices ("relation … already exists, skipping" when a node checks the
        // schema) are the server talking to itself, not news for the user.
        // Likewise the pool's notes on connections it drops while the server restarts: hili
        // says itself what it waits for.
        .add_directive(quiet("sqlx::postgres::notice=warn"))
        .add_directive(quiet("sqlx::pool=warn"))
}

/// A directive that keeps a chatty dependency at `warn`.
fn quiet(directive: &str) -> tracing_subscriber::filter::Directive {
    directive
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::WARN.into())
}

/// Whether hili may colour what it writes to stderr, for this process.
pub(super) fn colour_on_stderr() -> bool {
    colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
        std::io::stderr().is_terminal(),
    )
}

/// Whether a terminal would get colour for this process's environment: the rule of
/// [`colour`] with the terminal test left to the writer (clap tests its own stream).
/// clap's own rule alone colours a `TERM=dumb` terminal when `CI` is set, so hili tells it.
pub(super) fn colour_allowed() -> bool {
    colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
        true,
    )
}

/// Colour only on a terminal that shows it, and never when the user said no: `NO_COLOR` set
/// to anything but the empty string (the no-color.org convention), or `TERM=dumb`.
pub(super) fn colour(no_color: Option<&OsStr>, term: Option<&OsStr>, terminal: bool) -> bool {
    let refused = no_color.is_some_and(|v| !v.is_empty());
    terminal && !refused && !is_dumb(term)
}

/// `TERM=dumb`: a terminal that understands neither colours nor cursor movement.
pub(super) fn is_dumb(term: Option<&OsStr>) -> bool {
    term.is_some_and(|t| t == "dumb")
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

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert!(colour(None, os("xterm-256color"), true));
        assert!(colour(None, None, true));
        assert!(!colour(None, os("xterm"), false), "not a terminal");
        assert!(!colour(os("1"), os("xterm"), true), "NO_COLOR=1");
        assert!(
            !colour(os("false"), os("xterm"), true),
            "any NO_COLOR value"
        );
        assert!(
            colour(os(""), os("xterm"), true),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(None, os("dumb"), true), "TERM=dumb");
    }
}
