//! The `[[watch]]` tables of the config file: one drop folder each, with its repair type,
//! output folder, how files are picked up (stability wait, events or polling, rescans), what
//! is ignored and what happens to a source after its job. Parsing, defaults, relative-path
//! resolution and validation live here; `crate::config` only embeds the list.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, human_duration};
use crate::repair::{Repair, Rgb};

/// One watch folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The drop folder.
    pub path: PathBuf,
    pub repair: Repair,
    /// Background colour: required for `bg`, refused otherwise.
    #[serde(default)]
    pub rgb: Option<Rgb>,
    /// Where results are written.
    pub output: PathBuf,
    /// Also watch subfolders.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Size and mtime must stay unchanged this long before a file is queued.
    #[serde(default = "default_stable_for", with = "human_duration")]
    pub stable_for: Duration,
    #[serde(default)]
    pub poll: PollMode,
    /// Scan period when polling.
    #[serde(default = "default_poll_interval", with = "human_duration")]
    pub poll_interval: Duration,
    /// Safety-net full scan period when events are used.
    #[serde(default = "default_rescan_interval", with = "human_duration")]
    pub rescan_interval: Duration,
    /// Globs added to the built-in ignore list (see `crate::watch::Ignore`).
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub after: After,
    /// Where sources go with `after = "move"` (required then).
    #[serde(default)]
    pub done_dir: Option<PathBuf>,
    /// Where failed and held sources go, when set.
    #[serde(default)]
    pub failed_dir: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_stable_for() -> Duration {
    Duration::from_secs(5)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_rescan_interval() -> Duration {
    Duration::from_secs(300)
}

/// `poll = "auto" | true | false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Events, unless the folder is on a network/FUSE filesystem or inotify runs out of
    /// watches: then polling.
    #[default]
    Auto,
    Always,
    Never,
}

impl<'de> Deserialize<'de> for PollMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(PollMode::Always),
            Raw::Bool(false) => Ok(PollMode::Never),
            Raw::Text(s) if s.eq_ignore_ascii_case("auto") => Ok(PollMode::Auto),
            Raw::Text(s) => Err(serde::de::Error::custom(format!(
                "invalid poll {s:?}: write poll = \"auto\", true or false"
            ))),
        }
    }
}

/// What happens to a source after its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    /// The source stays; it is not queued again.
    #[default]
    Keep,
    /// Into `done_dir`, keeping its relative path, never overwriting.
    Move,
    /// Deleted once the output is durably written.
    Delete,
}

impl WatchConfig {
    /// A watch with every optional key at its default (for code and tests).
    pub fn new(path: impl Into<PathBuf>, repair: Repair, output: impl Into<PathBuf>) -> Self {
        WatchConfig {
            path: path.into(),
            repair,
            rgb: None,
            output: output.into(),
            recursive: true,
            stable_for: default_stable_for(),
            poll: PollMode::Auto,
            poll_interval: default_poll_interval(),
            rescan_interval: default_rescan_interval(),
            ignore: Vec::new(),
            after: After::Keep,
            done_dir: None,
            failed_dir: None,
        }
    }

    /// Makes relative paths relative to `base` (the config file's directory, like
    /// `secret_key_file`), and drops `.` components and trailing slashes, so that paths
    /// compare reliably (exclusions, `source_root`).
    pub fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| *p = normalize(&base.join(&*p));
        fix(&mut self.path);
        fix(&mut self.output);
        if let Some(d) = self.done_dir.as_mut() {
            fix(d);
        }
        if let Some(d) = self.failed_dir.as_mut() {
            fix(d);
        }
    }

    /// The directories this watch writes into (never ingested by any watch).
    pub fn written_dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.output.as_path())
            .chain(self.done_dir.as_deref())
            .chain(self.failed_dir.as_deref())
    }
}

