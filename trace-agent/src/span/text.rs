//! [`Str`]: the string type of the span model. Short strings (most tag keys and values) are
//! stored inline — copying ≤ 30 bytes is cheaper than sharing — and longer ones are UTF-8 views
//! into the request body's reference-counted buffer (no copy).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use arrayvec::ArrayString;
use bytes::Bytes;
use bytestring::ByteString;

/// Longest string stored inline.
pub const INLINE_CAP: usize = 30;

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<INLINE_CAP>),
    Shared(ByteString),
}

/// An immutable, cheap-to-clone UTF-8 string (inline when short, shared with the body when long).
#[derive(Clone)]
pub struct Str(Repr);

impl Str {
    /// The empty string.
    pub const fn new() -> Self {
        Self(Repr::Inline(ArrayString::new_const()))
    }

    /// A string from a `'static` literal (never copied when long).
    pub fn from_static(s: &'static str) -> Self {
        match ArrayString::from(s) {
            Ok(a) => Self(Repr::Inline(a)),
            Err(_) => Self(Repr::Shared(ByteString::from_static(s))),
        }
    }

    /// A short (≤ [`INLINE_CAP`] bytes) valid UTF-8 string copied inline; `None` otherwise.
    #[inline]
    pub fn from_short(raw: &[u8]) -> Option<Self> {
        if raw.len() > INLINE_CAP {
            return None;
        }
        let s = std::str::from_utf8(raw).ok()?;
        ArrayString::from(s).ok().map(|a| Self(Repr::Inline(a)))
    }

    /// The bytes `buf[start..end]` as a string: inline copy when short, a shared view when long.
    /// `None` when they are not valid UTF-8 (or out of range).
    pub fn from_body(buf: &Bytes, start: usize, end: usize) -> Option<Self> {
        let raw = buf.get(start..end)?;
        if raw.len() <= INLINE_CAP {
            return Self::from_short(raw);
        }
        ByteString::try_from(buf.slice(start..end))
            .ok()
            .map(|b| Self(Repr::Shared(b)))
    }

    /// The string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(a) => a.as_str(),
            Repr::Shared(b) => b,
        }
    }
}

impl Default for Str {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        match ArrayString::from(&s) {
            Ok(a) => Self(Repr::Inline(a)),
            Err(_) => Self(Repr::Shared(ByteString::from(s))),
        }
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        match ArrayString::from(s) {
            Ok(a) => Self(Repr::Inline(a)),
            Err(_) => Self(Repr::Shared(ByteString::from(s.to_owned()))),
        }
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_inline_and_long_ones_shared() {
        let body = Bytes::from(format!("abc{}", "x".repeat(100)));
        let short = Str::from_body(&body, 0, 3).unwrap();
        assert!(matches!(short.0, Repr::Inline(_)));
        assert_eq!(short, "abc");
        let long = Str::from_body(&body, 0, 103).unwrap();
        assert!(matches!(long.0, Repr::Shared(_)));
        assert_eq!(long.len(), 103);
        assert!(Str::from_body(&Bytes::from_static(&[0xff]), 0, 1).is_none());
        assert!(Str::from_body(&body, 0, 1000).is_none());
    }
}
