//! Test-only crash hooks. When the environment variable `HILI_CRASH_AT` names a step (for
//! example `after:uploading->processing` or `before-upload-request`), the process aborts the
//! moment it reaches that step, exactly as a `kill -9` would. Crash tests use it to stop a real
//! child process at every interesting instant; in normal use the variable is unset and a hit
//! costs one cached lookup.
//!
//! In-process tests may also attach an action to a step for one file ([`on`]): e.g. replace
//! a photo right before its upload request. Tests run in parallel in one process, so an
//! action fires only for the file it names. This module is the one home of such hooks: the
//! product code only names its steps.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            std::env::var("HILI_CRASH_AT")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Aborts the process if `HILI_CRASH_AT` equals `step`.
pub fn hit(step: &str) {
    if target() == Some(step) {
        eprintln!("hili: HILI_CRASH_AT={step}: aborting on purpose (crash test)");
        std::process::abort();
    }
}

/// Like [`hit`] for steps named by a transition, `before:` or `after:` plus `from->to`.
pub fn hit_transition(when: &str, from: &str, to: &str) {
    if let Some(t) = target()
        && t.starts_with(when)
        && t == format!("{when}:{from}->{to}")
    {
        hit(t);
    }
}

type Action = Box<dyn FnOnce() + Send>;

/// Actions waiting for a step to be reached for a file.
static ACTIONS: Mutex<Vec<(String, PathBuf, Action)>> = Mutex::new(Vec::new());

/// Test hook: runs `f` once, when `step` is next reached for `file` (see [`hit_for`]).
#[doc(hidden)]
pub fn on(step: &str, file: PathBuf, f: impl FnOnce() + Send + 'static) {
    let mut actions = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
    actions.push((step.to_string(), file, Box::new(f)));
}

/// [`hit`] for a step of one file's work; runs the action a test attached to it, if any.
/// Costs one uncontended lock in normal use.
pub fn hit_for(step: &str, file: &Path) {
    hit(step);
    let action = {
        let mut actions = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
        let i = actions.iter().position(|(s, p, _)| s == step && p == file);
        i.map(|i| actions.swap_remove(i).2)
    };
    if let Some(f) = action {
        f();
    }
}
