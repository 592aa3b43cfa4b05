//! The `[[watch]]` tables of the config file: one drop folder each, with its repair type,
//! output folder, how files are picked up (stability wait, events or polling, rescans), what
//! is ignored and what happens to a source after its job. Parsing, defaults, relative-path
//! resolution and validation live here; [`super::Config`] embeds the list and names the file
//! in the messages. The watcher (`crate::watch`) reads these tables; it does not own them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::media::normalise;
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
    /// On a shared queue: the folder is the same on every node (on the NAS), so its photos
    /// are any node's to process.
    #[serde(default)]
    pub shared: bool,
    /// Also watch subfolders.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Size and mtime must stay unchanged this long before a file is queued.
    #[serde(default = "default_stable_for", with = "super::human_duration")]
    pub stable_for: Duration,
    #[serde(default)]
    pub poll: PollMode,
    /// Scan period when polling.
    #[serde(default = "default_poll_interval", with = "super::human_duration")]
    pub poll_interval: Duration,
    /// Safety-net full scan period when events are used.
    #[serde(default = "default_rescan_interval", with = "super::human_duration")]
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
            shared: false,
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
        let fix = |p: &mut PathBuf| *p = normalise(&base.join(&*p));
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

/// What is wrong with a `[[watch]]` table: the key, and the problem naming the watch folder.
/// [`super::Config`] adds the file.
#[derive(Debug)]
pub(super) struct WatchProblem {
    pub(super) key: &'static str,
    pub(super) problem: String,
}

/// Checks every `[[watch]]` table.
pub(super) fn validate(watches: &[WatchConfig]) -> Result<(), WatchProblem> {
    for (i, w) in watches.iter().enumerate() {
        let folder = w.path.display();
        let invalid = |(key, problem): Problem| WatchProblem {
            key,
            problem: format!("{problem} (watch folder {folder})"),
        };
        check_table(w).map_err(invalid)?;
        check_among(w, &watches[..i], watches).map_err(invalid)?;
    }
    Ok(())
}

/// A key and what is wrong with it, before the watch folder is named.
type Problem = (&'static str, String);

/// Checks one table on its own: keys that need or exclude each other, durations, globs.
fn check_table(w: &WatchConfig) -> Result<(), Problem> {
    if w.path.as_os_str().is_empty() {
        return Err(("watch.path", "is empty: name the drop folder".into()));
    }
    check_rgb(w)?;
    for (key, d) in [
        ("watch.stable_for", w.stable_for),
        ("watch.poll_interval", w.poll_interval),
        ("watch.rescan_interval", w.rescan_interval),
    ] {
        if d.is_zero() {
            return Err((key, "must be longer than 0s, e.g. \"5s\"".into()));
        }
    }
    check_done_dir(w)?;
    let written = [
        ("watch.output", Some(&w.output)),
        ("watch.done_dir", w.done_dir.as_ref()),
        ("watch.failed_dir", w.failed_dir.as_ref()),
    ];
    for (key, dir) in written {
        if dir.is_some_and(|d| *d == w.path) {
            return Err((
                key,
                "is the watch folder itself: use another folder (a subfolder is fine, it is never ingested)"
                    .into(),
            ));
        }
    }
    for g in &w.ignore {
        if let Err(e) = globset::Glob::new(g) {
            return Err(("watch.ignore", format!("glob {g:?} is invalid: {e}")));
        }
    }
    Ok(())
}

/// `rgb` is given exactly when the repair type needs a colour (`bg`).
fn check_rgb(w: &WatchConfig) -> Result<(), Problem> {
    match (w.repair.needs_rgb(), w.rgb) {
        (true, None) => Err((
            "watch.rgb",
            "is missing: repair = \"bg\" needs a colour, e.g. rgb = \"255,255,255\"".into(),
        )),
        (false, Some(_)) => Err((
            "watch.rgb",
            format!(
                "is only for repair = \"bg\", not {:?}: remove it",
                w.repair.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// `done_dir` is given exactly when sources are moved (`after = "move"`).
fn check_done_dir(w: &WatchConfig) -> Result<(), Problem> {
    match (w.after, &w.done_dir) {
        (After::Move, None) => Err((
            "watch.done_dir",
            "is missing: after = \"move\" needs a folder to move sources into".into(),
        )),
        (After::Keep | After::Delete, Some(_)) => Err((
            "watch.done_dir",
            "is only used with after = \"move\": set after = \"move\" or remove it".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks one table against the others: listed once (`earlier` are the tables before it),
/// and writing into no watch folder.
fn check_among(
    w: &WatchConfig,
    earlier: &[WatchConfig],
    watches: &[WatchConfig],
) -> Result<(), Problem> {
    if earlier.iter().any(|o| o.path == w.path) {
        return Err((
            "watch.path",
            "is listed twice: keep one [[watch]] table per folder".into(),
        ));
    }
    if let Some((key, dir, other)) = feeds_a_watch(w, watches) {
        return Err((
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
    let p = normalise(p);
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
