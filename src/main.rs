//! The `hili` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    hili::cli::dispatch(hili::cli::Cli::parse())
}
