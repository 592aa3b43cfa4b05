//! Credit accounting by epochs: how hili knows, without a credit check before every upload,
//! whether an upload whose answer was lost was charged — with several uploads in flight.
//!
//! An epoch opens with a reading of the credits left taken while no upload is in flight. Each
//! upload is admitted into the open epoch (its intent records the epoch) and ends answered
//! (charged, counted from the store), refused (not charged), or lost. A lost answer closes the
//! epoch: no upload is admitted until every other one in flight has ended — the barrier — then
//! ONE reading decides (`verdict.rs`): `charged_lost = start − now − answered`. The closing
//! reading opens the next epoch. An epoch also closes after `credits_recheck`, or when the
//! credits it opened with are used up; a drop the uploads do not explain is "credits spent
//! elsewhere", counted in the store. After a crash the same arithmetic runs from the store
//! alone: nothing is in flight at start, so every job still `uploading` lost its answer.
//!
//! The barrier is a read-write lock: each admitted upload holds a read guard until it ends, and
//! closing an epoch takes the write lock, which waits for those guards and (the lock is fair)
//! holds back new admissions meanwhile. On a shared queue (several nodes, one account) the
//! store adds the same barrier across the fleet ([`JobStore::fleet_guard`]: PostgreSQL's
//! advisory locks, shared per upload, exclusive to close; a node that dies drops its
//! connection and with it its place), and each admission takes the open epoch from the store,
//! where another node may have rolled it.
//!
//! [`JobStore::fleet_guard`]: crate::store::JobStore::fleet_guard

mod verdict;

#[cfg(test)]
mod model_tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, RwLock, RwLockWriteGuard};

use crate::store::{Closing, EpochId, FleetGuard, JobId, State, Store, StoreError, Verdict};

pub(crate) use verdict::decide;
pub use verdict::{Decision, Tally};

/// The open epoch as this process knows it, and the uploads admitted into it.
#[derive(Debug, Default)]
struct Inner {
    open: Option<Open>,
    /// Admitted and not yet ended.
    in_flight: u64,
    /// Ended with an answer (charged).
    answered: u64,
    /// Ended with the answer lost: the jobs wait in `uploading` for the closing reading.
    lost: Vec<JobId>,
    /// An admitted upload ended without saying how (a task abandoned mid-way): the next
    /// reading closes the epoch, and the store says what is still `uploading`.
    unsure: bool,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    id: EpochId,
    start: u64,
    since: Instant,
}

/// The credit epochs of one process; see the module documentation.
#[derive(Debug)]
pub struct Epochs {
    barrier: Arc<RwLock<()>>,
    /// The store, for the fleet's barrier and its open epoch (`None`: tests of this alone).
    store: Option<Store>,
    inner: Mutex<Inner>,
    /// How long an epoch stays open at most (`credits_recheck`).
    recheck: Duration,
}

/// An upload admitted into an epoch. End it with [`Ticket::answered`], [`Ticket::not_charged`]
/// or [`Ticket::lost`]; dropped without one, it counts as an upload whose end is unknown.
#[derive(Debug)]
pub struct Ticket<'a> {
    epochs: &'a Epochs,
    pub epoch: EpochId,
    /// Credits when the epoch opened (kept with the intent as `credits_before`).
    pub start: u64,
    ended: bool,
    _in_flight: OwnedRwLockReadGuard<()>,
    /// The place in the fleet's barrier (shared queue only), released with the ticket.
    _fleet: Option<FleetGuard>,
}

/// What [`Epochs::enter`] gives: a place in the open epoch, or the turn to close it (nothing is
/// in flight while the turn is held).
#[derive(Debug)]
pub enum Entry<'a> {
    Go(Ticket<'a>),
    Settle(SettleTurn<'a>),
}

/// The write side of the barrier: no upload is in flight while it is held.
#[derive(Debug)]
pub struct SettleTurn<'a> {
    /// Held, not read: nothing is admitted while it lives.
    _held: RwLockWriteGuard<'a, ()>,
    /// The fleet's side (shared queue only): no node admits an upload while it lives.
    _fleet: Option<FleetGuard>,
}

