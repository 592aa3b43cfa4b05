//! The API server's idea of "now". Tokens die two minutes after their timestamp, so a
//! workstation whose clock is off would see every request rejected (errno 9999). The clock
//! learns the offset from the `Date` header of every answer and, once it exceeds
//! [`CORRECT_ABOVE_SECS`], stamps tokens with server time instead, warning once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Offsets up to this many seconds are left alone (the Date header has 1 s resolution and
/// the vendor accepts 120 s).
pub const CORRECT_ABOVE_SECS: i64 = 30;

/// Marks "no answer seen yet".
const UNKNOWN: i64 = i64::MIN;

/// Cheap to clone; clones share the learnt offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// server − local, in seconds, from the latest answer; `UNKNOWN` before any.
    offset: AtomicI64,
    /// Test hook: how far this "workstation" clock is off true time.
    local_skew: i64,
    warned: AtomicBool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            offset: AtomicI64::new(UNKNOWN),
            local_skew: 0,
            warned: AtomicBool::new(false),
        }
    }
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose local time reads `secs` off the true time (negative = behind), to
    /// simulate a skewed workstation in tests.
    pub fn with_local_skew(secs: i64) -> Self {
        Clock {
            inner: Arc::new(Inner {
                local_skew: secs,
                ..Inner::default()
            }),
        }
    }

    /// Local unix seconds (including the test skew), uncorrected.
    pub fn local_now(&self) -> i64 {
        unix_secs(SystemTime::now()) + self.inner.local_skew
    }

    /// Unix seconds to stamp a token with: local time, corrected when it is far off the server.
    pub fn now(&self) -> i64 {
        self.local_now() + self.applied_offset()
    }

    /// The measured offset (server − local, seconds), if any answer carried a `Date`.
    pub fn offset(&self) -> Option<i64> {
        match self.inner.offset.load(Ordering::Relaxed) {
            UNKNOWN => None,
            o => Some(o),
        }
    }

    /// The correction [`Clock::now`] applies at present: the offset if large, else 0.
    pub fn applied_offset(&self) -> i64 {
        match self.offset() {
            Some(o) if o.abs() > CORRECT_ABOVE_SECS => o,
            _ => 0,
        }
    }

    /// Learns from an answer's `Date` header value; ignores unparsable ones. Returns true if
    /// this answer moved the correction applied to tokens (see [`Clock::observe`]).
    pub fn observe_date_header(&self, value: &str) -> bool {
        match httpdate::parse_http_date(value) {
            Ok(t) => self.observe(t),
            Err(_) => false,
        }
    }

    /// Learns the server's time. Returns true if the applied correction moved by more than
    /// [`CORRECT_ABOVE_SECS`] (a token stamped before would now be stamped differently).
    pub fn observe(&self, server_time: SystemTime) -> bool {
        let before = self.applied_offset();
        let offset = unix_secs(server_time) - self.local_now();
        self.inner.offset.store(offset, Ordering::Relaxed);
        let after = self.applied_offset();
        if after != 0 && !self.inner.warned.swap(true, Ordering::Relaxed) {
            let (n, way) = if offset > 0 {
                (offset, "behind")
            } else {
                (-offset, "ahead of")
            };
            tracing::warn!(
                offset_secs = offset,
                "the local clock is {n} s {way} the API server's; hili stamps its tokens with \
                 the server's time meanwhile, but fix the clock (enable NTP, e.g. `timedatectl set-ntp true`)"
            );
        }
        (after - before).abs() > CORRECT_ABOVE_SECS
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn small_offsets_are_ignored_large_ones_corrected() {
        let c = Clock::new();
        assert_eq!(c.offset(), None);
        assert_eq!(c.applied_offset(), 0);
        let now = SystemTime::now();
        assert!(!c.observe(now + Duration::from_secs(10)));
        assert!((9..=11).contains(&c.offset().unwrap_or(0)));
        assert_eq!(c.applied_offset(), 0);
        assert!(c.observe(now + Duration::from_secs(300)));
        assert!((c.now() - (c.local_now() + 300)).abs() <= 1);
        // Jitter of the 1 s Date resolution is not a change.
        assert!(!c.observe(now + Duration::from_secs(301)));
        assert!(c.observe(now));
        assert_eq!(c.applied_offset(), 0);
    }

    #[test]
    fn skewed_workstation_learns_true_time() {
        let c = Clock::with_local_skew(-500);
        let truth = unix_secs(SystemTime::now());
        assert!((c.local_now() - (truth - 500)).abs() <= 1);
        assert!(c.observe_date_header(&httpdate::fmt_http_date(SystemTime::now())));
        assert!((c.now() - truth).abs() <= 2);
        assert!(!c.observe_date_header("not a date"));
    }

    #[test]
    fn clones_share_the_offset() {
        let c = Clock::new();
        let d = c.clone();
        c.observe(SystemTime::now() - Duration::from_secs(100));
        assert!(d.applied_offset() < -90);
    }
}
