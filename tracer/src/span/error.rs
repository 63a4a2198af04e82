//! The text of an error and its chain of sources, as the error tags carry it.

/// Most causes followed (a cyclic or very long chain ends there).
const MAX_CAUSES: usize = 32;

/// `first`, then `separator` and the `Display` of each source of `err` in turn (at most
/// [`MAX_CAUSES`]): `error.stack` uses `"\ncaused by: "`, one-line messages `": "`.
pub(crate) fn with_causes<E: std::error::Error + ?Sized>(first: String, err: &E, separator: &str) -> String {
    use std::fmt::Write as _;
    let mut out = first;
    let mut source = err.source();
    for _ in 0..MAX_CAUSES {
        let Some(cause) = source else { break };
        out.push_str(separator);
        let _ = write!(out, "{cause}");
        source = cause.source();
    }
    out
}

/// The separator of `error.stack` lines.
pub(crate) const CAUSED_BY: &str = "\ncaused by: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chain(u32);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "level {}", self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            // An endless chain: every error has a cause.
            Some(Box::leak(Box::new(Chain(self.0 + 1))))
        }
    }

    #[test]
    fn follows_sources_and_stops_after_the_maximum() {
        let s = with_causes("top".to_owned(), &Chain(0), CAUSED_BY);
        assert!(s.starts_with("top\ncaused by: level 1\ncaused by: level 2"));
        assert_eq!(s.matches("caused by").count(), MAX_CAUSES);
        assert_eq!(with_causes("a".to_owned(), &std::fmt::Error, ": "), "a");
    }
}
