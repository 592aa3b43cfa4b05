//! The `[[watch]]` tables read through [`Config::parse`], so that messages are checked as a
//! user sees them (with the file's name).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{After, Config, ConfigError, PollMode, WatchConfig};
use crate::repair::{Repair, Rgb};

const BASE: &str = "[[watch]]\npath = \"/in\"\nrepair = \"sr\"\noutput = \"/out\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/hili/hili.toml"))
}

#[test]
fn folders_that_feed_a_watch_folder_are_refused() {
    let w = |path: &str, out: &str| {
        format!("[[watch]]\npath = \"{path}\"\nrepair = \"sr\"\noutput = \"{out}\"\n")
    };
    // Each other's output: results would go round A -> B -> A, paid for every time.
    let msg = parse(&format!("{}{}", w("/a", "/b"), w("/b", "/a")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("watch.output") && msg.contains("loop"),
        "{msg}"
    );
    // An output that contains a watch folder (its own, here) leads back into it.
    let msg = parse(&w("/srv/in", "/srv")).unwrap_err().to_string();
    assert!(msg.contains("/srv/in") && msg.contains("loop"), "{msg}");
    // A done_dir that is another watch folder re-processes every moved original.
    let moved = format!(
        "{}after = \"move\"\ndone_dir = \"/b\"\n{}",
        w("/a", "/out-a"),
        w("/b", "/out-b")
    );
    let msg = parse(&moved).unwrap_err().to_string();
    assert!(msg.contains("watch.done_dir"), "{msg}");
    // Through a symbolic link: the output is a link to the other watch folder.
    let dir = tempfile::tempdir().unwrap();
    let (a, b, link) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("l"),
    );
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let text = format!(
        "{}{}",
        w(&a.display().to_string(), &link.display().to_string()),
        w(&b.display().to_string(), "/elsewhere")
    );
    assert!(parse(&text).unwrap_err().to_string().contains("loop"));
    // Outputs beside or inside watch folders are fine.
    parse(&format!("{}{}", w("/a", "/a/out"), w("/b", "/out"))).unwrap();
}

#[test]
fn defaults_and_every_key() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.watch, vec![WatchConfig::new("/in", Repair::Sr, "/out")]);
    let full = "[[watch]]\npath = \"in\"\nrepair = \"bg\"\nrgb = \"255,0,0\"\n\
        output = \"./out/\"\nrecursive = false\nstable_for = \"2s\"\npoll = true\n\
        poll_interval = \"1m\"\nrescan_interval = \"1h\"\nignore = [\"*.raw\", \"tmp/**\"]\n\
        after = \"move\"\ndone_dir = \"../done\"\nfailed_dir = \"/f\"\n\
        [[watch]]\npath = \"/b\"\nrepair = \"colour\"\noutput = \"/o\"\npoll = \"auto\"\n\
        [[watch]]\npath = \"/c\"\nrepair = \"repair\"\noutput = \"/o\"\npoll = false\n\
        after = \"delete\"\n";
    let c = parse(full).unwrap();
    let w = &c.watch[0];
    assert_eq!(w.path, PathBuf::from("/etc/hili/in"));
    assert_eq!(w.output, PathBuf::from("/etc/hili/out"));
    assert_eq!(w.done_dir, Some(PathBuf::from("/etc/done")));
    assert_eq!(w.failed_dir, Some(PathBuf::from("/f")));
    assert_eq!((w.repair, w.rgb), (Repair::Bg, Some(Rgb(255, 0, 0))));
    assert!(!w.recursive);
    assert_eq!(w.stable_for, Duration::from_secs(2));
    assert_eq!(w.poll_interval, Duration::from_secs(60));
    assert_eq!(w.rescan_interval, Duration::from_secs(3600));
    assert_eq!(w.ignore, vec!["*.raw".to_string(), "tmp/**".to_string()]);
    assert_eq!((w.poll, w.after), (PollMode::Always, After::Move));
    assert_eq!(c.watch[1].poll, PollMode::Auto);
    assert_eq!(
        (c.watch[2].poll, c.watch[2].after),
        (PollMode::Never, After::Delete)
    );
}

#[test]
fn invalid_watches_name_key_file_and_folder() {
    for (extra, needle) in [
        ("rgb = \"1,2,3\"\n", "watch.rgb"),
        ("stable_for = \"0s\"\n", "watch.stable_for"),
        ("rescan_interval = \"0s\"\n", "watch.rescan_interval"),
        ("after = \"move\"\n", "watch.done_dir"),
        ("done_dir = \"/d\"\n", "watch.done_dir"),
        ("failed_dir = \"/in\"\n", "watch.failed_dir"),
        ("ignore = [\"a[\"]\n", "a["),
    ] {
        let msg = parse(&format!("{BASE}{extra}")).unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains("/etc/hili/hili.toml") && msg.contains("/in"),
            "{extra}: {msg}"
        );
    }
    for (text, needle) in [
        (BASE.replace("\"sr\"", "\"bg\""), "watch.rgb"),
        (BASE.replace("/out", "/in"), "watch.output"),
        (format!("{BASE}{BASE}"), "twice"),
        (format!("{BASE}colour = 1\n"), "colour"),
        (format!("{BASE}poll = \"sometimes\"\n"), "sometimes"),
        (format!("{BASE}after = \"archive\"\n"), "archive"),
        (format!("{BASE}stable_for = \"soon\"\n"), "soon"),
        (BASE.replace("output = \"/out\"\n", ""), "output"),
    ] {
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains("/etc/hili/hili.toml"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn example_watch_block_parses_with_the_defaults_it_shows() {
    let example = include_str!("../../config/hili.example.toml");
    let start = example.find("# [[watch]]").unwrap();
    let text: String = example[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with("[[watch]]") || l.split(' ').nth(1) == Some("="))
        .map(|l| format!("{l}\n"))
        // The example shows every key; pick values under which all of them are allowed.
        .collect::<String>()
        .replace("repair = \"repair\"", "repair = \"bg\"")
        .replace("after = \"keep\"", "after = \"move\"");
    let c = parse(&text).unwrap();
    let w = &c.watch[0];
    let mut want = WatchConfig::new("/srv/scans/in", Repair::Bg, "/srv/scans/out");
    want.rgb = Some(Rgb(255, 255, 255));
    want.ignore = vec!["*.raw".into(), "/incoming-tmp".into()];
    want.after = After::Move;
    want.done_dir = Some("/srv/scans/done".into());
    want.failed_dir = Some("/srv/scans/failed".into());
    assert_eq!(*w, want);
}