/// What a closing reading did.
#[derive(Debug, Default)]
pub struct Settled {
    /// The epoch closed, with its counts and decision (`None` when none was open).
    pub closed: Option<(Tally, Decision)>,
    /// Lost uploads moved by the verdict: the job, whether it was charged (or may have
    /// been), and whether it was admitted by this process (its budget reservation is
    /// settled here).
    pub moved: Vec<(JobId, bool, bool)>,
}

impl Epochs {
    pub fn new(recheck: Duration) -> Epochs {
        Epochs {
            barrier: Arc::new(RwLock::new(())),
            store: None,
            inner: Mutex::new(Inner::default()),
            recheck,
        }
    }

    /// Takes the fleet's barrier and open epoch from `store` (a no-op for a queue of its own).
    pub fn through(mut self, store: Store) -> Epochs {
        self.store = Some(store);
        self
    }

    async fn fleet(&self, exclusive: bool) -> Result<Option<FleetGuard>, StoreError> {
        match &self.store {
            Some(s) => s.fleet_guard(exclusive).await,
            None => Ok(None),
        }
    }

    /// With the fleet's place held: the open epoch as the store has it (another node may have
    /// closed ours and opened the next), counted with every node's answers. Returns whether
    /// one is open.
    async fn refresh(&self) -> Result<bool, StoreError> {
        let Some(store) = &self.store else {
            return Ok(true);
        };
        let open = store.open_epoch().await?;
        let mut i = self.lock();
        match open {
            None => {
                i.open = None;
                Ok(false)
            }
            Some(e) if i.open.is_some_and(|o| o.id == e.id) => {
                i.answered = i.answered.max(e.answered);
                Ok(true)
            }
            Some(e) => {
                // Its lost answers were settled by the node that closed it.
                i.open = Some(Open {
                    id: e.id,
                    start: e.start_credits,
                    since: Instant::now(),
                });
                i.answered = e.answered;
                i.lost.clear();
                i.unsure = false;
                Ok(true)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters only: a panic elsewhere cannot leave them half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the open epoch must close before another upload is admitted: none is open, an
    /// answer was lost, it is `credits_recheck` old, or its credits are all spoken for.
    pub fn must_settle(&self) -> bool {
        self.due(&self.lock())
    }

    fn due(&self, i: &Inner) -> bool {
        match i.open {
            None => true,
            Some(o) => {
                !i.lost.is_empty()
                    || i.unsure
                    || o.since.elapsed() >= self.recheck
                    || o.start.saturating_sub(i.answered + i.in_flight) == 0
            }
        }
    }

    /// Whether an answer was lost and waits for the closing reading.
    pub fn has_lost(&self) -> bool {
        let i = self.lock();
        !i.lost.is_empty() || i.unsure
    }

    /// Waits for a place in the open epoch, or for the turn to close it. Cancel-safe.
    pub async fn enter(&self) -> Result<Entry<'_>, StoreError> {
        loop {
            if self.must_settle() {
                let turn = self.settle_turn().await?;
                if self.must_settle() {
                    return Ok(Entry::Settle(turn));
                }
                continue;
            }
            let guard = self.barrier.clone().read_owned().await;
            // Local place first, then the fleet's (the turn takes them in the same order).
            let fleet = self.fleet(false).await?;
            if fleet.is_some() && !self.refresh().await? {
                continue;
            }
            let mut i = self.lock();
            let open = match i.open {
                Some(open) if !self.due(&i) => open,
                _ => continue,
            };
            i.in_flight += 1;
            return Ok(Entry::Go(Ticket {
                epochs: self,
                epoch: open.id,
                start: open.start,
                ended: false,
                _in_flight: guard,
                _fleet: fleet,
            }));
        }
    }

    /// The turn to close the epoch: waits until no upload is in flight (on a shared queue, on
    /// any node). Cancel-safe.
    pub async fn settle_turn(&self) -> Result<SettleTurn<'_>, StoreError> {
        let held = self.barrier.write().await;
        let fleet = self.fleet(true).await?;
        Ok(SettleTurn {
            _held: held,
            _fleet: fleet,
        })
    }

    /// Closes the open epoch with the reading `now` (taken while `turn` is held), moves its
    /// lost uploads as the arithmetic decides, and opens the next epoch at `now`.
    pub async fn settle(
        &self,
        _turn: &SettleTurn<'_>,
        store: &Store,
        now: u64,
    ) -> Result<Settled, StoreError> {
        let mut settled = Settled::default();
        let mine = self.lock().lost.clone();
        let closing = match store.open_epoch().await? {
            Some(e) => {
                let lost = store.uploading_in(e.id).await?;
                let tally = Tally {
                    epoch: e.id,
                    start: e.start_credits,
                    now,
                    answered: e.answered,
                    lost: lost.len() as u64,
                };
                let d = decide(tally.start, now, tally.answered, tally.lost);
                settled.closed = Some((tally, d));
                Some((tally, d, lost))
            }
            None => None,
        };
        let record = closing.as_ref().map(|(t, d, _)| {
            (
                t.epoch,
                Closing {
                    end_credits: now,
                    lost: t.lost,
                    verdict: d.verdict,
                    spent_elsewhere: d.spent_elsewhere,
                },
            )
        });
        // The verdict is on the books before any job moves: a crash in between is finished
        // from them at the next start (`finish_closed`).
        let next = store.roll_epoch(record, now).await?;
        if let Some((tally, d, lost)) = closing {
            for id in lost {
                let charged = apply(store, d.verdict, tally, id).await?;
                settled.moved.push((id, charged, mine.contains(&id)));
            }
        }
        let mut i = self.lock();
        *i = Inner {
            open: Some(Open {
                id: next,
                start: now,
                since: Instant::now(),
            }),
            ..Inner::default()
        };
        Ok(settled)
    }
}

/// Moves one lost upload as `verdict` says; returns whether it was (or may have been) charged.
/// A job that already left `uploading` (its late answer was adopted) is left alone.
async fn apply(
    store: &Store,
    verdict: Verdict,
    tally: Tally,
    id: JobId,
) -> Result<bool, StoreError> {
    let why = verdict::reason(verdict, tally, id);
    let moved = match verdict {
        Verdict::Requeue | Verdict::None => {
            store
                .requeue(id, State::Uploading, &why, crate::store::now_ms())
                .await
        }
        Verdict::Charged | Verdict::Ambiguous => store.hold(id, State::Uploading, &why, true).await,
    };
    let charged = !matches!(verdict, Verdict::Requeue | Verdict::None);
    match moved {
        Ok(()) => {
            if charged {
                tracing::warn!(job = %id, "{why}");
            } else {
                tracing::info!(job = %id, "{why}");
            }
            Ok(charged)
        }
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lost uploads of epochs whose verdict is on the books but whose jobs a crash left in
/// `uploading`: moved as recorded. Returns them as [`Settled::moved`] does.
pub async fn finish_closed(store: &Store) -> Result<Vec<(JobId, bool, bool)>, StoreError> {
    let mut moved = Vec::new();
    for job in store.jobs_in(State::Uploading).await? {
        let Some(id) = job.epoch else { continue };
        let Some(e) = store.epoch(id).await? else {
            continue;
        };
        let Some(c) = e.closing else { continue };
        let tally = Tally {
            epoch: id,
            start: e.start_credits,
            now: c.end_credits,
            answered: e.answered,
            lost: c.lost,
        };
        let charged = apply(store, c.verdict, tally, job.id).await?;
        moved.push((job.id, charged, false));
    }
    Ok(moved)
}

impl Ticket<'_> {
    fn end(mut self, f: impl FnOnce(&mut Inner)) {
        self.ended = true;
        f(&mut self.epochs.lock());
    }

    /// The service answered: one credit charged, counted in this epoch.
    pub fn answered(self) {
        self.end(|i| {
            i.in_flight -= 1;
            i.answered += 1;
        });
    }

    /// Ended without a charge (the intent was refused, or the service refused the upload).
    pub fn not_charged(self) {
        self.end(|i| i.in_flight -= 1);
    }

    /// The answer was lost: the job waits in `uploading` for the closing reading.
    pub fn lost(self, job: JobId) {
        self.end(|i| {
            i.in_flight -= 1;
            i.lost.push(job);
        });
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let mut i = self.epochs.lock();
            i.in_flight -= 1;
            i.unsure = true;
        }
    }
}
