//! Files `hili add` already knows are invalid (not an image, over the service's limits,
//! unreadable…): each is recorded as a job in `failed` with its reason, so the real add agrees
//! with its dry run and `hili jobs --state failed` says why, and nothing is ever sent for it.
//! The job is inserted and failed in ONE transaction — the creation row (the enqueue trigger)
//! then the state machine's `fail` edge with the reason — so no reader ever sees it queued.

use super::enqueue::{enqueue_one, validate};
use super::error::SqlContext;
use super::{EnqueueOutcome, JobId, Known, NewJob, SqliteStore, State, StoreError, now_ms};

impl SqliteStore {
    /// Records invalid files as failed jobs, with their reasons; outcomes in input order.
    /// Deduped as [`SqliteStore::enqueue_many`] is, `force` or not: a file version already
    /// known (in any state) is `AlreadyKnown`, hili's own result `OwnResult`; only a new
    /// version makes a new row (`Failed`).
    pub async fn enqueue_invalid(
        &self,
        jobs: Vec<(NewJob, String)>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        for (j, _) in &jobs {
            validate(j)?;
        }
        let mut tx = self.begin_write("recording invalid files").await?;
        super::export::set_agent(&mut tx).await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        for (j, reason) in jobs {
            // Processing it again cannot help: an invalid file is never forced into the queue.
            let j = NewJob { force: false, ..j };
            out.push(
                match enqueue_one(&mut tx, &j, now, Known::SameSettings).await? {
                    EnqueueOutcome::Queued(id) => {
                        fail_new(&mut tx, id, &reason, now).await?;
                        EnqueueOutcome::Failed(id)
                    }
                    other => other,
                },
            );
        }
        tx.commit().await.ctx("committing invalid files")?;
        Ok(out)
    }
}

/// The state machine's `fail` edge (queued → failed) for a job created in this transaction:
/// one guarded UPDATE with the edge's fixed changes and the reason, and its events row.
async fn fail_new(
    conn: &mut sqlx::SqliteConnection,
    id: JobId,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    let edge = super::state::edge("fail").ok_or_else(|| StoreError::Invalid {
        detail: "no edge \"fail\" in the state machine (a bug in hili)".into(),
    })?;
    let (from, to) = (State::Queued, edge.to);
    super::check(from, to)?;
    let mut sql = String::from("UPDATE jobs SET state = ?, updated_at = ?, reason = ?");
    for fixed in edge.fixed {
        sql.push_str(", ");
        sql.push_str(fixed);
    }
    sql.push_str(" WHERE id = ? AND state = ?");
    let context = || format!("recording job {id} as failed at hili add");
    let changed = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(now)
        .bind(reason)
        .bind(id.0)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .ctx(context())?
        .rows_affected();
    if changed != 1 {
        return Err(StoreError::Invalid {
            detail: format!(
                "job {id}, created queued in this transaction, could not be failed (a bug in hili)"
            ),
        });
    }
    sqlx::query(
        "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id.0)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now)
    .bind(reason)
    .bind(super::AGENT)
    .execute(&mut *conn)
    .await
    .ctx(context())?;
    Ok(())
}
