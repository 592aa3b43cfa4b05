//! The simulator's table of jobs: one per accepted upload, from processing to done (or
//! failed) to expired, and the queue of when each finished result expires, soonest first, so
//! a sweep looks only at jobs that are due instead of every job ever charged.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sim::transform::Format;

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
    pub(crate) fn is_ready(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Done { .. }) && now >= self.ready_at
    }

    fn expires_at(&self, retention: Duration) -> Option<Instant> {
        match self.phase {
            Phase::Done { finished } => Some(finished.max(self.ready_at) + retention),
            _ => None,
        }
    }
}

/// The jobs by mdf, and when the finished ones expire.
pub(super) struct JobTable {
    jobs: HashMap<String, Job>,
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

impl JobTable {
    pub(super) fn new() -> JobTable {
        JobTable {
            jobs: HashMap::new(),
            expiries: BinaryHeap::new(),
        }
    }

    pub(super) fn contains(&self, mdf: &str) -> bool {
        self.jobs.contains_key(mdf)
    }

    pub(super) fn insert(&mut self, mdf: String, job: Job) {
        self.jobs.insert(mdf, job);
    }

    pub(super) fn get(&self, mdf: &str) -> Option<&Job> {
        self.jobs.get(mdf)
    }

    /// Marks the background transform of `mdf` as finished (or failed) and, once done,
    /// schedules its expiry `retention` after it is ready.
    pub(super) fn finish(&mut self, mdf: &str, ok: bool, retention: Duration) {
        let Some(job) = self.jobs.get_mut(mdf) else {
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
            self.expiries.push(Reverse((at, mdf.to_string())));
        }
    }

    /// Marks every job past its retention at `now` as expired and returns the files to delete.
    pub(super) fn expire_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut doomed = Vec::new();
        while self
            .expiries
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, mdf))) = self.expiries.pop() else {
                break;
            };
            if let Some(job) = self.jobs.get_mut(&mdf)
                && matches!(job.phase, Phase::Done { .. })
            {
                job.phase = Phase::Expired;
                push_unique(&mut doomed, &job.upload);
                push_unique(&mut doomed, &job.result);
            }
        }
        doomed
    }
}

fn push_unique(v: &mut Vec<PathBuf>, p: &Path) {
    if !v.iter().any(|q| q == p) {
        v.push(p.to_path_buf());
    }
}
