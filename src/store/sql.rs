//! The values the store binds into its statements and the `SET` items of its guarded
//! UPDATEs: one place for how a job's columns are written (shared by the transitions, the
//! group commit that runs them, and the column updates that are not transitions).

use super::{JobId, StoreError};

/// A value bound into an UPDATE.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

/// One `SET` item: `col = ?` with a bound value, or a fixed expression like `mdf = NULL`.
#[derive(Debug, Clone)]
pub(crate) enum Set {
    Bind(&'static str, Val),
    Raw(&'static str),
}

pub(crate) fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

/// A SHA-256 as stored: 64 hex digits, lowercase; anything else is refused.
pub(crate) fn hash_val(id: JobId, sha256: &str, what: &str) -> Result<Val, StoreError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid {
            detail: format!("job {id}: {what} {sha256:?} is not 64 hex digits"),
        });
    }
    Ok(Val::Text(Some(sha256.to_ascii_lowercase())))
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

pub(crate) fn bind_val<'q>(q: Query<'q>, v: &Val) -> Query<'q> {
    match v.clone() {
        Val::Int(i) => q.bind(i),
        Val::Text(t) => q.bind(t),
        Val::Blob(b) => q.bind(b),
    }
}
