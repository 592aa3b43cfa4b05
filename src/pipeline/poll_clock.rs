//! When to ask the service whether a photo is processed, learned from the processing times
//! seen recently. Every status call spends the account's request rate, so the first one is
//! made when a photo like the last ones would be ready (a high quantile of the recent upload →
//! ready times, which may be longer than `poll_interval`), then again after a quarter of the
//! time it has taken so far, never waiting longer than `poll_interval` between those calls. On a steady service a photo is asked about about once, and its
//! result is fetched soon after it is ready.
//!
//! What is learned: a photo found ready at its first call was ready at some time up to then,
//! so that time is recorded a little lower (this is how the clock learns that the service got
//! faster); a photo found ready at a later call is recorded as found. The clock lives in
//! memory: a new run starts from `poll_interval` again.
//!
//! The constants were chosen on a model of this loop (steady 2 s, 1.8–2.2 s and 2–12 s
//! processing): a window of 8 and the 0.9 quantile ask about 1.05–1.15 times a photo on a
//! steady service, with the result fetched 0.2–0.3 s after it is ready at the median.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::JobId;

/// How many recent photos the clock learns from.
const WINDOW: usize = 8;
/// Fewer photos seen than this: the first call waits `poll_interval`, as without learning.
const MIN_SEEN: usize = 3;
/// Which of the recent times the first call waits for: high, so few photos need a second.
const QUANTILE: f64 = 0.9;
/// A photo ready at its first call is recorded this much earlier than the call.
const PROBE_DOWN: f64 = 0.85;
/// The longest first wait, whatever was seen (a result is kept for an hour after processing).
const MAX_FIRST_WAIT: Duration = Duration::from_secs(600);
/// The shortest wait between two calls about one photo.
const MIN_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub struct PollClock {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Upload → ready times of the last photos, oldest first.
    seen: VecDeque<Duration>,
    /// Photos that were still processing at a call (their next "ready" is not a first).
    asked_again: HashSet<JobId>,
}

impl PollClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long after its upload to ask about a photo first.
    pub fn first_wait(&self, interval: Duration) -> Duration {
        let g = self.lock();
        if g.seen.len() < MIN_SEEN {
            return interval;
        }
        let mut times: Vec<Duration> = g.seen.iter().copied().collect();
        times.sort_unstable();
        let at = ((times.len() - 1) as f64 * QUANTILE).round() as usize;
        times[at].clamp(MIN_WAIT.min(interval), MAX_FIRST_WAIT)
    }

    /// The photo was still processing after `elapsed`: how long to wait before asking again.
    pub fn still_processing(&self, id: JobId, elapsed: Duration, interval: Duration) -> Duration {
        self.lock().asked_again.insert(id);
        (elapsed / 4).max(MIN_WAIT).min(interval)
    }

    /// The photo was found ready by the call due `due` after its upload and made `made` after
    /// it. A call made late (the rate limiter busy) is learned as at most [`MIN_WAIT`] late:
    /// the whole delay would teach the clock that the service got slower, the next photo would
    /// be asked later, wait in the same queue, and the waits would grow without end (the
    /// request bench saw results fetched 32 s after they were ready at a saturated 2/s). A
    /// little of it is kept: on a quiet limiter it is the time the call really took.
    pub fn ready(&self, id: JobId, due: Duration, made: Duration) {
        let elapsed = made.min(due + MIN_WAIT);
        let mut g = self.lock();
        let first = !g.asked_again.remove(&id);
        let seen = if first {
            elapsed.mul_f64(PROBE_DOWN)
        } else {
            elapsed
        };
        g.seen.push_back(seen);
        if g.seen.len() > WINDOW {
            g.seen.pop_front();
        }
    }

    /// The photo left processing some other way (expired, held): nothing to learn.
    pub fn forget(&self, id: JobId) {
        self.lock().asked_again.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn without_enough_history_the_first_call_waits_the_interval() {
        let clock = PollClock::default();
        assert_eq!(clock.first_wait(INTERVAL), INTERVAL);
        clock.ready(JobId(1), secs(1.0), secs(1.0));
        clock.ready(JobId(2), secs(1.0), secs(1.0));
        assert_eq!(clock.first_wait(INTERVAL), INTERVAL);
    }

    #[test]
    fn a_steady_service_is_asked_once_per_photo_soon_after_it_is_ready() {
        // The service takes 2 s per photo; the clock starts knowing nothing.
        let clock = PollClock::default();
        let (mut calls, mut late) = (0, Vec::new());
        for id in 0..60 {
            let id = JobId(id);
            let mut at = clock.first_wait(INTERVAL);
            calls += 1;
            while at < secs(2.0) {
                at += clock.still_processing(id, at, INTERVAL);
                calls += 1;
            }
            clock.ready(id, at, at);
            late.push(at - secs(2.0));
        }
        // About one call each, learning included, and once learned fetched promptly.
        let mut settled = late[30..].to_vec();
        settled.sort_unstable();
        assert!(calls <= 60 + 9, "{calls} calls for 60 photos");
        assert!(settled[settled.len() / 2] <= secs(0.5), "{settled:?}");
    }

    #[test]
    fn calls_held_back_by_the_rate_limiter_do_not_make_the_waits_grow() {
        // 10 s processing; every call goes out 3 s after it was due (a saturated limiter).
        // Learning the delay as at most MIN_WAIT, the first wait settles near 10 s; learning
        // all of it, each wait would teach a longer one (0.85 × (w + 3) > w).
        let clock = PollClock::default();
        let delay = secs(3.0);
        let mut waits = Vec::new();
        for id in 0..80 {
            let id = JobId(id);
            let mut due = clock.first_wait(INTERVAL);
            while due + delay < secs(10.0) {
                due += clock.still_processing(id, due + delay, INTERVAL);
            }
            clock.ready(id, due, due + delay);
            waits.push(clock.first_wait(INTERVAL));
        }
        let last = waits[waits.len() - 1];
        assert!(
            last <= secs(12.0),
            "the first wait grew to {last:?}: {waits:?}"
        );
    }

    #[test]
    fn waits_stay_within_their_bounds() {
        let clock = PollClock::default();
        for id in 0..10 {
            clock.ready(JobId(id), secs(6000.0), secs(6000.0));
        }
        // The first call waits for what was seen (longer than the interval), up to the cap.
        assert_eq!(clock.first_wait(INTERVAL), MAX_FIRST_WAIT);
        let wait = clock.still_processing(JobId(99), secs(600.0), INTERVAL);
        assert_eq!(wait, INTERVAL);
        let wait = clock.still_processing(JobId(99), secs(0.1), INTERVAL);
        assert_eq!(wait, MIN_WAIT);
        // A short configured interval wins over the floor.
        let short = Duration::from_millis(100);
        assert_eq!(clock.still_processing(JobId(99), secs(0.1), short), short);
    }
}
