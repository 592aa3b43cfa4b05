//! The request token (`docs/hili-api.md`, "The token"):
//! `md5_hex(secret_key + unix_seconds) + "," + unix_seconds`. A token dies two minutes after its
//! timestamp, so every request gets a fresh one, built from the (skew-corrected) current time.

use md5::{Digest, Md5};

use crate::secret::Secret;

/// Builds the token for `unix_seconds`.
pub fn token(secret: &Secret, unix_seconds: i64) -> String {
    format!("{},{}", digest(secret.expose(), unix_seconds), unix_seconds)
}

/// The md5 part of a token; the simulator uses it to check tokens it receives.
pub fn digest(secret: &str, unix_seconds: i64) -> String {
    let mut h = Md5::new();
    h.update(secret.as_bytes());
    h.update(unix_seconds.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_test_vector() {
        assert_eq!(
            token(&Secret::new("hiliad"), 1_629_962_357),
            "5484490c8e797dabe52af90ab8bd1e50,1629962357"
        );
    }
}
