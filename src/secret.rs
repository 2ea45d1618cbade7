//! A secret (the bot token, the app-level token, supervisord's password, the fleet
//! URL): shown by nothing but [`Secret::expose`], for the one place that sends it.
//! A leaf: every room that holds a secret imports it, and it imports nothing.

use std::fmt;

/// A token or password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Replaces every occurrence of the token in `text` (for error messages that might
    /// quote a request).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 8 {
            return text.to_string();
        }
        // The kind stays readable (`xoxb-`, `xapp-`), the rest does not.
        let kind = self.0.split_inclusive('-').next().filter(|k| k.len() <= 5).unwrap_or("");
        text.replace(&self.0, &format!("{kind}[redacted]"))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
