//! The simulator's shared state: its clock, token rule, credits, the seeded random streams,
//! the fault and hostile-mode settings, and under the same lock the books (`ledger`: charges,
//! duplicates, fault counters) and the job table (`jobs`: processing, finished, expired).
//! Everything mutable sits behind one `std::sync::Mutex` that is never held across an
//! `.await`, so a charge and its job appear together to any concurrent reader; the two
//! files beside this one own the data, this one owns the lock and the rules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::hostile::{Hostile, HostileMode};
use super::{Faults, SimOptions};
use crate::api::token::digest;
use jobs::JobTable;
pub(crate) use jobs::{Job, Phase};
use ledger::Books;
pub use ledger::{Charge, Ledger};

mod jobs;
mod ledger;

/// How far a token's timestamp may be behind the sim's clock.
const TOKEN_MAX_AGE_SECS: i64 = 120;
/// How far ahead it may be: clients round, clocks tick between two reads.
const TOKEN_MAX_FUTURE_SECS: i64 = 2;

/// A deliberate delay of every upload answer, before or after the charge (test-only): makes
/// "an upload in flight" last long enough to do something else meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub delay: Duration,
    /// After the credit is spent (the slow answer of a charged upload) rather than before.
    pub after_charge: bool,
}

struct Inner {
    credits: u64,
    faults: Faults,
    hostile: Option<Hostile>,
    mdf_rng: ChaCha8Rng,
    fault_rng: ChaCha8Rng,
    /// Draws each upload's processing time when a range is set.
    processing_rng: ChaCha8Rng,
    books: Books,
    jobs: JobTable,
    stall: Option<Stall>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub third_code: String,
    secret: String,
    processing: Duration,
    /// With a value, each upload's processing time is drawn from `processing..=this`.
    processing_up_to: Option<Duration>,
    pub retention: Duration,
    pub latency: Duration,
    clock_offset_secs: i64,
    /// When the simulator started (API call times in the ledger count from it).
    started: Instant,
    pub passthrough: bool,
    /// Where uploads stream to and results live.
    pub files_dir: PathBuf,
    /// `http://127.0.0.1:PORT`, used to build `img_url` and download URLs.
    pub base_url: String,
    upload_seq: AtomicU64,
    /// The never-answering listener of the `url_hang` hostile mode.
    tarpit: OnceLock<SocketAddr>,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(opts: &SimOptions, files_dir: PathBuf, base_url: String) -> Shared {
        let mut fault_rng = ChaCha8Rng::seed_from_u64(opts.seed);
        // A separate stream, so fault rolls never shift the mdf sequence of a seed.
        fault_rng.set_stream(1);
        Shared {
            third_code: opts.third_code.clone(),
            secret: opts.secret.clone(),
            processing: opts.processing,
            processing_up_to: opts.processing_up_to,
            started: Instant::now(),
            retention: opts.retention,
            latency: opts.latency,
            clock_offset_secs: opts.clock_offset_secs,
            passthrough: opts.passthrough,
            files_dir,
            base_url,
            upload_seq: AtomicU64::new(0),
            tarpit: OnceLock::new(),
            inner: Mutex::new(Inner {
                credits: opts.credits,
                faults: opts.faults,
                hostile: opts.hostile,
                mdf_rng: ChaCha8Rng::seed_from_u64(opts.seed),
                fault_rng,
                processing_rng: {
                    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                    rng.set_stream(2);
                    rng
                },
                books: Books::new(),
                jobs: JobTable::new(),
                stall: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sim's wall clock: real time shifted by `clock_offset_secs`.
    pub fn now(&self) -> SystemTime {
        let off = Duration::from_secs(self.clock_offset_secs.unsigned_abs());
        if self.clock_offset_secs >= 0 {
            SystemTime::now() + off
        } else {
            SystemTime::now() - off
        }
    }

    pub fn now_unix(&self) -> i64 {
        match self.now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// The vendor's token rule, checked against the sim's clock.
    pub fn token_ok(&self, token: Option<&str>) -> bool {
        let Some((md5, secs)) = token.and_then(|t| t.trim().split_once(',')) else {
            return false;
        };
        let Ok(secs) = secs.trim().parse::<i64>() else {
            return false;
        };
        let age = self.now_unix() - secs;
        if !(-TOKEN_MAX_FUTURE_SECS..=TOKEN_MAX_AGE_SECS).contains(&age) {
            return false;
        }
        md5.trim().eq_ignore_ascii_case(&digest(&self.secret, secs))
    }

    /// A fresh, unique path for an upload being streamed in.
    pub fn next_upload_path(&self) -> PathBuf {
        let n = self.upload_seq.fetch_add(1, Ordering::Relaxed);
        self.files_dir.join(format!("incoming-{n}.part"))
    }

    pub fn credits(&self) -> u64 {
        self.lock().credits
    }

    pub fn add_credits(&self, n: u64) -> u64 {
        let mut g = self.lock();
        g.credits = g.credits.saturating_add(n);
        g.credits
    }

    pub fn set_credits(&self, n: u64) -> u64 {
        self.lock().credits = n;
        n
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    pub fn hostile(&self) -> Option<Hostile> {
        self.lock().hostile
    }

    pub fn set_hostile(&self, h: Option<Hostile>) {
        self.lock().hostile = h;
    }

    pub fn tarpit(&self) -> Option<SocketAddr> {
        self.tarpit.get().copied()
    }

    pub fn set_tarpit(&self, addr: SocketAddr) {
        let _ = self.tarpit.set(addr);
    }

    /// Claims one hostile answer of `mode` if that mode is still set and has turns left
    /// (the last turn clears it), and counts it in the ledger as `hostile:<mode>`.
    pub fn take_hostile_turn(&self, mode: HostileMode) -> bool {
        let mut g = self.lock();
        let Some(h) = g.hostile.as_mut().filter(|h| h.mode == mode) else {
            return false;
        };
        match h.times {
            Some(0) => {
                g.hostile = None;
                return false;
            }
            Some(1) => g.hostile = None,
            Some(n) => h.times = Some(n - 1),
            None => {}
        }
        let key = format!("hostile:{}", mode.name());
        g.books.count_fault(key);
        true
    }

    /// Rolls every fault kind once, in [`ledger::FAULT_KINDS`] order, so a seed gives the same
    /// outcome sequence whatever the probabilities. Returns which kinds fired.
    pub fn roll_faults(&self) -> [bool; 6] {
        let mut g = self.lock();
        let f = g.faults;
        let probs = [f.reset, f.http500, f.slow, f.e9006, f.e9009, f.charge_drop];
        probs.map(|p| g.fault_rng.r#gen::<f64>() < p)
    }

    /// Records that a fault of `kind` (one of [`ledger::FAULT_KINDS`]) took effect.
    pub fn count_fault(&self, kind: &str) {
        self.lock().books.count_fault(kind.to_string());
    }

    /// Spends one credit and records the charge and the job, all under one lock so a
    /// concurrent ledger read never sees half of it. `None` when no credit is left.
    pub fn charge(
        &self,
        sha256: &str,
        repair_type: &str,
        rgb: Option<String>,
        make_job: impl FnOnce(&str) -> Job,
    ) -> Option<String> {
        let time = self.now_unix();
        let mut g = self.lock();
        if g.credits == 0 {
            return None;
        }
        g.credits -= 1;
        let mdf = loop {
            let bytes: [u8; 16] = g.mdf_rng.r#gen();
            let mdf = hex::encode(bytes);
            if !g.jobs.contains(&mdf) {
                break mdf;
            }
        };
        g.books.record(Charge {
            mdf: mdf.clone(),
            sha256: sha256.to_string(),
            repair_type: repair_type.to_string(),
            rgb,
            time,
        });
        let job = make_job(&mdf);
        g.jobs.insert(mdf.clone(), job);
        Some(mdf)
    }

    /// Marks the background transform of `mdf` as finished (or failed).
    pub fn finish(&self, mdf: &str, ok: bool) {
        let retention = self.retention;
        self.lock().jobs.finish(mdf, ok, retention);
    }

    pub fn job(&self, mdf: &str) -> Option<Job> {
        self.lock().jobs.get(mdf).cloned()
    }

    /// Marks every job past its retention as expired and returns the files to delete.
    pub fn expire_due(&self) -> Vec<PathBuf> {
        let now = Instant::now();
        self.lock().jobs.expire_due(now)
    }

    pub fn ledger(&self) -> Ledger {
        let g = self.lock();
        g.books.ledger(g.credits)
    }

    /// How long the next accepted upload stays processing: fixed, or drawn (seeded) from the
    /// configured range.
    pub fn processing_time(&self) -> Duration {
        match self.processing_up_to {
            Some(max) if max > self.processing => {
                let ms = self
                    .lock()
                    .processing_rng
                    .gen_range(self.processing.as_millis()..=max.as_millis());
                Duration::from_millis(ms as u64)
            }
            _ => self.processing,
        }
    }

    /// Counts an API call on arrival (see [`Ledger::api_calls`]).
    pub fn note_api_call(&self, endpoint: &str) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.lock().books.note_api_call(endpoint, at_ms);
    }

    /// Counts an upload request that reached the handler; returns the stall in force.
    pub fn note_upload_request(&self) -> Option<Stall> {
        let mut g = self.lock();
        g.books.note_upload_request();
        g.stall
    }

    pub fn set_stall(&self, stall: Option<Stall>) {
        self.lock().stall = stall;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::transform::Format;

    fn shared(offset: i64) -> Shared {
        let opts = SimOptions {
            clock_offset_secs: offset,
            ..SimOptions::default()
        };
        Shared::new(&opts, PathBuf::from("/nonexistent"), "http://x".into())
    }

    #[test]
    fn processing_times_are_drawn_from_the_range_and_repeat_with_the_seed() {
        let opts = SimOptions {
            processing: Duration::from_secs(2),
            processing_up_to: Some(Duration::from_secs(12)),
            seed: 7,
            ..SimOptions::default()
        };
        let draw = || {
            let st = Shared::new(&opts, PathBuf::from("/nonexistent"), "http://x".into());
            (0..50).map(|_| st.processing_time()).collect::<Vec<_>>()
        };
        let times = draw();
        assert!(
            times.iter().all(|t| (2..=12).contains(&t.as_secs())),
            "{times:?}"
        );
        assert!(
            times.iter().min() < Some(&Duration::from_secs(4)),
            "{times:?}"
        );
        assert!(
            times.iter().max() > Some(&Duration::from_secs(10)),
            "{times:?}"
        );
        assert_eq!(times, draw(), "the same seed gives the same times");
    }

    fn tok(_: &Shared, secs: i64) -> String {
        format!("{},{secs}", digest("demo-secret", secs))
    }

    #[test]
    fn token_window_follows_the_sim_clock() {
        let s = shared(-300);
        let now = s.now_unix();
        assert!(s.token_ok(Some(&tok(&s, now))));
        assert!(s.token_ok(Some(&tok(&s, now - 119))));
        assert!(s.token_ok(Some(&tok(&s, now + 1))));
        assert!(!s.token_ok(Some(&tok(&s, now - 125))));
        assert!(!s.token_ok(Some(&tok(&s, now + 10))));
        // Real time is 300 s ahead of this sim: a real-time token is "in the future".
        let real = now + 300;
        assert!(!s.token_ok(Some(&tok(&s, real))));
        assert!(!s.token_ok(Some("garbage")));
        assert!(!s.token_ok(None));
        assert!(!s.token_ok(Some(&format!("{},{now}", "0".repeat(32)))));
    }

    #[test]
    fn duplicate_charges_count_same_content_type_and_colour() {
        let s = shared(0);
        let job = |_: &str| Job {
            format: Format::Png,
            upload: PathBuf::new(),
            result: PathBuf::new(),
            ready_at: Instant::now(),
            phase: Phase::Processing,
        };
        let a = s.charge("aa", "sr", None, job).unwrap();
        s.charge("aa", "bg", Some("1,2,3".into()), job).unwrap();
        s.charge("aa", "bg", Some("1,2,4".into()), job).unwrap();
        let b = s.charge("aa", "sr", None, job).unwrap();
        assert_ne!(a, b);
        let l = s.ledger();
        assert_eq!((l.total_charges, l.duplicate_charges), (4, 1));
        assert_eq!(l.credits_left, 96);
    }
}
