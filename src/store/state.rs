//! The job state machine as a pure table: which state may follow which. No I/O here, so every
//! pair is unit-tested; the store applies a legal pair with a guarded UPDATE and an events row.

use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. Stored in the `jobs.state` column by [`State::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Waiting for an upload (or for its content hash / backoff).
    Queued,
    /// Upload intent persisted; the request may or may not have reached the vendor.
    Uploading,
    /// Uploaded and charged; the vendor is working on it (we poll with its mdf).
    Processing,
    /// Result ready; fetching it to disk.
    Downloading,
    /// Output written durably.
    Done,
    /// Will not succeed as is (bad input, permanent vendor error); `retry` re-queues it.
    Failed,
    /// Needs a person: charged with an unknown or expired result. `retry` decides.
    Held,
    /// Not processed, on purpose, and nothing to do: the file is hili's own result of another
    /// job, or another job took over its content. No credit is spent; `reason` says why.
    Skipped,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Queued,
        State::Uploading,
        State::Processing,
        State::Downloading,
        State::Done,
        State::Failed,
        State::Held,
        State::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Uploading => "uploading",
            State::Processing => "processing",
            State::Downloading => "downloading",
            State::Done => "done",
            State::Failed => "failed",
            State::Held => "held",
            State::Skipped => "skipped",
        }
    }

    /// States in which a credit has been (or may be being) spent and work is under way.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            State::Uploading | State::Processing | State::Downloading
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state {0:?}: expected one of queued, uploading, processing, downloading, done, failed, held, skipped"
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// A transition the state machine forbids; a bug in the caller, never a user error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "illegal job transition {from} -> {to}: the state machine forbids it (a bug in hili; please report it with `hili jobs` output)"
)]
pub struct IllegalTransition {
    pub from: State,
    pub to: State,
}

/// Whether `from -> to` is allowed. The comment on each arm says who takes it and why.
pub fn check(from: State, to: State) -> Result<(), IllegalTransition> {
    use State::*;
    let ok = match (from, to) {
        // Upload worker persists its intent before sending.
        (Queued, Uploading) => true,
        // Bad input found before spending anything.
        (Queued, Failed) => true,
        // Same identity already done: output copied, no upload.
        (Queued, Done) => true,
        // Same identity as a job held after a charge: wait for a person, never pay twice.
        (Queued, Held) => true,
        // Vendor answered with an mdf.
        (Uploading, Processing) => true,
        // Not charged (code=9000 transient, or reconciled as never received).
        (Uploading, Queued) => true,
        // Charged but the answer was lost.
        (Uploading, Held) => true,
        // Permanent errno: failed uploads are not charged.
        (Uploading, Failed) => true,
        // Poller saw status 200.
        (Processing, Downloading) => true,
        // Server lost the image (9002 at status).
        (Processing, Held) => true,
        // Output written and fsynced.
        (Downloading, Done) => true,
        // Result expired: a lost credit to report.
        (Downloading, Held) => true,
        // Result expired and the config says re-upload.
        (Downloading, Queued) => true,
        // User retries.
        (Failed, Queued) | (Held, Queued) | (Held, Downloading) => true,
        // An upload's answer arrived after the job was reconciled as lost: the paid result is
        // adopted, never dropped (`Store::adopt_answer`).
        (Queued, Processing) | (Held, Processing) | (Failed, Processing) => true,
        // Forced re-processing.
        (Done, Queued) => true,
        // Found to be hili's own result, or taken over by a job of the same content: no upload.
        (Queued, Skipped) => true,
        // `hili retry --reupload` processes it anyway.
        (Skipped, Queued) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    const LEGAL: [(State, State); 22] = [
        (Queued, Uploading),
        (Queued, Failed),
        (Queued, Done),
        (Queued, Held),
        (Uploading, Processing),
        (Uploading, Queued),
        (Uploading, Held),
        (Uploading, Failed),
        (Processing, Downloading),
        (Processing, Held),
        (Downloading, Done),
        (Downloading, Held),
        (Downloading, Queued),
        (Failed, Queued),
        (Held, Queued),
        (Held, Downloading),
        (Done, Queued),
        (Queued, Processing),
        (Held, Processing),
        (Failed, Processing),
        (Queued, Skipped),
        (Skipped, Queued),
    ];

    #[test]
    fn every_pair_of_the_8x8_table() {
        let mut legal = 0;
        for from in State::ALL {
            for to in State::ALL {
                let expected = LEGAL.contains(&(from, to));
                let got = check(from, to);
                assert_eq!(got.is_ok(), expected, "{from} -> {to}");
                if let Err(e) = got {
                    assert_eq!(e, IllegalTransition { from, to });
                    assert!(e.to_string().contains(&format!("{from} -> {to}")));
                } else {
                    legal += 1;
                }
            }
        }
        assert_eq!(legal, LEGAL.len());
    }

    #[test]
    fn no_self_transitions() {
        for s in State::ALL {
            assert!(check(s, s).is_err(), "{s}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(" Held ".parse::<State>(), Ok(Held));
        assert!("running".parse::<State>().is_err());
    }

    #[test]
    fn in_flight_states() {
        let flying: Vec<State> = State::ALL.into_iter().filter(|s| s.in_flight()).collect();
        assert_eq!(flying, vec![Uploading, Processing, Downloading]);
    }
}
