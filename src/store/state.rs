//! The job state machine as one declarative table ([`EDGES`]): each edge named once, with the
//! states it leaves and enters, the columns it writes and clears. No I/O here, so every pair is
//! unit-tested; the store applies an edge with one guarded UPDATE and an events row.

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

/// One edge of the job state machine: its name (the store method that takes it, and what its
/// `events` row means), the states it leaves, the state it enters, the columns its caller gives
/// values for, and the column changes that always come with it. Every transition the store
/// makes is one of these; [`check`] and the tests derive from this table, and so does the
/// state diagram in `docs/ARCHITECTURE.md` ([`mermaid`]).
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub name: &'static str,
    pub from: &'static [State],
    pub to: State,
    /// Columns set to a value the caller gives (any subset of them).
    pub given: &'static [&'static str],
    /// `SET` expressions that always come with the edge.
    pub fixed: &'static [&'static str],
    /// Who takes it, and why.
    pub why: &'static str,
}

use State::*;

/// A charge counted: the service took a credit for this job.
const CHARGE: [&str; 2] = ["credit_spent = 1", "charges = charges + 1"];
/// What a person's retry resets: a fresh attempt budget, no backoff, no reason.
const FRESH: [&str; 4] = [
    "attempts = 0",
    "disposed = 0",
    "not_before = 0",
    "reason = NULL",
];
/// What only means something while a result exists at the vendor or on disk: cleared whenever
/// a job goes back to queued (a queued job never has an mdf).
const CLEAR_RESULT: [&str; 6] = [
    "mdf = NULL",
    "img_url = NULL",
    "processing_since = NULL",
    "next_poll_at = NULL",
    "output_path = NULL",
    "output_sha256 = NULL",
];
/// The answer of an upload: the service's id of the photo, and when to ask about it first.
const ANSWER: [&str; 5] = [
    "mdf",
    "img_url",
    "processing_since",
    "next_poll_at",
    "content_sha256",
];

/// `a ++ b` for the constant lists above.
const fn cat<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

const ANSWER_CHARGED: [&str; 3] = cat::<2, 1, 3>(CHARGE, ["reason = NULL"]);
const RETRY_QUEUED: [&str; 10] = cat::<4, 6, 10>(FRESH, CLEAR_RESULT);
const RETRY_SKIPPED: [&str; 11] = cat::<10, 1, 11>(RETRY_QUEUED, ["force = 1"]);
const RETRY_FETCH: [&str; 5] = cat::<4, 1, 5>(FRESH, ["next_poll_at = NULL"]);
const STOP_CHARGED: [&str; 3] = cat::<1, 2, 3>(["next_poll_at = NULL"], CHARGE);

/// The state machine. The order is the life of a job; each edge is named once.
pub const EDGES: &[Edge] = &[
    Edge {
        name: "begin_upload",
        from: &[Queued],
        to: Uploading,
        given: &["credits_before", "content_sha256", "epoch"],
        fixed: &["attempts = attempts + 1", "reason = NULL"],
        why: "the upload's intent, persisted before a byte is sent, with the credits seen",
    },
    Edge {
        name: "uploaded",
        from: &[Uploading],
        to: Processing,
        given: &ANSWER,
        fixed: &CHARGE,
        why: "the service answered with an mdf: one credit was charged",
    },
    Edge {
        name: "adopt_answer",
        from: &[Queued, Failed],
        to: Processing,
        given: &ANSWER,
        fixed: &ANSWER_CHARGED,
        why: "an upload's answer arrived after the job was taken for lost: the paid result is \
              adopted, never dropped",
    },
    Edge {
        name: "adopt_answer_held",
        from: &[Held],
        to: Processing,
        given: &ANSWER,
        fixed: &["credit_spent = 1", "reason = NULL"],
        why: "the same, for a job held as charged (its hold counted the charge)",
    },
    Edge {
        name: "requeue",
        from: &[Uploading, Downloading],
        to: Queued,
        given: &["reason", "not_before"],
        fixed: &CLEAR_RESULT,
        why: "not charged (a refusal, or reconciled as never received), or a result expired \
              with on_expired = \"reupload\"",
    },
    Edge {
        name: "fail",
        from: &[Queued, Uploading],
        to: Failed,
        given: &["reason"],
        fixed: &["next_poll_at = NULL"],
        why: "will not succeed as it is (bad input, a permanent refusal): never charged",
    },
    Edge {
        name: "hold",
        from: &[Queued, Processing, Downloading],
        to: Held,
        given: &["reason"],
        fixed: &["next_poll_at = NULL"],
        why: "needs a person: a twin held after a charge, the service lost the photo, a result \
              expired or could not be fetched",
    },
    Edge {
        name: "hold_charged",
        from: &[Uploading],
        to: Held,
        given: &["reason"],
        fixed: &STOP_CHARGED,
        why: "charged, result unknown: the upload's answer was lost and the credits went down",
    },
    Edge {
        name: "skip",
        from: &[Queued],
        to: Skipped,
        given: &["reason"],
        fixed: &["next_poll_at = NULL"],
        why: "nothing to do: hili's own result, superseded by a later job, or a renamed file \
              an earlier job has",
    },
    Edge {
        name: "begin_download",
        from: &[Processing],
        to: Downloading,
        given: &[],
        fixed: &["next_poll_at = NULL"],
        why: "the service says the result is ready",
    },
    Edge {
        name: "finish",
        from: &[Downloading, Queued],
        to: Done,
        given: &["output_path", "output_sha256"],
        fixed: &["reason = NULL", "next_poll_at = NULL"],
        why: "the output is written and synced (downloaded, or copied from an identical done \
              job without an upload)",
    },
    Edge {
        name: "retry",
        from: &[Failed, Held, Done],
        to: Queued,
        given: &[],
        fixed: &RETRY_QUEUED,
        why: "a person's `hili retry` (from held with a spent credit, or done: `--reupload`)",
    },
    Edge {
        name: "retry_skipped",
        from: &[Skipped],
        to: Queued,
        given: &[],
        fixed: &RETRY_SKIPPED,
        why: "`hili retry --reupload` of a skipped job: processed anyway",
    },
    Edge {
        name: "fetch_twin",
        from: &[Queued],
        to: Downloading,
        given: &["mdf", "img_url", "processing_since"],
        fixed: &["next_poll_at = NULL", "reason = NULL"],
        why: "same photo as a done job whose result file is out of reach (another node's disk, or deleted) while the service still keeps it: fetched again, no credit",
    },
    Edge {
        name: "retry_fetch",
        from: &[Held],
        to: Downloading,
        given: &[],
        fixed: &RETRY_FETCH,
        why: "`hili retry` of a held job whose result the service may still have",
    },
];

