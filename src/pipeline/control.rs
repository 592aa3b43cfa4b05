//! Run-level switches shared by the stages of one `hili run`: whether uploads are paused (no
//! credits, budget reached, token rejected) and until when, the credits this run has spent, and
//! the wake-up signal that tells the supervisor the store has new work. Job state never lives
//! here: it is all in the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

pub(crate) use super::day::today_began_ms;
use crate::api::error::{ApiError, ErrorClass};
use crate::store::JobId;

/// How long a pause for a refused configuration lasts before the daemon tries again (the
/// configuration may have been fixed and reloaded; `run --once` ends instead).
pub const MISCONFIGURED_RECHECK: Duration = Duration::from_secs(60);

/// How long uploads stay paused for want of room before the next upload looks again.
pub const ROOM_RECHECK: Duration = Duration::from_secs(15);

/// Why uploads are paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// The service reported 0 credits (nums = 0 or errno 9101); re-checked periodically.
    NoCredits,
    /// This run spent its budget (`--budget N` or `[queue] budget`): the limit.
    Budget(u64),
    /// The day's budget (`[queue] budget_per_day`, the limit) is spent, counted from the
    /// queue since local midnight: uploads resume at the next local midnight.
    DailyBudget(u64),
    /// An output folder cannot take results now (full, read-only or not writable): no credit
    /// is spent on a result with nowhere to go; results already paid for are still fetched as
    /// room allows. Lifts by itself: the next upload looks again.
    NoRoom(String),
    /// The service refuses the account as configured (the error says how: token rejected,
    /// unknown third_code, a base URL that is not the API): nothing works until a person
    /// fixes the configuration, so results stop too, and `run --once` ends.
    Misconfigured(String),
}

impl Pause {
    pub fn message(&self) -> String {
        match self {
            Pause::NoCredits => {
                "uploads paused: the account has no credits left; buy more, hili re-checks by itself"
                    .to_string()
            }
            Pause::Budget(n) => format!(
                "uploads paused by the budget: this run spent its {n} credit(s) (--budget or \
                 [queue] budget); run again to spend more"
            ),
            Pause::DailyBudget(n) => format!(
                "uploads paused by the daily budget: {n} credit(s) spent since local midnight \
                 ([queue] budget_per_day); uploads resume at midnight, results already paid for \
                 are still fetched"
            ),
            Pause::NoRoom(why) => format!(
                "uploads paused: {why}; results already paid for are still downloaded as room \
                 allows; free space there (or make the folder writable) and hili resumes by itself"
            ),
            Pause::Misconfigured(why) => format!(
                "the service refuses this configuration, so nothing is sent: {why} (run `hili \
                 doctor`)"
            ),
        }
    }

    /// Whether waiting cannot end this pause: only a person changing the configuration can.
    pub fn needs_a_person(&self) -> bool {
        matches!(self, Pause::Misconfigured(_))
    }
}

pub struct Control {
    pause: Mutex<Option<(Pause, Instant)>>,
    spent: AtomicU64,
    reserved: AtomicU64,
    /// Reservations not yet settled: credits that may be charged any moment and that the
    /// store may not show yet (the daily budget counts them).
    in_flight: AtomicU64,
    /// One budget check and reservation at a time, so two uploads cannot both take the last
    /// credit of the day.
    budget_turn: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    recovered: watch::Sender<bool>,
    /// Consecutive download failures per job in this run (for the hold after max_attempts).
    failures: Mutex<HashMap<JobId, u32>>,
    /// Consecutive uploads of a job the service refused with errno 9006, in this run.
    refusals: Mutex<HashMap<JobId, u32>>,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            pause: Mutex::new(None),
            spent: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            budget_turn: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            recovered: watch::channel(false).0,
            failures: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
        }
    }
}

impl Control {
    /// The wake-up signal, for other parts (the folder watcher) that add work to the store.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Marks start-up recovery as finished.
    pub fn set_recovered(&self) {
        self.recovered.send_replace(true);
    }

    /// Resolves once start-up recovery has finished.
    pub async fn recovered(&self) {
        let mut rx = self.recovered.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Pauses uploads until `for_at_least` has passed (then the next upload re-checks).
    pub fn pause(&self, why: Pause, for_at_least: Duration) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        let changed = p.as_ref().map(|(w, _)| w != &why).unwrap_or(true);
        if changed {
            tracing::warn!("{}", why.message());
        }
        *p = Some((why, Instant::now() + for_at_least));
    }

    /// The one reaction to an API error that no waiting will heal (token rejected, unknown
    /// third_code, a base URL that is not the API): uploads and results pause with the error
    /// as the reason, and the daemon looks again after [`MISCONFIGURED_RECHECK`]. Returns
    /// whether `e` was such an error.
    pub fn pause_if_refused(&self, e: &ApiError) -> bool {
        let refused = e.class() == ErrorClass::Misconfigured;
        if refused {
            self.pause(Pause::Misconfigured(e.to_string()), MISCONFIGURED_RECHECK);
        }
        refused
    }

