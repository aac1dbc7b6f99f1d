//! `Secret`: a password or key held in memory whose `Debug` and `Display` print `<redacted>`, so
//! a configuration dumped into a log (at any level) never carries it.

use serde::{Deserialize, Serialize};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret string. Serialises as the plain string (configuration files and the datastore hold
/// it); only [`Secret::expose`] gives the value to the code that needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for the socket option or TLS setup that needs it, never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value_serde_keeps_it() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(
            serde_json::to_string(&s).expect("serialises"),
            "\"hunter2\""
        );
        let back: Secret = serde_json::from_str("\"hunter2\"").expect("parses");
        assert_eq!(back.expose(), "hunter2");
    }
}
