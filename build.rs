//! Rebuilds when a migration is added, so `sqlx::migrate!` embeds it; and tells the crate which
//! commit it is built from (`HILI_BUILD`, shown by `hili --version`): the short hash, with
//! ", modified" when tracked files differ from it, or "unknown commit" outside a git checkout
//! (a source tarball, or git missing).
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let build = describe(Path::new(&dir)).unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=HILI_BUILD={build}");
}

/// "f6c82fe" or "f6c82fe, modified"; None when `dir` is not the top of a git work tree (a
/// tarball unpacked inside some other repository must not take that repository's commit).
fn describe(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    // A new commit moves HEAD or the branch it names (loose or packed); staging moves the
    // index; an edit moves a file under src/ or the manifest. Any of these re-runs this script.
    for path in ["HEAD", "index", "packed-refs"] {
        watch(dir, path);
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(dir, &branch);
    }
    for path in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let hash = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    // --no-optional-locks: status must not rewrite the index it watches (a rerun every build).
    let status = git(
        dir,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )?;
    Some(if status.is_empty() {
        hash
    } else {
        format!("{hash}, modified")
    })
}

/// Asks Cargo to re-run when a file of the git directory changes (`--git-path` resolves it in
/// a linked work tree too, where `.git` is a file).
fn watch(dir: &Path, name: &str) {
    if let Some(path) = git(dir, &["rev-parse", "--git-path", name]) {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// The trimmed stdout of `git ARGS` run in `dir`, or None if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
