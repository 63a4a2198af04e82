//! `Str`: the string type of span fields and tags, cheap for the common cases.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A span string: a `&'static str` (no allocation, the common case for names and tag
/// keys), an owned `String` (moved in, never copied), or a shared `Arc<str>` (cloned by a
/// reference-count increment, used for values many spans repeat such as service names).
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Owned(String),
    Shared(Arc<str>),
}

impl Str {
    /// The empty string.
    pub const EMPTY: Str = Str(Repr::Static(""));

    /// A static string, usable in `const` context.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Repr::Static(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Owned(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The text when it is a `&'static str` (its address never holds other text).
    pub(crate) fn as_static(&self) -> Option<&'static str> {
        match &self.0 {
            Repr::Static(s) => Some(s),
            _ => None,
        }
    }

    /// The shared text when it is an `Arc<str>` (immutable while a clone is held).
    pub(crate) fn as_shared(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Repr::Shared(s) => Some(s),
            _ => None,
        }
    }

    /// The same text in a form whose clones never allocate (owned text moves to an `Arc`).
    pub fn into_shared(self) -> Self {
        match self.0 {
            Repr::Owned(s) => Self(Repr::Shared(Arc::from(s))),
            other => Self(other),
        }
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

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for Str {
    fn default() -> Self {
        Self::EMPTY
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

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
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

impl From<&'static str> for Str {
    fn from(s: &'static str) -> Self {
        Self(Repr::Static(s))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        Self(Repr::Owned(s))
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Self {
        Self(Repr::Shared(s))
    }
}

impl From<std::borrow::Cow<'static, str>> for Str {
    fn from(s: std::borrow::Cow<'static, str>) -> Self {
        match s {
            std::borrow::Cow::Borrowed(s) => Self(Repr::Static(s)),
            std::borrow::Cow::Owned(s) => Self(Repr::Owned(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_is_compact_and_compares_by_text() {
        assert!(std::mem::size_of::<Str>() <= 32);
        let a = Str::from("web");
        let b = Str::from(String::from("web"));
        let c = Str::from(String::from("web")).into_shared();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(c.clone().as_str(), "web");
        assert_eq!(a, "web");
    }
}
