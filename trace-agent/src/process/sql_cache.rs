//! A bounded cache of SQL obfuscation results (`apm_config.obfuscation.cache`): the same query
//! text is obfuscated once. When the byte budget is exceeded the cache starts over (cheap,
//! bounded, and hot queries come back at once).

use std::collections::HashMap;
use std::sync::Mutex;

/// Default budget in bytes (`apm_config.obfuscation.cache.max_size`).
pub const DEFAULT_MAX_BYTES: usize = 5_000_000;

/// Cached outcome: the obfuscated text, or `None` when the query could not be parsed.
type Outcome = Option<String>;

/// Shared SQL obfuscation cache.
#[derive(Debug)]
pub struct SqlCache {
    max_bytes: usize,
    inner: Mutex<(HashMap<String, Outcome>, usize)>,
}

impl Default for SqlCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl SqlCache {
    /// A cache holding at most about `max_bytes` of query text.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The cached outcome for `query`, computing (and storing) it with `compute` on a miss.
    pub fn get_or_compute(&self, query: &str, compute: impl FnOnce(&str) -> Outcome) -> Outcome {
        if let Ok(g) = self.inner.lock()
            && let Some(hit) = g.0.get(query)
        {
            return hit.clone();
        }
        let outcome = compute(query);
        let cost = query.len() + outcome.as_ref().map_or(0, String::len);
        if cost <= self.max_bytes
            && let Ok(mut g) = self.inner.lock()
        {
            if g.1 + cost > self.max_bytes {
                g.0.clear();
                g.1 = 0;
            }
            g.0.insert(query.to_owned(), outcome.clone());
            g.1 += cost;
        }
        outcome
    }

    /// Number of cached queries.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.0.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
