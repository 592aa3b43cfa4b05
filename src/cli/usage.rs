//! hili's own checks of a command line, made before a command touches anything, so that each
//! mistake clap cannot see (an option that needs another, a path that is not there) is a
//! [`Usage`] error: exit code 2, like clap's, with a message that names what to change.

use super::Usage;
use super::args::AddArgs;

/// `hili add`: `--rgb` goes with `bg` and only with it, and every path given exists.
pub(super) fn check_add(args: &AddArgs) -> Result<(), Usage> {
    if args.repair.needs_rgb() && args.rgb.is_none() {
        return Err(Usage(
            "--repair bg needs a background colour: add --rgb R,G,B (e.g. --rgb 255,255,255)"
                .into(),
        ));
    }
    if !args.repair.needs_rgb() && args.rgb.is_some() {
        return Err(Usage(
            "--rgb only applies to --repair bg; remove it or use --repair bg".into(),
        ));
    }
    // `symlink_metadata` too: a dangling link is a path that exists, and the walk reports it.
    let missing: Vec<String> = args
        .paths
        .iter()
        .filter(|p| std::fs::metadata(p).is_err() && std::fs::symlink_metadata(p).is_err())
        .map(|p| p.display().to_string())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(Usage(format!(
            "{one}: no such file or folder; nothing was queued: check the path and add it again"
        ))),
        many => Err(Usage(format!(
            "{}: no such files or folders; nothing was queued: check the paths and add them again",
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::Repair;
    use std::path::PathBuf;

    fn args(paths: &[&str], repair: Repair, rgb: Option<&str>) -> AddArgs {
        AddArgs {
            paths: paths.iter().map(PathBuf::from).collect(),
            repair,
            rgb: rgb.map(|s| s.parse().unwrap()),
            output: PathBuf::from("out"),
            dry_run: false,
            json: false,
            force: false,
        }
    }

    #[test]
    fn missing_paths_and_rgb_mismatches_are_usage_errors_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().display().to_string();
        assert!(check_add(&args(&[&here], Repair::Sr, None)).is_ok());
        let e = check_add(&args(&[&here, "/nope/a.jpg"], Repair::Sr, None)).unwrap_err();
        assert!(e.0.starts_with("/nope/a.jpg: no such file"), "{e}");
        let e = check_add(&args(&[&here], Repair::Bg, None)).unwrap_err();
        assert!(e.0.contains("--rgb R,G,B"), "{e}");
        let e = check_add(&args(&[&here], Repair::Sr, Some("1,2,3"))).unwrap_err();
        assert!(e.0.contains("only applies to --repair bg"), "{e}");
    }
}
