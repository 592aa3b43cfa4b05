//! Credits spent over a span of time, counted from the events (the audit trail), so a daily
//! budget survives restarts: a charge is an event of an edge that counts one (`uploaded`,
//! `adopt_answer`, `hold_charged`: those whose fixed changes add to `charges`).

use super::error::SqlContext;
use super::queries::json_array;
use super::state::EDGES;
use super::{SqliteStore, StoreError};

/// The `from>to` pairs of the edges that count a charge, as a JSON array of strings.
fn charging_pairs() -> String {
    json_array(
        EDGES
            .iter()
            .filter(|e| e.fixed.contains(&"charges = charges + 1"))
            .flat_map(|e| e.from.iter().map(move |f| format!("\"{f}>{}\"", e.to))),
    )
}

impl SqliteStore {
    /// Credits charged (or taken for charged: a hold after a lost answer) at or after
    /// `since_ms`, by any process on this queue.
    pub async fn charged_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        let context = "counting the credits spent today";
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE at >= ? \
             AND (from_state || '>' || to_state) IN (SELECT value FROM json_each(?))",
        )
        .bind(since_ms)
        .bind(charging_pairs())
        .fetch_one(&mut *self.reader(context).await?)
        .await
        .ctx(context)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charging_edges_are_the_three_that_count_a_charge() {
        assert_eq!(
            charging_pairs(),
            r#"["uploading>processing","queued>processing","failed>processing","uploading>held"]"#
        );
    }
}
