//! What the .deb ships besides the binary, as a user meets it: `hili completions` for bash,
//! zsh and fish (bash's actually completing), `hili man` rendering without a groff warning,
//! `hili --version` naming the commit it was built from, and the unit's exit-code contract.

use std::path::Path;
use std::process::Command;

use hili::cli::Exit;

use crate::helpers::*;

/// The commands a completion script must offer.
const COMMANDS: [&str; 14] = [
    "add",
    "run",
    "status",
    "jobs",
    "retry",
    "nodes",
    "verify",
    "export",
    "credits",
    "doctor",
    "demo",
    "sim",
    "completions",
    "man",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `hili ARGS`, bare (no config), to completion.
async fn hili(args: &[&str]) -> Out {
    run(Command::new(env!("CARGO_BIN_EXE_hili")), repo(), args).await
}

#[tokio::test]
async fn completions_for_each_shell_offer_every_command_and_option() {
    // fish names a long option without its dashes (`-l repair`).
    for (shell, marker, long) in [
        ("bash", "complete -F _hili", "--"),
        ("zsh", "#compdef hili", "--"),
        ("fish", "complete -c hili", "-l "),
    ] {
        let out = hili(&["completions", shell]).await;
        out.expect_code(0);
        assert!(
            out.stdout.contains(marker),
            "{shell}: no {marker:?}\n{}",
            out.both()
        );
        for command in COMMANDS {
            assert!(
                out.stdout.contains(command),
                "{shell}: {command} is not offered"
            );
        }
        for option in ["repair", "dry-run", "reupload", "log-format"] {
            let option = format!("{long}{option}");
            assert!(
                out.stdout.contains(&option),
                "{shell}: {option} is not offered"
            );
        }
    }
    let out = hili(&["completions", "tcsh"]).await;
    out.expect_code(2);
    assert!(out.stderr.contains("bash"), "{}", out.both());
}

/// What bash offers for the words of `line` (the last one being completed).
async fn bash_offers(script: &Path, line: &[&str]) -> Vec<String> {
    let words = line.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>();
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
         _hili hili '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        line.len() - 1,
        line.join(" "),
        line[line.len() - 1],
        line[line.len() - 2],
    );
    let out = run(Command::new("bash"), repo(), ["--norc", "-c", &program]).await;
    out.expect_code(0);
    out.stdout.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn bash_completes_commands_options_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hili.bash");
    std::fs::write(&script, hili(&["completions", "bash"]).await.stdout).unwrap();
    assert!(
        bash_offers(&script, &["hili", "ver"])
            .await
            .contains(&"verify".into())
    );
    let options = bash_offers(&script, &["hili", "add", "--re"]).await;
    assert!(options.contains(&"--repair".into()), "{options:?}");
    let shells = bash_offers(&script, &["hili", "completions", ""]).await;
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.into()), "{shells:?}");
    }
}

#[tokio::test]
async fn the_man_page_has_every_command_and_renders_cleanly() {
    let out = hili(&["man"]).await;
    out.expect_code(0);
    let page = &out.stdout;
    for part in [
        ".TH hili 1 ",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
    ] {
        assert!(page.contains(part), "no {part}");
    }
    for command in COMMANDS {
        assert!(
            page.contains(&format!(".SS \"hili {command}\"")),
            "no {command}"
        );
    }
    assert!(
        page.contains("\\-\\-reupload"),
        "retry's options are missing"
    );
    // groff comes with man-db (and lintian): render as `man` does, warnings on.
    if Command::new("groff").arg("-v").output().is_err() {
        eprintln!("groff is not installed: the page's rendering is not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hili.1");
    std::fs::write(&file, page).unwrap();
    let mut groff = Command::new("groff");
    groff.args(["-man", "-Tutf8", "-ww", "-rLL=80n", "-P-cbou"]);
    let shown = run(groff, dir.path(), [&file]).await;
    shown.expect_code(0);
    assert_eq!(shown.stderr, "", "groff warns about the page");
    for text in ["EXIT STATUS", "hili add", "Options:", "--repair"] {
        assert!(
            shown.stdout.contains(text),
            "the rendered page lacks {text:?}"
        );
    }
}

#[tokio::test]
async fn version_names_the_commit_built_from() {
    let out = hili(&["--version"]).await;
    out.expect_code(0);
    let line = out.stdout.trim_end();
    let prefix = concat!("hili ", env!("CARGO_PKG_VERSION"), " (");
    let build = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `{prefix}…)`: {line:?}"));
    let hash = build.strip_suffix(", modified").unwrap_or(build);
    let head = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success());
    match head {
        // A checkout: the binary names its commit (a commit made since rebuilds it).
        Some(head) => assert_eq!(hash, String::from_utf8_lossy(&head.stdout).trim()),
        None => assert_eq!(build, "unknown commit"),
    }
}

#[test]
fn the_unit_does_not_restart_a_configuration_error_and_shares_results_with_its_group() {
    let unit = std::fs::read_to_string(repo().join("config/hili.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l == line);
    assert!(has(&format!(
        "RestartPreventExitStatus={}",
        Exit::Config as i32
    )));
    assert!(has("UMask=0027") && has("StateDirectory=hili") && has("Group=hili"));
    assert!(has("ExecStart=/usr/bin/hili run"));
}
