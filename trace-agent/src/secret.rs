//! Secrets (API keys) that never print in full.

use std::fmt;

/// A secret string; `Debug`/`Display` show only the last 5 characters.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the upstream writer only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `***…***abcde`: all but the last 5 characters masked.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks all but the last 5 characters of `s` (entirely when it has 5 or fewer).
pub fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 5 {
        return "*".repeat(n);
    }
    let tail: String = s.chars().skip(n - 5).collect();
    format!("{}{tail}", "*".repeat(n - 5))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}
