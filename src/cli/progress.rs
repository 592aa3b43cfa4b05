//! The progress bar of `hili run --once` on a terminal. It counts THIS run's jobs — those it
//! found queued or took on while it ran — never the older done or failed rows of the queue:
//! the store's [`RunTally`] since the event id the run started at (the same jobs the run's
//! summary counts). It advances on every end (done, failed, held, skipped), shows the credits
//! spent, shows an ETA only once a few jobs have ended, draws nothing before there is
//! something to count, and leaves one line behind. Off a terminal, or on `TERM=dumb`, there
//! is no bar: the log lines are the progress.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::{Progress, Snapshot, Summary};
use crate::store::{RunTally, State, Store};

/// Jobs that must have ended before an ETA is shown: before that it is a guess.
const ETA_AFTER: u64 = 3;
/// How often the bar asks the store how far the run has come.
const REFRESH: Duration = Duration::from_millis(400);

/// Whether this process shows a progress bar: stderr is a terminal that can move its cursor.
pub(super) fn wanted() -> bool {
    std::io::stderr().is_terminal() && !super::logging::is_dumb(std::env::var_os("TERM").as_deref())
}

/// How far a run has come: its jobs that ended, by outcome, and those still to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RunCount {
    pub(super) done: u64,
    pub(super) failed: u64,
    pub(super) held: u64,
    pub(super) skipped: u64,
    /// Queued or in flight.
    pub(super) active: u64,
}

impl RunCount {
    pub(super) fn from_tally(t: &RunTally) -> RunCount {
        let n = |s| t.ended.get(&s).copied().unwrap_or(0);
        RunCount {
            done: n(State::Done),
            failed: n(State::Failed),
            held: n(State::Held),
            skipped: n(State::Skipped),
            active: t.active,
        }
    }

    pub(super) fn from_summary(s: &Summary) -> RunCount {
        RunCount {
            done: s.done,
            failed: s.failed,
            held: s.held,
            skipped: s.skipped,
            active: s.unfinished,
        }
    }

    pub(super) fn ended(&self) -> u64 {
        self.done + self.failed + self.held + self.skipped
    }

    /// Every job of the run: ended or still to end.
    pub(super) fn total(&self) -> u64 {
        self.ended() + self.active
    }

    /// "3 done, 1 failed, 0 held" (and skipped when there are any).
    fn outcomes(&self) -> String {
        let mut s = format!(
            "{} done, {} failed, {} held",
            self.done, self.failed, self.held
        );
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }
}

/// Time left at the pace so far, once [`ETA_AFTER`] jobs have ended and some are left.
pub(super) fn eta(count: &RunCount, elapsed: Duration) -> Option<Duration> {
    let (ended, left) = (count.ended(), count.active);
    if ended < ETA_AFTER || left == 0 {
        return None;
    }
    let secs = elapsed.as_secs_f64() * left as f64 / ended as f64;
    Some(Duration::from_secs(secs.ceil() as u64))
}

/// The bar's text beside the bar itself, most important first: a narrow terminal cuts the end.
fn message(count: &RunCount, snap: Option<&Snapshot>, elapsed: Duration) -> String {
    let mut msg = format!("ended: {}", count.outcomes());
    if let Some(s) = snap {
        msg.push_str(&format!(" · {} credit(s) spent", s.credits_spent));
    }
    if let Some(left) = eta(count, elapsed) {
        msg.push_str(&format!(
            " · about {} left",
            humantime::format_duration(left)
        ));
    }
    if let Some(s) = snap {
        msg.push_str(&format!(" · {} in flight", s.in_flight));
        if let Some(p) = &s.paused {
            msg.push_str(" — ");
            msg.push_str(p);
        }
    }
    msg
}

/// The line the bar leaves behind when the run is over.
pub(super) fn final_line(s: &Summary) -> String {
    let count = RunCount::from_summary(s);
    let mut line = format!(
        "{}/{} job(s) of this run ended: {}",
        count.ended(),
        count.total(),
        count.outcomes()
    );
    if count.active > 0 {
        line.push_str(&format!(", {} unfinished", count.active));
    }
    line.push_str(&format!(
        "; {} credit(s) spent in {:.1}s",
        s.credits_spent,
        s.elapsed.as_secs_f64()
    ));
    line
}