    /// The pause in force, if any; an expired pause is lifted here.
    pub fn paused(&self) -> Option<(Pause, Instant)> {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        match &*p {
            Some((_, until)) if *until <= Instant::now() => {
                *p = None;
                None
            }
            other => other.clone(),
        }
    }

    pub fn resume(&self) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        if p.take().is_some() {
            tracing::info!("uploads resumed");
        }
    }

    /// Reserves one credit of the run's budget for an upload about to start. `false` when the
    /// budget (0 = none) is used up.
    pub fn reserve(&self, budget: u64) -> bool {
        let r = self.reserved.fetch_add(1, Ordering::SeqCst) + 1;
        if budget > 0 && r > budget {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Settles a reservation: `charged` says whether a credit was (or may have been) spent.
    /// (Start-up recovery settles charges it finds without a reservation.) A reservation given
    /// back lifts a budget pause: the budget was full only while it was held (an answer lost,
    /// its epoch not yet closed), and the pause was put in force then; the next upload looks
    /// again.
    pub fn settle(&self, charged: bool) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if charged {
            self.spent.fetch_add(1, Ordering::SeqCst);
            return;
        }
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        if matches!(
            self.paused(),
            Some((Pause::Budget(_) | Pause::DailyBudget(_), _))
        ) {
            self.resume();
        }
    }

    /// Reservations of this run not yet settled (uploads that may be charged any moment).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Credits this run spent, or may have spent (held after a lost answer).
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::SeqCst)
    }

    /// Counts one more failure of `job`'s current step; returns the count.
    pub fn note_failure(&self, job: JobId) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(job).or_insert(0);
        *n += 1;
        *n
    }

    /// Counts one more 9006 refusal of `job`'s upload in a row; returns the count. A `false`
    /// `refused` (any other outcome) resets it.
    pub fn note_refusal(&self, job: JobId, refused: bool) -> u32 {
        let mut f = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if !refused {
            f.remove(&job);
            return 0;
        }
        let n = f.entry(job).or_insert(0);
        *n += 1;
        *n
    }

    pub fn clear_failures(&self, job: JobId) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&job);
    }

    /// Tells the supervisor that the store has changed and it should look for work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The budgets, checked as a credit is about to be committed to an upload: the day's
/// (`budget_per_day`: the credits the queue's events show charged since local midnight, by
/// this run or an earlier one, plus this run's uploads in flight) and the run's (`budget`).
/// `false` pauses uploads with the reason: the day's until the next local midnight, when
/// uploads resume by themselves; the run's for good.
pub(crate) async fn reserve_credit(ctx: &super::Ctx) -> Result<bool, super::PipelineError> {
    let (c, s) = (&ctx.control, &ctx.settings);
    let _turn = c.budget_turn.lock().await;
    if s.budget_per_day > 0 {
        // Uploads in flight first, then the charges on the books: an upload settles only once
        // its charge is committed, so one that ends between the two reads is counted by the
        // second. (Read the other way round, it could be in neither: the daily budget was
        // overrun by one under load.)
        let flying = c.in_flight();
        let today = ctx
            .store
            .charged_since(super::day::today_began_ms())
            .await?;
        if today + flying >= s.budget_per_day {
            c.pause(
                Pause::DailyBudget(s.budget_per_day),
                super::day::until_next_midnight(),
            );
            return Ok(false);
        }
    }
    if !c.reserve(s.budget) {
        c.pause(
            Pause::Budget(s.budget),
            Duration::from_secs(365 * 24 * 3600),
        );
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_expires_by_itself() {
        let c = Control::default();
        c.pause(Pause::NoCredits, Duration::from_millis(0));
        assert!(c.paused().is_none());
        c.pause(Pause::NoCredits, Duration::from_secs(60));
        assert_eq!(c.paused().map(|p| p.0), Some(Pause::NoCredits));
        c.resume();
        assert!(c.paused().is_none());
    }

    #[test]
    fn budget_reservations() {
        let c = Control::default();
        assert!(c.reserve(2));
        assert!(c.reserve(2));
        assert!(!c.reserve(2));
        c.settle(false); // the second upload was not charged
        assert!(c.reserve(2));
        c.settle(true);
        c.settle(true);
        assert_eq!(c.spent(), 2);
        assert!(!c.reserve(2));
        assert!(c.reserve(0), "0 means no budget");
    }

    #[test]
    fn uploads_in_flight_are_the_unsettled_reservations() {
        let c = Control::default();
        c.settle(true); // a charge recovery found, reserved by no one
        assert_eq!(c.in_flight(), 0);
        assert!(c.reserve(0));
        assert!(c.reserve(0));
        assert_eq!(c.in_flight(), 2);
        c.settle(true);
        c.settle(false);
        assert_eq!((c.in_flight(), c.spent()), (0, 2));
    }
}
