//! The one guarded write behind every PostgreSQL transition (`transitions.rs`): an edge of
//! `state::EDGES` becomes ONE `UPDATE jobs SET … WHERE id = $n AND state = $m` plus its events
//! row in one transaction, committed before the caller hears "done"; a job that is no longer
//! in `from` is a `Conflict` and nothing is written. This is the PG twin of the SQLite side's
//! `write.rs` (whose SQL builder is SQLite-typed: `?` parameters, `changes()`, group commit);
//! it shares the `Set`/`Val` items and the edge table. It also owns the fleet's additions: the
//! lease a job's mover takes or gives up, the credit epoch an upload is admitted into, and the
//! cross-process lock that makes the twin check of an upload intent race-free.

use std::fmt::Write as _;

use sqlx::Postgres;
use sqlx::postgres::PgArguments;

use super::PgStore;
use super::fleet::lease_ms;
use crate::failpoint;
use crate::store::error::SqlContext;
use crate::store::sql::{Set, Val};
use crate::store::state::{self, IllegalTransition};
use crate::store::{AGENT, EpochId, JobId, State, StoreError, check, now_ms};

/// Serialises the upload intents of one identity (content hash, repair, colour) across every
/// node: under READ COMMITTED two transactions could each check for a busy twin, see none (the
/// other's intent not yet committed) and both pay. The lock is taken before the check; the
/// second intent waits for the first one's commit, and its UPDATE (a new snapshot) sees it.
/// `$1` is the content hash, `$2` the job (whose repair and colour never change).
pub(super) const TWIN_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended(\
     $1 || '/' || repair || '/' || coalesce(rgb, ''), 0)) FROM jobs WHERE id = $2";

/// The upload guard: no OTHER job with the same identity (the bound hash, the row's repair and
/// colour) is in flight, or held after a charge. `{n}` is the hash's parameter number.
const NO_BUSY_TWIN: &str = "NOT EXISTS (SELECT 1 FROM jobs AS t \
     WHERE t.content_sha256 = ${n} AND t.repair = jobs.repair \
     AND t.rgb IS NOT DISTINCT FROM jobs.rgb AND t.id <> jobs.id \
     AND (t.state IN ('uploading', 'processing', 'downloading') \
     OR (t.state = 'held' AND t.credit_spent = 1)))";

/// Holds the epoch an intent is admitted into open until the intent commits: closing it (an
/// UPDATE of this row) waits for the intents that hold it, so its count of uploads cannot miss
/// one; an intent that comes after finds it closed. (The fleet's barrier already keeps intents
/// and closings apart; this keeps the books right even without it.)
const EPOCH_OPEN: &str = "SELECT id FROM credit_epochs \
     WHERE id = $1 AND closed_at IS NULL FOR SHARE";

/// Parts of a write beyond the guarded UPDATE and its event (the PG twin of `write::Extras`).
#[derive(Debug, Default)]
pub(super) struct Extras<'a> {
    /// Refuse with `TwinBusy` while a twin with this content hash is busy ([`NO_BUSY_TWIN`]).
    pub twin: Option<&'a str>,
    /// Refuse unless the job has no mdf (an answer adopted late never replaces another).
    pub no_mdf: bool,
    /// Write only while this credit epoch is open ([`EPOCH_OPEN`]).
    pub epoch: Option<EpochId>,
    /// This node takes the job's lease (it works the job from now on).
    pub lease: bool,
}

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

fn bind<'q>(q: Query<'q>, v: &Val) -> Query<'q> {
    match v.clone() {
        Val::Int(i) => q.bind(i),
        Val::Text(t) => q.bind(t),
        Val::Blob(b) => q.bind(b),
    }
}

/// Whether a job entering `to` gives up its lease: nobody works a final or queued job.
fn releases_lease(to: State) -> bool {
    matches!(
        to,
        State::Queued | State::Done | State::Failed | State::Held | State::Skipped
    )
}

