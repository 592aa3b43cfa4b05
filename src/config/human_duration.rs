//! The serde helper for durations written as "60s", "10m", "1h 30m" in the config file,
//! shared by the `[api]`/`[queue]` sections and the `[[watch]]` tables.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads a humantime duration; the error says how to write one.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}): write it like \"90s\", \"10m\" or \"1h\""
        ))
    })
}
