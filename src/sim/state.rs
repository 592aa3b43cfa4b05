//! The simulator's shared state: its clock, token rule, credits, the ledger of charges,
//! fault counters, the seeded random streams and the table of jobs (uploads being processed,
//! finished or expired). Everything mutable sits behind one `std::sync::Mutex` that is never
//! held across an `.await`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::hostile::{Hostile, HostileMode};
use super::transform::Format;
use super::{Faults, SimOptions};
use crate::api::token::digest;

/// How far a token's timestamp may be behind the sim's clock.
const TOKEN_MAX_AGE_SECS: i64 = 120;
/// How far ahead it may be: clients round, clocks tick between two reads.
const TOKEN_MAX_FUTURE_SECS: i64 = 2;

/// The names under which faults are counted in the ledger, in roll order.
pub(crate) const FAULT_KINDS: [&str; 6] =
    ["reset", "http500", "slow", "e9006", "e9009", "charge_drop"];

/// One charged upload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub mdf: String,
    /// SHA-256 (hex) of the uploaded bytes.
    pub sha256: String,
    /// The wire value, e.g. `sr,repair`.
    pub repair_type: String,
    pub rgb: Option<String>,
    /// Unix seconds on the sim's clock.
    pub time: i64,
}

/// What the sim charged and injected: served at `GET /__sim/ledger`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ledger {
    pub charges: Vec<Charge>,
    pub total_charges: u64,
    /// Charges whose (sha256, repair_type, rgb) had been charged before: wasted credits.
    pub duplicate_charges: u64,
    pub credits_left: u64,
    /// Injected faults by kind (`reset`, `http500`, `slow`, `e9006`, `e9009`, `charge_drop`).
    pub faults: BTreeMap<String, u64>,
    /// Requests that reached the upload endpoint, whatever the answer (charged, refused, or
    /// faulted): what proves a file was never sent.
    #[serde(default)]
    pub upload_requests: u64,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Processing,
    Done {
        finished: Instant,
    },
    /// The background transform failed (logged); the job answers as if it never existed.
    Failed,
    Expired,
}

/// One accepted upload.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub format: Format,
    /// The uploaded bytes, served at `img_url`.
    pub upload: PathBuf,
    /// The result (equal to `upload` in passthrough mode).
    pub result: PathBuf,
    /// Before this instant status answers 100 whatever the transform did.
    pub ready_at: Instant,
    pub phase: Phase,
}

impl Job {
    /// True once status may answer 200.
    pub fn is_ready(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Done { .. }) && now >= self.ready_at
    }

    fn expires_at(&self, retention: Duration) -> Option<Instant> {
        match self.phase {
            Phase::Done { finished } => Some(finished.max(self.ready_at) + retention),
            _ => None,
        }
    }
}

struct Inner {
    credits: u64,
    faults: Faults,
    hostile: Option<Hostile>,
    mdf_rng: ChaCha8Rng,
    fault_rng: ChaCha8Rng,
    charges: Vec<Charge>,
    charged_keys: HashSet<(String, String, Option<String>)>,
    duplicate_charges: u64,
    fault_counts: BTreeMap<String, u64>,
    jobs: HashMap<String, Job>,
    /// When each finished job's result expires, soonest first: a sweep looks only at jobs
    /// that are due instead of every job ever charged.
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub third_code: String,
    secret: String,
    pub processing: Duration,
    pub retention: Duration,
    pub latency: Duration,
    clock_offset_secs: i64,
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
                charges: Vec::new(),
                charged_keys: HashSet::new(),
                duplicate_charges: 0,
                fault_counts: FAULT_KINDS.iter().map(|k| (k.to_string(), 0)).collect(),
                jobs: HashMap::new(),
                expiries: BinaryHeap::new(),
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
        *g.fault_counts.entry(key).or_insert(0) += 1;
        true
    }

    /// Rolls every fault kind once, in [`FAULT_KINDS`] order, so a seed gives the same
    /// outcome sequence whatever the probabilities. Returns which kinds fired.
    pub fn roll_faults(&self) -> [bool; 6] {
        let mut g = self.lock();
        let f = g.faults;
        let probs = [f.reset, f.http500, f.slow, f.e9006, f.e9009, f.charge_drop];
        probs.map(|p| g.fault_rng.r#gen::<f64>() < p)
    }

    /// Records that a fault of `kind` (one of [`FAULT_KINDS`]) took effect.
    pub fn count_fault(&self, kind: &str) {
        *self
            .lock()
            .fault_counts
            .entry(kind.to_string())
            .or_insert(0) += 1;
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
            if !g.jobs.contains_key(&mdf) {
                break mdf;
            }
        };
        let key = (sha256.to_string(), repair_type.to_string(), rgb.clone());
        if !g.charged_keys.insert(key) {
            g.duplicate_charges += 1;
        }
        g.charges.push(Charge {
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
        let mut g = self.lock();
        let Some(job) = g.jobs.get_mut(mdf) else {
            return;
        };
        job.phase = if ok {
            Phase::Done {
                finished: Instant::now(),
            }
        } else {
            Phase::Failed
        };
        if let Some(at) = job.expires_at(retention) {
            g.expiries.push(Reverse((at, mdf.to_string())));
        }
    }

    pub fn job(&self, mdf: &str) -> Option<Job> {
        self.lock().jobs.get(mdf).cloned()
    }

    /// Marks every job past its retention as expired and returns the files to delete.
    pub fn expire_due(&self) -> Vec<PathBuf> {
        let now = Instant::now();
        let mut doomed = Vec::new();
        let mut g = self.lock();
        while g.expiries.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse((_, mdf))) = g.expiries.pop() else {
                break;
            };
            if let Some(job) = g.jobs.get_mut(&mdf)
                && matches!(job.phase, Phase::Done { .. })
            {
                job.phase = Phase::Expired;
                push_unique(&mut doomed, &job.upload);
                push_unique(&mut doomed, &job.result);
            }
        }
        doomed
    }

    pub fn ledger(&self) -> Ledger {
        let g = self.lock();
        Ledger {
            charges: g.charges.clone(),
            total_charges: g.charges.len() as u64,
            duplicate_charges: g.duplicate_charges,
            credits_left: g.credits,
            faults: g.fault_counts.clone(),
            // Every upload request takes one sequence number before anything is checked.
            upload_requests: self.upload_seq.load(Ordering::Relaxed),
        }
    }
}

fn push_unique(v: &mut Vec<PathBuf>, p: &Path) {
    if !v.iter().any(|q| q == p) {
        v.push(p.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(offset: i64) -> Shared {
        let opts = SimOptions {
            clock_offset_secs: offset,
            ..SimOptions::default()
        };
        Shared::new(&opts, PathBuf::from("/nonexistent"), "http://x".into())
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
