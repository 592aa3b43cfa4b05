//! Credit epochs and credit counts on the shared queue: the readings of the account, the epoch
//! rows (one open at a time for the whole fleet), the uploads answered in an epoch, and the
//! credits spent (the daily budget, the results paid for and waiting). The same books as the
//! SQLite side's (`store/epochs.rs`, `spending.rs`), kept for several nodes at once: opening
//! and closing an epoch is serialised across nodes. No node has an upload in flight while an
//! epoch closes: the fleet's barrier ([`PgStore::barrier`]) sees to that.

use sqlx::Row;

use super::PgStore;
use crate::store::error::SqlContext;
use crate::store::state::EDGES;
use crate::store::{Closing, Epoch, EpochId, JobId, StoreError, Verdict, now_ms};

/// The uploads answered in epoch `e` (a `credit_epochs` row aliased `e`).
///
/// SQLite counts the `uploading → processing` events between the newest event id when the
/// epoch opened and the one when the next opened. Here transactions of several nodes commit
/// concurrently, so ids are not handed out in commit order, and an upper bound by id could
/// count an answer of one epoch in another. Instead an answer belongs to the epoch of its
/// job's intent, `jobs.epoch` (recorded by the intent, which comes before its answer). The
/// lower bound `v.id > e.after_event` only leaves out the answers of the job's EARLIER
/// intents (a job uploaded again): those committed before this epoch opened, since an epoch
/// closes only once its uploads have ended, so their ids are at most the newest id visible
/// then; an answer of this epoch is written after its intent saw this epoch's row committed,
/// so its id is larger than any id visible when the row was written.
const ANSWERED: &str = "(SELECT COUNT(*) FROM events AS v JOIN jobs AS j ON j.id = v.job_id \
     WHERE j.epoch = e.id AND v.id > e.after_event \
     AND v.from_state = 'uploading' AND v.to_state = 'processing')";

/// The advisory lock every node takes to close or open a credit epoch (a fixed key: one
/// epoch row is open at a time for the whole fleet).
const EPOCH_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('hili credit epochs', 0))";

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A verdict as stored (`credit_epochs.verdict`); the SQLite side's spelling, whose helper is
/// private to it.
fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::None => "none",
        Verdict::Requeue => "requeue",
        Verdict::Charged => "charged",
        Verdict::Ambiguous => "ambiguous",
    }
}

/// The `from>to` pairs of the edges that count a charge (those whose fixed changes add to
/// `charges`): the PG twin of `spending.rs`'s JSON list, bound as a text array.
fn charging_pairs() -> Vec<String> {
    EDGES
        .iter()
        .filter(|e| e.fixed.contains(&"charges = charges + 1"))
        .flat_map(|e| e.from.iter().map(move |f| format!("{f}>{}", e.to)))
        .collect()
}

impl PgStore {
    /// Keeps a reading of the credits left.
    pub async fn record_credits(&self, credits_left: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO credit_observations (at, credits_left) VALUES ($1, $2)")
            .bind(now_ms())
            .bind(int(credits_left))
            .execute(self.pool())
            .await
            .ctx("recording credits")?;
        Ok(())
    }

