//! The `rate_by_service` table returned on trace replies (spec 1.4). Until the priority sampler
//! publishes rates ([`RatesTable::replace_all`]), every service seen gets the default rate 1.0.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Key of the default rate for services not in the table.
pub const DEFAULT_KEY: &str = "service:,env:";
/// Most `service,env` keys kept (`apm_config.max_catalog_entries` in the Go agent); later ones
/// get the default rate.
pub const MAX_ENTRIES: usize = 5000;

#[derive(Debug)]
struct Inner {
    rates: BTreeMap<String, f64>,
    counter: u64,
    version: String,
    body: String,
}

/// Shared sampling rates by `service:S,env:E`, with an opaque version bumped on change.
#[derive(Debug)]
pub struct RatesTable {
    inner: RwLock<Inner>,
    started: u64,
}

impl Default for RatesTable {
    fn default() -> Self {
        Self::new()
    }
}

/// The rate-table key for `service` and `env`.
pub fn rate_key(service: &str, env: &str) -> String {
    format!("service:{service},env:{env}")
}

impl RatesTable {
    /// A table holding only the default rate 1.0.
    pub fn new() -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut inner = Inner {
            rates: BTreeMap::new(),
            counter: 0,
            version: String::new(),
            body: String::new(),
        };
        inner.rates.insert(DEFAULT_KEY.to_owned(), 1.0);
        let table = Self {
            inner: RwLock::new(inner),
            started,
        };
        table.with_write(|i| Self::refresh(started, i));
        table
    }

    fn with_write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn refresh(started: u64, i: &mut Inner) {
        i.counter += 1;
        i.version = format!("{started:x}-{:x}", i.counter);
        let rates: serde_json::Map<String, serde_json::Value> =
            i.rates.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
        i.body = serde_json::json!({ "rate_by_service": rates }).to_string();
    }

    /// Adds `service:S,env:E` at the default rate if it is new (bumps the version).
    pub fn observe(&self, service: &str, env: &str) {
        let key = rate_key(service, env);
        {
            let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if g.rates.contains_key(&key) {
                return;
            }
        }
        let started = self.started;
        self.with_write(|i| {
            let default = i.rates.get(DEFAULT_KEY).copied().unwrap_or(1.0);
            if i.rates.len() < MAX_ENTRIES && i.rates.insert(key, default).is_none() {
                Self::refresh(started, i);
            }
        });
    }

    /// [`observe`](Self::observe) for every `(service, env)` of a payload under one lock and
    /// one version bump (a payload with N new services costs O(N log N), not N rebuilds of
    /// the reply body).
    pub fn observe_all(&self, keys: &[(String, String)]) {
        let new: Vec<String> = {
            let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if g.rates.len() >= MAX_ENTRIES {
                return;
            }
            keys.iter()
                .map(|(s, e)| rate_key(s, e))
                .filter(|k| !g.rates.contains_key(k))
                .collect()
        };
        if new.is_empty() {
            return;
        }
        let started = self.started;
        self.with_write(|i| {
            let default = i.rates.get(DEFAULT_KEY).copied().unwrap_or(1.0);
            let mut changed = false;
            for key in new {
                if i.rates.len() >= MAX_ENTRIES {
                    break;
                }
                changed |= i.rates.insert(key, default).is_none();
            }
            if changed {
                Self::refresh(started, i);
            }
        });
    }

    /// Sets rates (used by the sampler; bumps the version when anything changed). New keys
    /// beyond [`MAX_ENTRIES`] are ignored.
    pub fn set_rates(&self, rates: impl IntoIterator<Item = (String, f64)>) {
        let started = self.started;
        self.with_write(|i| {
            let mut changed = false;
            for (k, v) in rates {
                if !i.rates.contains_key(&k) && i.rates.len() >= MAX_ENTRIES {
                    continue;
                }
                if i.rates.insert(k, v) != Some(v) {
                    changed = true;
                }
            }
            if changed {
                Self::refresh(started, i);
            }
        });
    }

    /// Replaces the whole table with `rates` (the priority sampler's `rate_by_service`: keys
    /// absent from it are removed, like the Go agent's `SetAll`); rates are clamped to [0, 1],
    /// at most [`MAX_ENTRIES`] keys are kept (the default key first). Bumps the version when
    /// anything changed.
    pub fn replace_all(&self, rates: impl IntoIterator<Item = (String, f64)>) {
        let started = self.started;
        let mut next = BTreeMap::new();
        for (k, v) in rates {
            if next.len() < MAX_ENTRIES || k == DEFAULT_KEY {
                next.insert(k, if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) });
            }
        }
        if next.len() > MAX_ENTRIES
            && let Some(k) = next.keys().rfind(|k| k.as_str() != DEFAULT_KEY).cloned()
        {
            next.remove(&k);
        }
        self.with_write(|i| {
            if i.rates != next {
                i.rates = next;
                Self::refresh(started, i);
            }
        });
    }

    /// The current rate for `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rates
            .get(key)
            .copied()
    }

    /// The reply body and the current version, given the tracer's `Datadog-Rates-Payload-Version`:
    /// the literal `{}` when the tracer already has the current rates.
    pub fn reply(&self, tracer_version: Option<&str>) -> (String, String) {
        let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tracer_version == Some(g.version.as_str()) {
            ("{}".to_owned(), g.version.clone())
        } else {
            (g.body.clone(), g.version.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_adds_keys_once_and_bumps_the_version() {
        let t = RatesTable::new();
        let (_, v1) = t.reply(None);
        t.observe("web", "prod");
        let (body, v2) = t.reply(None);
        assert_ne!(v1, v2);
        assert!(body.contains("\"service:web,env:prod\":1.0"), "{body}");
        t.observe("web", "prod");
        assert_eq!(t.reply(None).1, v2, "no change, same version");
        assert_eq!(t.reply(Some(&v2)).0, "{}");
    }

    #[test]
    fn replace_all_removes_absent_keys_and_clamps() {
        let t = RatesTable::new();
        t.observe("old", "prod");
        let (_, v1) = t.reply(None);
        t.replace_all([
            (rate_key("web", "prod"), 0.25),
            (rate_key("web", ""), 1.5),
            (DEFAULT_KEY.to_owned(), 0.5),
        ]);
        let (body, v2) = t.reply(None);
        assert_ne!(v1, v2);
        assert_eq!(t.get("service:old,env:prod"), None, "{body}");
        assert_eq!(t.get("service:web,env:prod"), Some(0.25));
        assert_eq!(t.get("service:web,env:"), Some(1.0));
        assert_eq!(t.get(DEFAULT_KEY), Some(0.5));
        t.replace_all([
            (DEFAULT_KEY.to_owned(), 0.5),
            (rate_key("web", ""), 1.0),
            (rate_key("web", "prod"), 0.25),
        ]);
        assert_eq!(t.reply(None).1, v2, "same rates, same version");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = RatesTable::new();
        t.set_rates((0..MAX_ENTRIES).map(|i| (rate_key(&format!("svc{i}"), "e"), 1.0)));
        for i in MAX_ENTRIES..(MAX_ENTRIES + 10) {
            t.observe(&format!("svc{i}"), "e");
        }
        assert_eq!(t.get("service:svc0,env:e"), Some(1.0));
        assert_eq!(t.get(&rate_key(&format!("svc{}", MAX_ENTRIES + 5), "e")), None);
    }
}