/// Lexical normalisation: `.` removed, `a/..` folded (symlinks are not resolved).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Checks every `[[watch]]` table; messages name the file, the key and the watch folder.
pub(crate) fn validate(watches: &[WatchConfig], file: &Path) -> Result<(), ConfigError> {
    for (i, w) in watches.iter().enumerate() {
        let folder = w.path.display();
        let invalid = |key, problem: String| ConfigError::Invalid {
            where_: file.display().to_string(),
            key,
            problem: format!("{problem} (watch folder {folder})"),
        };
        if w.path.as_os_str().is_empty() {
            return Err(invalid(
                "watch.path",
                "is empty: name the drop folder".into(),
            ));
        }
        match (w.repair.needs_rgb(), w.rgb) {
            (true, None) => {
                return Err(invalid(
                    "watch.rgb",
                    "is missing: repair = \"bg\" needs a colour, e.g. rgb = \"255,255,255\"".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "watch.rgb",
                    format!(
                        "is only for repair = \"bg\", not {:?}: remove it",
                        w.repair.name()
                    ),
                ));
            }
            _ => {}
        }
        for (key, d) in [
            ("watch.stable_for", w.stable_for),
            ("watch.poll_interval", w.poll_interval),
            ("watch.rescan_interval", w.rescan_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0s, e.g. \"5s\"".into()));
            }
        }
        match (w.after, &w.done_dir) {
            (After::Move, None) => {
                return Err(invalid(
                    "watch.done_dir",
                    "is missing: after = \"move\" needs a folder to move sources into".into(),
                ));
            }
            (After::Keep | After::Delete, Some(_)) => {
                return Err(invalid(
                    "watch.done_dir",
                    "is only used with after = \"move\": set after = \"move\" or remove it".into(),
                ));
            }
            _ => {}
        }
        let written = [
            ("watch.output", Some(&w.output)),
            ("watch.done_dir", w.done_dir.as_ref()),
            ("watch.failed_dir", w.failed_dir.as_ref()),
        ];
        for (key, dir) in written {
            if dir.is_some_and(|d| *d == w.path) {
                return Err(invalid(
                    key,
                    "is the watch folder itself: use another folder (a subfolder is fine, it is never ingested)"
                        .into(),
                ));
            }
        }
        for g in &w.ignore {
            if let Err(e) = globset::Glob::new(g) {
                return Err(invalid(
                    "watch.ignore",
                    format!("glob {g:?} is invalid: {e}"),
                ));
            }
        }
        if watches[..i].iter().any(|o| o.path == w.path) {
            return Err(invalid(
                "watch.path",
                "is listed twice: keep one [[watch]] table per folder".into(),
            ));
        }
        if let Some((key, dir, other)) = feeds_a_watch(w, watches) {
            return Err(invalid(
                key,
                format!(
                    "{} is, or contains, the watch folder {}: what hili writes there would be \
                     taken for new photos and paid for again, in a loop; use a folder outside \
                     every watch folder",
                    dir.display(),
                    other.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A folder `w` writes into (results, moved sources) that is a watch folder or contains one,
/// compared with symbolic links resolved as far as the paths exist. A folder INSIDE a watch
/// folder is fine: no watch ever ingests the folders watches write into.
fn feeds_a_watch<'a>(
    w: &'a WatchConfig,
    watches: &'a [WatchConfig],
) -> Option<(&'static str, &'a Path, &'a Path)> {
    let written = [
        ("watch.output", Some(w.output.as_path())),
        ("watch.done_dir", w.done_dir.as_deref()),
        ("watch.failed_dir", w.failed_dir.as_deref()),
    ];
    for (key, dir) in written {
        let Some(dir) = dir else { continue };
        let d = resolved(dir);
        for v in watches {
            if resolved(&v.path).starts_with(&d) {
                return Some((key, dir, &v.path));
            }
        }
    }
    None
}

/// `p` with symbolic links resolved in its longest existing ancestor, the rest lexical.
fn resolved(p: &Path) -> PathBuf {
    let p = normalize(p);
    let mut base = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("x/y")), PathBuf::from("x/y"));
    }
}
