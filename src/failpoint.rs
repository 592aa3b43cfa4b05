//! Test-only crash hooks. When the environment variable `HILI_CRASH_AT` names a step (for
//! example `after:uploading->processing` or `before-upload-request`), the process aborts the
//! moment it reaches that step, exactly as a `kill -9` would. Crash tests use it to stop a real
//! child process at every interesting instant; in normal use the variable is unset and a hit
//! costs one cached lookup.

use std::sync::OnceLock;

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
