//! What `hili add` and its dry run found, counted the same way for both: each file's verdict
//! (what would be sent, or why not) and the tally by outcome, worded alike so the real add
//! says what its dry run said.

use serde::Serialize;

use crate::media;
use crate::store::State;

/// A file's verdict at `hili add`: what would be sent (as it is, or converted), or why not.
pub(super) type Verdict = Result<media::Input, String>;

/// What an add (or its dry run) found, by outcome: the same counts for both.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct Tally {
    pub to_queue: u64,
    pub converted: u64,
    pub downscaled: u64,
    pub already_done: u64,
    pub already_queued: u64,
    pub failed_or_held: u64,
    pub invalid: u64,
    pub own_results: u64,
}

impl Tally {
    /// Counts a file already known to the queue in `state`; returns what the dry run says.
    pub(super) fn known(&mut self, state: State) -> String {
        match state {
            State::Done => {
                self.already_done += 1;
                "already done".into()
            }
            // A failed or held job is not waiting for anything: adding the file again does
            // not queue it (only `hili retry` does), so it is not reported as queued.
            State::Failed | State::Held | State::Skipped => {
                self.failed_or_held += 1;
                format!("already {state} (see `hili status`, then `hili retry`)")
            }
            s => {
                self.already_queued += 1;
                format!("already queued ({s})")
            }
        }
    }

    /// Everything but what is queued, worded the same for an add and its dry run.
    pub(super) fn rest(&self) -> String {
        format!(
            "{} already done, {} already queued, {} failed or held, {} invalid (never uploaded), \
             {} hili's own results (skipped)",
            self.already_done,
            self.already_queued,
            self.failed_or_held,
            self.invalid,
            self.own_results
        )
    }
}

/// Counts a photo to queue that is converted (or downscaled) first; returns the dry run's note
/// for it: " (convert TIFF, downscale 8000×6000 → 6000×4500)", or nothing.
pub(super) fn count_conversion(tally: &mut Tally, input: &media::Input) -> String {
    let media::Input::Convert(plan) = input else {
        return String::new();
    };
    tally.converted += u64::from(plan.from.is_converted());
    tally.downscaled += u64::from(plan.fit.is_some());
    let mut parts = Vec::new();
    if plan.from.is_converted() {
        parts.push(format!("convert {}", plan.from));
    }
    if let Some((w, h)) = plan.fit {
        parts.push(format!(
            "downscale {}×{} → {w}×{h}",
            plan.width, plan.height
        ));
    }
    format!(" ({})", parts.join(", "))
}