impl PgStore {
    /// Takes the edge `name` of [`state::EDGES`] for job `id`, which must be in `from`: the
    /// columns `given` (each one the edge names), the edge's fixed changes and the lease, in
    /// one guarded UPDATE with its events row, committed before returning. An edge that does
    /// not leave `from` is an [`IllegalTransition`], a column it does not name is refused.
    pub(super) async fn take(
        &self,
        name: &str,
        id: JobId,
        from: State,
        given: Vec<(&'static str, Val)>,
        detail: Option<String>,
        extras: &Extras<'_>,
    ) -> Result<(), StoreError> {
        let edge = state::edge(name).ok_or_else(|| StoreError::Invalid {
            detail: format!("no edge {name:?} in the state machine (a bug in hili)"),
        })?;
        if !edge.from.contains(&from) {
            check(from, edge.to)?;
            return Err(IllegalTransition { from, to: edge.to }.into());
        }
        let mut sets = Vec::with_capacity(given.len() + edge.fixed.len() + 2);
        for (col, val) in given {
            if !edge.given.contains(&col) {
                return Err(StoreError::Invalid {
                    detail: format!("edge {name} does not set {col} (a bug in hili)"),
                });
            }
            sets.push(Set::Bind(col, val));
        }
        sets.extend(edge.fixed.iter().map(|f| Set::Raw(f)));
        if extras.lease {
            let node = Val::Text(Some(self.node().to_string()));
            sets.push(Set::Bind("lease_node", node));
            sets.push(Set::Bind(
                "lease_until",
                Val::Int(Some(now_ms() + lease_ms())),
            ));
        } else if releases_lease(edge.to) {
            sets.extend([
                Set::Raw("lease_node = NULL"),
                Set::Raw("lease_until = NULL"),
            ]);
        }
        let context = format!("moving job {id} from {from} to {}", edge.to);
        self.guarded(id, from, edge.to, &sets, Some(detail), extras, &context)
            .await
    }

    /// Updates columns of a job that must still be in `state`, without a transition (no
    /// event): scheduling and backoff.
    pub(super) async fn update_in(
        &self,
        id: JobId,
        state: State,
        sets: &[Set],
        context: &str,
    ) -> Result<(), StoreError> {
        let extras = Extras::default();
        self.guarded(id, state, state, sets, None, &extras, context)
            .await
    }

    /// The write itself. `event: None` updates columns without a state change or event.
    #[allow(clippy::too_many_arguments)] // one write's parts; a struct would only rename them
    async fn guarded(
        &self,
        id: JobId,
        from: State,
        to: State,
        sets: &[Set],
        event: Option<Option<String>>,
        extras: &Extras<'_>,
        context: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(context).await?;
        // The epoch first: an intent never holds the job's row while it waits for an epoch
        // being closed, so a closer that also moves jobs cannot deadlock with it.
        if let Some(epoch) = extras.epoch {
            let open: Option<i64> = sqlx::query_scalar(EPOCH_OPEN)
                .bind(epoch.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx(context)?;
            if open.is_none() {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "job {id}: credit epoch {epoch} is closed; the upload \
                         waits for the next epoch"
                    ),
                });
            }
        }
        if let Some(sha) = extras.twin {
            sqlx::query(TWIN_LOCK)
                .bind(sha)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .ctx(context)?;
        }
        let (sql, binds) = update_sql(id, from, to, sets, extras)?;
        let changed = binds
            .iter()
            .fold(sqlx::query(&sql), bind)
            .execute(&mut *tx)
            .await
            .ctx(context)?
            .rows_affected();
        if changed != 1 {
            let found: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx(context)?;
            return Err(refusal(id, from, found, extras.twin.is_some()));
        }
        if let Some(detail) = event.as_ref() {
            sqlx::query(
                "INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.0)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(now_ms())
            .bind(detail.as_deref())
            .bind(AGENT)
            .execute(&mut *tx)
            .await
            .ctx(context)?;
            // A crash here leaves the job as it was: the write is durable at COMMIT or not at all.
            failpoint::hit_transition("before", from.as_str(), to.as_str());
        }
        tx.commit().await.ctx(context)?;
        if event.is_some() {
            failpoint::hit_transition("after", from.as_str(), to.as_str());
        }
        Ok(())
    }
}

/// Why a guarded UPDATE changed nothing: the job is gone, it moved (`Conflict`), or it is still
/// in `from` and only the twin guard can have refused it (`TwinBusy`).
fn refusal(id: JobId, from: State, found: Option<String>, twin_guard: bool) -> StoreError {
    let Some(found) = found else {
        return StoreError::NotFound(id);
    };
    match found.parse::<State>() {
        Ok(s) if s == from && twin_guard => StoreError::TwinBusy { job: id },
        Ok(s) => StoreError::Conflict {
            job: id,
            expected: from,
            found: s,
        },
        Err(e) => StoreError::Corrupt {
            job: id,
            detail: e.to_string(),
        },
    }
}

/// The guarded UPDATE and its bound values, in parameter order.
fn update_sql(
    id: JobId,
    from: State,
    to: State,
    sets: &[Set],
    extras: &Extras<'_>,
) -> Result<(String, Vec<Val>), StoreError> {
    let text = |s: &str| Val::Text(Some(s.to_string()));
    let mut binds = vec![text(to.as_str()), Val::Int(Some(now_ms()))];
    let mut sql = String::from("UPDATE jobs SET state = $1, updated_at = $2");
    let fmt = |e: std::fmt::Error| StoreError::Invalid {
        detail: e.to_string(),
    };
    for s in sets {
        match s {
            Set::Bind(col, v) => {
                binds.push(v.clone());
                write!(sql, ", {col} = ${}", binds.len())
            }
            Set::Raw(expr) => write!(sql, ", {expr}"),
        }
        .map_err(fmt)?;
    }
    binds.extend([Val::Int(Some(id.0)), text(from.as_str())]);
    write!(
        sql,
        " WHERE id = ${} AND state = ${}",
        binds.len() - 1,
        binds.len()
    )
    .map_err(fmt)?;
    if let Some(sha) = extras.twin {
        binds.push(text(sha));
        sql.push_str(" AND ");
        sql.push_str(&NO_BUSY_TWIN.replace("{n}", &binds.len().to_string()));
    }
    if extras.no_mdf {
        sql.push_str(" AND mdf IS NULL");
    }
    Ok((sql, binds))
}

#[cfg(test)]
pub(super) mod fixtures;
#[cfg(test)]
mod tests;
