//! `hili completions SHELL`: the shell's completion script for every command and option, made
//! from the same clap definitions as `--help`, so it cannot fall behind the command line.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The completion script for `shell`.
pub(super) fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hili", &mut out);
    out
}