    /// The latest credit observation as `(at_ms, credits_left)`.
    pub async fn latest_credits(&self) -> Result<Option<(i64, u64)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT at, credits_left FROM credit_observations ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await
        .ctx("reading the latest credit count")?;
        Ok(row.map(|(at, n)| (at, count(n))))
    }

    /// The epoch upload intents are recorded in now: the newest, if it is still open.
    pub async fn open_epoch(&self) -> Result<Option<Epoch>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM credit_epochs WHERE closed_at IS NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await
        .ctx("reading the open credit epoch")?;
        match id {
            Some(id) => self.epoch(EpochId(id)).await,
            None => Ok(None),
        }
    }

    /// One epoch, with the uploads answered in it (see [`ANSWERED`]): counted now while it is
    /// open, as counted when it closed once closed (a job of a closed epoch uploaded again
    /// later moves to the later epoch, which must not change the books of this one).
    pub async fn epoch(&self, id: EpochId) -> Result<Option<Epoch>, StoreError> {
        let context = format!("reading credit epoch {id}");
        let row = sqlx::query(&format!(
            "SELECT e.start_credits, e.end_credits, e.lost, e.verdict, e.spent_elsewhere, \
             CASE WHEN e.closed_at IS NULL OR e.answered IS NULL THEN {ANSWERED} \
             ELSE e.answered END AS counted \
             FROM credit_epochs AS e WHERE e.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.pool())
        .await
        .ctx(&context)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |col: &str| row.try_get::<Option<i64>, _>(col).ctx(&context);
        let verdict: Option<String> = row.try_get("verdict").ctx(&context)?;
        let closing = match (verdict, get("end_credits")?) {
            (Some(v), Some(end)) => Some(Closing {
                end_credits: count(end),
                lost: count(get("lost")?.unwrap_or(0)),
                verdict: v.parse().map_err(|detail| StoreError::Invalid { detail })?,
                spent_elsewhere: count(get("spent_elsewhere")?.unwrap_or(0)),
            }),
            _ => None,
        };
        Ok(Some(Epoch {
            id,
            start_credits: count(get("start_credits")?.unwrap_or(0)),
            answered: count(get("counted")?.unwrap_or(0)),
            closing,
        }))
    }

    /// The jobs still `uploading` under `epoch`, on any node: while the fleet's barrier is
    /// held exclusively (no node has one in flight), the ones whose answers were lost.
    pub async fn uploading_in(&self, epoch: EpochId) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'uploading' AND epoch = $1 ORDER BY id",
        )
        .bind(epoch.0)
        .fetch_all(self.pool())
        .await
        .ctx(format!("listing the uploads of credit epoch {epoch}"))?;
        Ok(ids.into_iter().map(JobId).collect())
    }

    /// Closes `closing`'s epoch with its verdict (if one is open) and opens the next at
    /// `start_credits`, opened by this node, in ONE transaction, after this node's upload
    /// answers still being committed (each is counted in the epoch it belongs to). The reading
    /// is also kept as a credit observation.
    ///
    /// Race-free across nodes by an advisory lock with a fixed key, taken first: the nodes
    /// roll one after another, and each checks under the lock that the epoch it closes is still
    /// the open one (with `closing` `None`: that none is open). A node that lost the race gets
    /// [`StoreError::Invalid`] and nothing is written: it re-reads the open epoch.
    pub async fn roll_epoch(
        &self,
        closing: Option<(EpochId, Closing)>,
        start_credits: u64,
    ) -> Result<EpochId, StoreError> {
        let context = "opening a credit epoch";
        self.answers.drain().await;
        let mut tx = self.begin(context).await?;
        sqlx::query(EPOCH_LOCK)
            .execute(&mut *tx)
            .await
            .ctx("waiting for the credit epochs' lock")?;
        // Under the lock, and READ COMMITTED takes a new snapshot per statement: this sees
        // every roll committed before ours.
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM credit_epochs WHERE closed_at IS NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx(context)?;
        check_open(closing.map(|(id, _)| id), open.map(EpochId))?;
        let now = now_ms();
        if let Some((id, c)) = closing {
            let closed = sqlx::query(&format!(
                "UPDATE credit_epochs AS e SET closed_at = $1, end_credits = $2, lost = $3, \
                 verdict = $4, spent_elsewhere = $5, answered = {ANSWERED} \
                 WHERE e.id = $6 AND e.closed_at IS NULL"
            ))
            .bind(now)
            .bind(int(c.end_credits))
            .bind(int(c.lost))
            .bind(verdict_text(c.verdict))
            .bind(int(c.spent_elsewhere))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .ctx(format!("closing credit epoch {id}"))?;
            if closed.rows_affected() != 1 {
                return Err(lost_race(id, None));
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO credit_epochs (opened_at, start_credits, after_event, opened_by) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(id), 0) FROM events), $3) RETURNING id",
        )
        .bind(now)
        .bind(int(start_credits))
        .bind(self.node().as_str())
        .fetch_one(&mut *tx)
        .await
        .ctx(context)?;
        sqlx::query("INSERT INTO credit_observations (at, credits_left) VALUES ($1, $2)")
            .bind(now)
            .bind(int(start_credits))
            .execute(&mut *tx)
            .await
            .ctx(context)?;
        tx.commit().await.ctx(context)?;
        Ok(EpochId(id))
    }

    /// Credits the account lost beyond what hili's uploads explain, over the queue's life.
    pub async fn credits_spent_elsewhere(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(spent_elsewhere), 0)::BIGINT FROM credit_epochs",
        )
        .fetch_one(self.pool())
        .await
        .ctx("counting credits spent elsewhere")?;
        Ok(count(n))
    }

    /// Credits charged over the queue's life: the sum of every job's charges (a job counts
    /// once per charged upload, so re-uploads count again).
    pub async fn credits_spent(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(charges), 0)::BIGINT FROM jobs")
            .fetch_one(self.pool())
            .await
            .ctx("counting spent credits")?;
        Ok(count(n))
    }

    /// Credits charged (or taken for charged: a hold after a lost answer) at or after
    /// `since_ms`, by any node on this queue.
    pub async fn charged_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        let context = "counting the credits spent today";
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE at >= $1 \
             AND (from_state || '>' || to_state) = ANY($2)",
        )
        .bind(since_ms)
        .bind(charging_pairs())
        .fetch_one(self.pool())
        .await
        .ctx(context)?;
        Ok(count(n))
    }

    /// Results paid for and not yet stored (jobs processing or downloading, on any node), and
    /// the earliest upload among them (unix ms): the service deletes a result one hour after
    /// it is processed, so the first of them expires no earlier than an hour after that.
    pub async fn paid_waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        let context = "counting results waiting to be downloaded";
        let (n, first): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(processing_since) FROM jobs \
             WHERE state IN ('processing', 'downloading')",
        )
        .fetch_one(self.pool())
        .await
        .ctx(context)?;
        Ok((count(n), first))
    }
}

/// Whether the epoch a roll closes (`closing`, `None` when it opens the first) is still the
/// open one (`open`), as the lock holder sees it.
fn check_open(closing: Option<EpochId>, open: Option<EpochId>) -> Result<(), StoreError> {
    match (closing, open) {
        (Some(c), Some(o)) if c == o => Ok(()),
        (None, None) => Ok(()),
        (Some(c), o) => Err(lost_race(c, o)),
        (None, Some(o)) => Err(StoreError::Invalid {
            detail: format!(
                "credit epoch {o} was opened by another node while this one read the credits \
                 to open one; this node uses that epoch instead (nothing was written)"
            ),
        }),
    }
}

fn lost_race(closing: EpochId, open: Option<EpochId>) -> StoreError {
    let now = match open {
        Some(o) => format!("epoch {o} is open now"),
        None => "none is open now".to_string(),
    };
    StoreError::Invalid {
        detail: format!(
            "credit epoch {closing} was already closed by another node ({now}); this node \
             re-reads the open epoch and carries on (nothing was written)"
        ),
    }
}

#[cfg(test)]
#[path = "epochs_tests.rs"]
mod tests;
