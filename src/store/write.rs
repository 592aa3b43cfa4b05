//! One guarded write, queued: the `UPDATE … WHERE id = ? AND state = ?` with its events row,
//! built as one batch of statements, queued behind the writes before
//! it (group commit, `group.rs`), and its outcome — committed, or refused as a `Conflict`,
//! `TwinBusy` or `NotFound` — handed back to the one caller that waits for it.

use std::fmt::Write as _;

use super::sql::{Set, Val};
use super::{JobId, SqliteStore, State, StoreError, now_ms};
use crate::failpoint;

/// Parts of a write beyond the guarded UPDATE and its event.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// `AND <sql>` added to the UPDATE's guard, with its bound values (after id and state).
    pub guard: Option<(&'static str, Vec<Val>)>,
    /// Write it even if the caller stops waiting ([`super::group::WriteQueue::push`]).
    pub keep_if_abandoned: bool,
}

impl SqliteStore {
    /// Updates columns of a job that must still be in `state`, without a transition (no
    /// event): scheduling, backoff, hashes.
    pub(crate) async fn update_in(
        &self,
        id: JobId,
        state: State,
        sets: &[Set],
        context: &str,
    ) -> Result<(), StoreError> {
        self.queue_guarded(id, state, state, sets, None, &Extras::default(), context)?
            .committed()
            .await
    }

    /// Queues the guarded UPDATE behind the writes queued before it, without waiting: it
    /// commits in that order, at the latest when [`QueuedWrite::committed`] is awaited.
    /// `event: None` updates columns without a state change or event.
    #[allow(clippy::too_many_arguments)] // one write's parts; a struct would only rename them
    pub(crate) fn queue_guarded(
        &self,
        id: JobId,
        from: State,
        to: State,
        sets: &[Set],
        event: Option<Option<String>>,
        extras: &Extras,
        context: &str,
    ) -> Result<QueuedWrite<'_>, StoreError> {
        let (sql, binds) = guarded_write(id, from, to, sets, &event, extras)?;
        // A crash here (the `before:` fail point) leaves the job as it was: the write is
        // durable all at once at COMMIT, or not at all.
        if event.is_some() {
            failpoint::hit_transition("before", from.as_str(), to.as_str());
        }
        let done = self
            .writes
            .push(sql, binds, context, extras.keep_if_abandoned);
        Ok(QueuedWrite {
            store: self,
            done,
            id,
            from,
            to,
            twin_guard: extras.guard.is_some(),
            transition: event.is_some(),
            context: context.to_string(),
        })
    }
}

/// The statements of one guarded write and their bound values: the guarded UPDATE, the rows
/// that go with it — inserted only if the UPDATE changed the job (`changes()` is 1 after it and
/// after each insert that followed it) — and a one-row report of whether it did and of the
/// job's state. It runs in a `BEGIN IMMEDIATE` transaction of its own, or shared with the other
/// writes waiting at that moment (group commit, see `group.rs`); a write that changed nothing
/// writes nothing.
fn guarded_write(
    id: JobId,
    from: State,
    to: State,
    sets: &[Set],
    event: &Option<Option<String>>,
    extras: &Extras,
) -> Result<(String, Vec<Val>), StoreError> {
    let mut sql = String::from("UPDATE jobs SET state = ?, updated_at = ?");
    for s in sets {
        match s {
            Set::Bind(col, _) => write!(sql, ", {col} = ?"),
            Set::Raw(expr) => write!(sql, ", {expr}"),
        }
        .map_err(|e| StoreError::Invalid {
            detail: e.to_string(),
        })?;
    }
    sql.push_str(" WHERE id = ? AND state = ?");
    if let Some((guard, _)) = &extras.guard {
        sql.push_str(" AND ");
        sql.push_str(guard);
    }
    if event.is_some() {
        sql.push_str(
            "; INSERT INTO events (job_id, from_state, to_state, at, detail, agent) \
             SELECT ?, ?, ?, ?, ?, ? WHERE changes() = 1",
        );
    }
    // Exactly one row, so the reports of writes committed together line up with them.
    sql.push_str("; SELECT changes() = 1, (SELECT state FROM jobs WHERE id = ?)");

    let now = now_ms();
    let text = |s: &str| Val::Text(Some(s.to_string()));
    let mut binds = vec![text(to.as_str()), Val::Int(Some(now))];
    binds.extend(sets.iter().filter_map(|s| match s {
        Set::Bind(_, v) => Some(v.clone()),
        Set::Raw(_) => None,
    }));
    binds.extend([Val::Int(Some(id.0)), text(from.as_str())]);
    binds.extend(extras.guard.iter().flat_map(|(_, b)| b.iter().cloned()));
    if let Some(detail) = event {
        binds.extend([
            Val::Int(Some(id.0)),
            text(from.as_str()),
            text(to.as_str()),
            Val::Int(Some(now)),
            Val::Text(detail.clone()),
            text(super::AGENT),
        ]);
    }
    binds.push(Val::Int(Some(id.0)));
    Ok((sql, binds))
}

/// A write queued on the store, behind every write queued before it; see
/// [`SqliteStore::queue_uploaded`].
#[must_use = "a queued write must be awaited to know that it was committed"]
pub(crate) struct QueuedWrite<'a> {
    store: &'a SqliteStore,
    done: tokio::sync::oneshot::Receiver<Result<super::group::Report, StoreError>>,
    id: JobId,
    from: State,
    to: State,
    twin_guard: bool,
    transition: bool,
    context: String,
}

impl QueuedWrite<'_> {
    /// Waits until the write is durable (or refused: `Conflict`, `TwinBusy`, `NotFound`).
    pub(crate) async fn committed(self) -> Result<(), StoreError> {
        let QueuedWrite {
            store,
            done,
            id,
            from,
            to,
            twin_guard,
            transition,
            context,
        } = self;
        // Whoever holds the connection next runs every queued write, this one included.
        let conn = store.conn(&context).await?;
        store.writes.run_queued(conn);
        let report = done.await.map_err(|_| StoreError::Sql {
            context: context.clone(),
            source: sqlx::Error::WorkerCrashed,
        })??;
        let found = match report {
            Some((true, _)) => None,
            Some((false, state)) => Some(state),
            None => return Err(StoreError::NotFound(id)),
        };
        if let Some(s) = found {
            return Err(match s {
                s if twin_guard && s == from.as_str() => StoreError::TwinBusy { job: id },
                s => StoreError::Conflict {
                    job: id,
                    expected: from,
                    found: s.parse().map_err(|e: super::state::UnknownState| {
                        StoreError::Corrupt {
                            job: id,
                            detail: e.to_string(),
                        }
                    })?,
                },
            });
        }
        if transition {
            failpoint::hit_transition("after", from.as_str(), to.as_str());
        }
        Ok(())
    }
}
