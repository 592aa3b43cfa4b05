//! The `hili` binary: parses the command line and hands it to the library.

fn main() -> std::process::ExitCode {
    hili::cli::dispatch(hili::cli::parse())
}