/// What the bar was last told.
#[derive(Default)]
struct Live {
    tally: Option<RunTally>,
    snapshot: Option<Snapshot>,
}

struct Shared {
    bar: ProgressBar,
    started: Instant,
    live: Mutex<Live>,
}

impl Shared {
    fn draw(&self) {
        let Ok(live) = self.live.lock() else { return };
        let Some(tally) = &live.tally else { return };
        let count = RunCount::from_tally(tally);
        // Nothing to count yet: no "0/0" bar drawn full.
        if count.total() == 0 {
            return;
        }
        if self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.set_length(count.total());
        self.bar.set_position(count.ended());
        let elapsed = self.started.elapsed();
        self.bar
            .set_message(message(&count, live.snapshot.as_ref(), elapsed));
    }
}

/// The progress bar: asks the store for the run's tally every [`REFRESH`], and takes what is
/// in flight, the credits and a pause from the pipeline's snapshots.
pub(super) struct Bar {
    shared: Arc<Shared>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Bar {
    /// Starts counting the jobs that end after event `mark` (taken before the run began).
    pub(super) fn start(store: Store, mark: i64) -> Bar {
        let bar = ProgressBar::hidden();
        let style = ProgressStyle::with_template("{bar:24} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let shared = Arc::new(Shared {
            bar,
            started: Instant::now(),
            live: Mutex::new(Live::default()),
        });
        let s = shared.clone();
        let refresher = tokio::spawn(async move {
            loop {
                // A failed read leaves the last figures up; the next one corrects them.
                if let Ok(t) = store.run_tally(mark).await {
                    if let Ok(mut live) = s.live.lock() {
                        live.tally = Some(t);
                    }
                    s.draw();
                }
                tokio::time::sleep(REFRESH).await;
            }
        });
        Bar { shared, refresher }
    }

    /// Ends the display before the store closes: the bar gives way to the run's one line.
    pub(super) fn finish(&self, summary: &Summary) {
        self.refresher.abort();
        let bar = &self.shared.bar;
        if bar.is_hidden() {
            return;
        }
        bar.finish_and_clear();
        eprintln!("{}", final_line(summary));
    }
}

impl Progress for Bar {
    fn update(&self, s: &Snapshot) {
        if let Ok(mut live) = self.shared.live.lock() {
            live.snapshot = Some(s.clone());
        }
        self.shared.draw();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.refresher.abort();
        if !self.shared.bar.is_finished() {
            self.shared.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tally(ended: &[(State, u64)], active: u64) -> RunTally {
        RunTally {
            ended: ended.iter().copied().collect::<BTreeMap<_, _>>(),
            active,
        }
    }

    #[test]
    fn a_run_counts_its_own_ends_of_every_kind() {
        // One job ended failed, one held, one done, two still to go: 3/5.
        let t = tally(&[(State::Failed, 1), (State::Held, 1), (State::Done, 1)], 2);
        let c = RunCount::from_tally(&t);
        assert_eq!((c.ended(), c.total()), (3, 5));
        assert_eq!(
            message(&c, None, Duration::from_secs(3)),
            "ended: 1 done, 1 failed, 1 held · about 2s left"
        );
        // Nothing yet: nothing to draw.
        assert_eq!(RunCount::from_tally(&RunTally::default()).total(), 0);
    }

    #[test]
    fn the_eta_waits_for_a_few_ends_and_goes_when_nothing_is_left() {
        let ten_s = Duration::from_secs(10);
        let c = |done, active| RunCount {
            done,
            active,
            ..RunCount::default()
        };
        assert_eq!(eta(&c(2, 8), ten_s), None, "too few ends to tell");
        assert_eq!(eta(&c(5, 5), ten_s), Some(ten_s));
        assert_eq!(eta(&c(5, 0), ten_s), None, "the run is over");
    }

    #[test]
    fn the_final_line_names_only_this_runs_jobs() {
        let s = Summary {
            done: 0,
            failed: 1,
            credits_spent: 0,
            elapsed: Duration::from_millis(1500),
            ..Summary::default()
        };
        assert_eq!(
            final_line(&s),
            "1/1 job(s) of this run ended: 0 done, 1 failed, 0 held; 0 credit(s) spent in 1.5s"
        );
    }
}