/// The edge called `name`. Every name the store uses is in [`EDGES`] (a unit test checks).
pub fn edge(name: &str) -> Option<&'static Edge> {
    EDGES.iter().find(|e| e.name == name)
}

/// Whether `from -> to` is allowed: some edge of [`EDGES`] takes it.
pub fn check(from: State, to: State) -> Result<(), IllegalTransition> {
    if EDGES.iter().any(|e| e.to == to && e.from.contains(&from)) {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// The state diagram as Mermaid, one line per legal pair, labelled with its edges' names:
/// `docs/ARCHITECTURE.md` carries it, and a test keeps the two the same.
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> queued\n");
    for from in State::ALL {
        for to in State::ALL {
            let names: Vec<&str> = EDGES
                .iter()
                .filter(|e| e.to == to && e.from.contains(&from))
                .map(|e| e.name)
                .collect();
            if !names.is_empty() {
                out.push_str(&format!("    {from} --> {to}: {}\n", names.join(", ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The legal pairs, from the table.
    fn legal() -> Vec<(State, State)> {
        let mut v: Vec<(State, State)> = EDGES
            .iter()
            .flat_map(|e| e.from.iter().map(move |&f| (f, e.to)))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn every_pair_of_the_8x8_table() {
        let legal = legal();
        for from in State::ALL {
            for to in State::ALL {
                let got = check(from, to);
                assert_eq!(got.is_ok(), legal.contains(&(from, to)), "{from} -> {to}");
                if let Err(e) = got {
                    assert_eq!(e, IllegalTransition { from, to });
                    assert!(e.to_string().contains(&format!("{from} -> {to}")));
                }
            }
        }
        assert_eq!(legal.len(), 23);
    }

    #[test]
    fn edges_are_named_once_and_never_loop() {
        for (i, e) in EDGES.iter().enumerate() {
            assert!(
                EDGES[..i].iter().all(|o| o.name != e.name),
                "{} twice",
                e.name
            );
            assert!(!e.from.contains(&e.to), "{} loops", e.name);
            assert_eq!(edge(e.name).map(|f| f.name), Some(e.name));
            for col in e.given {
                assert!(
                    e.fixed.iter().all(|f| !f.starts_with(&format!("{col} "))),
                    "{}: {col} is both given and fixed",
                    e.name
                );
            }
        }
    }

    #[test]
    fn every_state_is_reached_and_only_done_failed_held_skipped_rest() {
        for s in State::ALL {
            let entered = EDGES.iter().any(|e| e.to == s);
            assert!(entered || s == Queued, "{s} is never entered");
        }
        // A queued job never keeps a result: every edge into queued clears it.
        for e in EDGES.iter().filter(|e| e.to == Queued) {
            assert!(e.fixed.contains(&"mdf = NULL"), "{} keeps an mdf", e.name);
        }
        // Only the edges that record or adopt an answer count a charge, and a hold after a
        // lost answer.
        let charging: Vec<&str> = EDGES
            .iter()
            .filter(|e| e.fixed.contains(&"charges = charges + 1"))
            .map(|e| e.name)
            .collect();
        assert_eq!(charging, ["uploaded", "adopt_answer", "hold_charged"]);
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

    #[test]
    fn the_architecture_doc_carries_the_diagram_of_this_table() {
        let doc = include_str!("../../docs/ARCHITECTURE.md");
        assert!(
            doc.contains(&mermaid()),
            "docs/ARCHITECTURE.md's state diagram differs from store::state::EDGES; paste:\n{}",
            mermaid()
        );
    }
}
