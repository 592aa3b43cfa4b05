//! Credit epochs, as rows: the reading that opens one, the uploads answered in it (counted
//! from the `events` trail), the jobs whose answers were lost in it, and the verdict that closes
//! it — recorded before the lost jobs move, so a crash between the two is finished the same way
//! at the next start. The rule that turns a closing reading into a verdict is the pipeline's
//! (`pipeline::epochs`); this file only keeps the books.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;

use super::error::SqlContext;
use super::{JobId, SqliteStore, StoreError, now_ms};

/// An epoch's id (`credit_epochs.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochId(pub i64);

impl fmt::Display for EpochId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the closing reading of an epoch decided for the uploads whose answers were lost in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No answer was lost.
    None,
    /// None of the lost uploads was charged: they are queued again.
    Requeue,
    /// Every lost upload was charged: each is held (its result cannot be fetched without the
    /// service's answer).
    Charged,
    /// Some were charged, or something else moved the count: all are held, none re-sent.
    Ambiguous,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Requeue => "requeue",
            Verdict::Charged => "charged",
            Verdict::Ambiguous => "ambiguous",
        }
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Verdict::None,
            "requeue" => Verdict::Requeue,
            "charged" => Verdict::Charged,
            "ambiguous" => Verdict::Ambiguous,
            other => return Err(format!("unknown epoch verdict {other:?}")),
        })
    }
}

/// An epoch as the books have it. `closing` is set once it is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub id: EpochId,
    pub start_credits: u64,
    /// Uploads answered in it (recorded `uploading → processing`), counted now.
    pub answered: u64,
    pub closing: Option<Closing>,
}

/// How an epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub end_credits: u64,
    pub lost: u64,
    pub verdict: Verdict,
    /// Credits the account lost beyond what hili's uploads explain (at least this many).
    pub spent_elsewhere: u64,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SqliteStore {
    /// The epoch upload intents are recorded in now: the newest, if it is still open.
    pub async fn open_epoch(&self) -> Result<Option<Epoch>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM credit_epochs WHERE closed_at IS NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.reader("using the queue database").await?)
        .await
        .ctx("reading the open credit epoch")?;
        match id {
            Some(id) => self.epoch(EpochId(id)).await,
            None => Ok(None),
        }
    }

    /// One epoch, with the uploads answered in it counted from the events trail: the answers
    /// recorded after it opened (epochs never overlap: one opens only when nothing is in
    /// flight) and, once closed, before the next opened.
    pub async fn epoch(&self, id: EpochId) -> Result<Option<Epoch>, StoreError> {
        let mut conn = self.reader("using the queue database").await?;
        let row = sqlx::query(
            "SELECT e.start_credits, e.after_event, e.end_credits, e.answered, e.lost, \
             e.verdict, e.spent_elsewhere, \
             (SELECT n.after_event FROM credit_epochs AS n WHERE n.id > e.id ORDER BY n.id \
              LIMIT 1) AS next_after \
             FROM credit_epochs AS e WHERE e.id = ?",
        )
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .ctx(format!("reading credit epoch {id}"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |col: &str| row.try_get::<Option<i64>, _>(col);
        let bad = |e: sqlx::Error| StoreError::Sql {
            context: format!("reading credit epoch {id}"),
            source: e,
        };
        let after = get("after_event").map_err(bad)?.unwrap_or(0);
        let until = get("next_after").map_err(bad)?.unwrap_or(i64::MAX);
        let answered: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE id > ? AND id <= ? \
             AND from_state = 'uploading' AND to_state = 'processing'",
        )
        .bind(after)
        .bind(until)
        .fetch_one(&mut *conn)
        .await
        .ctx(format!("counting the answers of credit epoch {id}"))?;
        let verdict: Option<String> = row.try_get("verdict").map_err(bad)?;
        let closing = match (verdict, get("end_credits").map_err(bad)?) {
            (Some(v), Some(end)) => Some(Closing {
                end_credits: count(end),
                lost: count(get("lost").map_err(bad)?.unwrap_or(0)),
                verdict: v.parse().map_err(|detail| StoreError::Invalid { detail })?,
                spent_elsewhere: count(get("spent_elsewhere").map_err(bad)?.unwrap_or(0)),
            }),
            _ => None,
        };
        Ok(Some(Epoch {
            id,
            start_credits: count(get("start_credits").map_err(bad)?.unwrap_or(0)),
            answered: count(answered),
            closing,
        }))
    }

    /// The jobs still `uploading` under `epoch`: with nothing in flight, the ones whose answers
    /// were lost.
    pub async fn uploading_in(&self, epoch: EpochId) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'uploading' AND epoch = ?")
                .bind(epoch.0)
                .fetch_all(&mut *self.reader("using the queue database").await?)
                .await
                .ctx(format!("listing the uploads of credit epoch {epoch}"))?;
        Ok(ids.into_iter().map(JobId).collect())
    }

    /// Closes `closing`'s epoch with its verdict (if one is open) and opens the next at
    /// `start_credits`, in ONE transaction, after every write queued before it (an upload's
    /// answer still waiting for its commit is counted in the epoch it belongs to). The reading
    /// is also kept as a credit observation.
    pub async fn roll_epoch(
        &self,
        closing: Option<(EpochId, Closing)>,
        start_credits: u64,
    ) -> Result<EpochId, StoreError> {
        let context = "opening a credit epoch";
        let conn = self.conn(context).await?;
        self.writes.flush(conn).await;
        let mut tx = self.begin_write(context).await?;
        let now = now_ms();
        if let Some((id, c)) = closing {
            let closed = sqlx::query(
                "UPDATE credit_epochs SET closed_at = ?, end_credits = ?, lost = ?, \
                 verdict = ?, spent_elsewhere = ?, \
                 answered = (SELECT COUNT(*) FROM events WHERE id > credit_epochs.after_event \
                   AND from_state = 'uploading' AND to_state = 'processing') \
                 WHERE id = ? AND closed_at IS NULL",
            )
            .bind(now)
            .bind(int(c.end_credits))
            .bind(int(c.lost))
            .bind(c.verdict.as_str())
            .bind(int(c.spent_elsewhere))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .ctx(format!("closing credit epoch {id}"))?;
            if closed.rows_affected() != 1 {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "credit epoch {id} was already closed (is another hili driving this \
                         queue?)"
                    ),
                });
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO credit_epochs (opened_at, start_credits, after_event) \
             VALUES (?, ?, (SELECT COALESCE(MAX(id), 0) FROM events)) RETURNING id",
        )
        .bind(now)
        .bind(int(start_credits))
        .fetch_one(&mut *tx)
        .await
        .ctx(context)?;
        sqlx::query("INSERT INTO credit_observations (at, credits_left) VALUES (?, ?)")
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
        let n: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(spent_elsewhere), 0) FROM credit_epochs")
                .fetch_one(&mut *self.reader("using the queue database").await?)
                .await
                .ctx("counting credits spent elsewhere")?;
        Ok(count(n))
    }
}
