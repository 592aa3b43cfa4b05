//! The API secret key as a type that cannot leak: no `Display`, a redacted `Debug`, and no
//! serialisation. The only way to read it is [`Secret::expose`], used when building tokens.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The key itself. Call only to compute a token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let s = Secret::new("hiliad-very-secret");
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hiliad"), "{shown}");
    }

    #[test]
    fn a_panic_message_that_formats_the_key_does_not_show_it() {
        let s = Secret::new("hiliad-very-secret");
        let caught = std::panic::catch_unwind(|| panic!("failed with {s:?}"));
        let payload = caught.expect_err("the closure panics");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(msg.contains("<redacted>"), "{msg}");
        assert!(!msg.contains("very-secret"), "{msg}");
    }
}
