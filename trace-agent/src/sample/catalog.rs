//! The priority sampler's `(service, env)` catalog (`catalog.go`): maps each pair to its
//! signature, bounded to `max_catalog_entries` by evicting the least recently used pair, and
//! builds the `rate_by_service` table from the engine's rates.

use std::collections::{BTreeMap, HashMap};

use super::signature::{Signature, service_signature};

/// Default `apm_config.max_catalog_entries`.
pub const DEFAULT_MAX_CATALOG_ENTRIES: usize = 5000;
/// Key of the default rate in `rate_by_service`.
pub const DEFAULT_RATE_KEY: &str = "service:,env:";

#[derive(Debug, Clone)]
struct Entry {
    service: String,
    env: String,
    last_used: u64,
}

/// `(service, env)` → signature, least recently used evicted beyond the cap.
#[derive(Debug, Clone)]
pub struct ServiceCatalog {
    // Keyed by signature so a lookup needs no allocation; colliding pairs share the slot's Vec
    // (and, like in the Go agent, the same rate).
    by_sig: HashMap<Signature, Vec<Entry>>,
    len: usize,
    max_entries: usize,
    clock: u64,
    evicted: u64,
    /// The pair registered last (a payload's chunks are mostly of one service): found again
    /// with two string compares instead of a hash of both and a map lookup. Its entry's
    /// `last_used` is written back when another pair comes, and before an eviction.
    memo: Memo,
}

#[derive(Debug, Clone, Default)]
struct Memo {
    /// Whether the memo holds a pair of the catalog.
    valid: bool,
    service: String,
    env: String,
    sig: Signature,
    last_used: u64,
}

/// The `rate_by_service` key for a pair.
pub fn rate_key(service: &str, env: &str) -> String {
    format!("service:{service},env:{env}")
}

impl ServiceCatalog {
    /// A catalog of at most `max_entries` pairs (0 means the default 5000).
    pub fn new(max_entries: usize) -> Self {
        Self {
            by_sig: HashMap::new(),
            len: 0,
            max_entries: if max_entries == 0 {
                DEFAULT_MAX_CATALOG_ENTRIES
            } else {
                max_entries
            },
            clock: 0,
            evicted: 0,
            memo: Memo::default(),
        }
    }

    /// Registers a use of `(service, env)` and returns its signature.
    pub fn register(&mut self, service: &str, env: &str) -> Signature {
        self.clock += 1;
        let clock = self.clock;
        if self.memo.valid && self.memo.service == service && self.memo.env == env {
            self.memo.last_used = clock;
            return self.memo.sig;
        }
        self.write_back_memo();
        let sig = service_signature(service, env);
        let slot = self.by_sig.entry(sig).or_default();
        if let Some(e) = slot.iter_mut().find(|e| e.service == service && e.env == env) {
            e.last_used = clock;
            self.set_memo(service, env, sig, clock);
            return sig;
        }
        slot.push(Entry {
            service: service.to_owned(),
            env: env.to_owned(),
            last_used: clock,
        });
        self.len += 1;
        if self.len > self.max_entries {
            self.evict_oldest();
        } else {
            self.set_memo(service, env, sig, clock);
        }
        sig
    }

    /// Remembers `(service, env)` as the last pair (its buffers reused: no allocation once
    /// they have grown to the catalog's usual names).
    fn set_memo(&mut self, service: &str, env: &str, sig: Signature, clock: u64) {
        let m = &mut self.memo;
        m.service.clear();
        m.service.push_str(service);
        m.env.clear();
        m.env.push_str(env);
        m.sig = sig;
        m.last_used = clock;
        m.valid = true;
    }

    /// Writes the memo's `last_used` back to its entry and forgets the memo.
    fn write_back_memo(&mut self) {
        if !std::mem::take(&mut self.memo.valid) {
            return;
        }
        let m = &self.memo;
        if let Some(e) = self
            .by_sig
            .get_mut(&m.sig)
            .and_then(|slot| slot.iter_mut().find(|e| e.service == m.service && e.env == m.env))
        {
            e.last_used = m.last_used;
        }
    }

    fn evict_oldest(&mut self) {
        self.write_back_memo();
        // O(n), but only when a new pair arrives while the catalog is full.
        let oldest = self
            .by_sig
            .iter()
            .flat_map(|(sig, v)| v.iter().enumerate().map(move |(i, e)| (e.last_used, *sig, i)))
            .min();
        let Some((_, sig, i)) = oldest else {
            return;
        };
        if let Some(v) = self.by_sig.get_mut(&sig) {
            if i < v.len() {
                let e = v.swap_remove(i);
                tracing::debug!(
                    service = %e.service,
                    env = %e.env,
                    max = self.max_entries,
                    "service-rates catalog full: least recently used pair dropped"
                );
                self.len -= 1;
                self.evicted += 1;
            }
            if v.is_empty() {
                self.by_sig.remove(&sig);
            }
        }
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pairs evicted because the catalog was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The `rate_by_service` table: one `service:S,env:E` key per pair whose signature still has
    /// a rate (pairs without one are forgotten), an extra `service:S,env:` key when `E` is the
    /// agent env, and the default `service:,env:`. Rates are clamped to [0, 1].
    pub fn rates_by_service(
        &mut self,
        agent_env: &str,
        rate_of: impl Fn(Signature) -> Option<f64>,
        default_rate: f64,
    ) -> BTreeMap<String, f64> {
        // Pairs may be forgotten below: the memo must not outlive its entry.
        self.write_back_memo();
        let mut out = BTreeMap::new();
        let mut removed = 0;
        self.by_sig.retain(|sig, entries| {
            let Some(rate) = rate_of(*sig) else {
                removed += entries.len();
                return false;
            };
            let rate = rate.clamp(0.0, 1.0);
            for e in entries.iter() {
                out.insert(rate_key(&e.service, &e.env), rate);
                if e.env == agent_env {
                    out.insert(rate_key(&e.service, ""), rate);
                }
            }
            true
        });
        self.len -= removed;
        out.insert(DEFAULT_RATE_KEY.to_owned(), default_rate.clamp(0.0, 1.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo of the last pair changes nothing: the same signatures, LRU order and
    /// forgetting as a catalog that looks every pair up (a reference model).
    #[test]
    fn memo_of_the_last_pair_keeps_lru_and_forgetting() {
        let mut c = ServiceCatalog::new(2);
        c.register("a", "prod");
        c.register("a", "prod"); // memo hit
        c.register("b", "prod");
        c.register("a", "prod"); // a most recent again, through a memo miss then hit
        c.register("a", "prod");
        c.register("c", "prod"); // evicts b, the oldest
        let rates = c.rates_by_service("none", |_| Some(0.5), 1.0);
        assert!(rates.contains_key("service:a,env:prod"), "{rates:?}");
        assert!(!rates.contains_key("service:b,env:prod"), "{rates:?}");
        assert!(rates.contains_key("service:c,env:prod"), "{rates:?}");
        // Forgotten while it was the memo: registering it again adds it back.
        c.register("c", "prod");
        let sig_c = service_signature("c", "prod");
        let rates = c.rates_by_service("none", |s| (s != sig_c).then_some(0.5), 1.0);
        assert!(!rates.contains_key("service:c,env:prod"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.register("c", "prod"), sig_c);
        assert_eq!(c.len(), 2, "re-added after being forgotten");
        // The memo is written back before an eviction: `c` (just used) stays, `a` goes.
        c.register("c", "prod");
        c.register("d", "prod");
        let rates = c.rates_by_service("none", |_| Some(0.5), 1.0);
        assert!(rates.contains_key("service:c,env:prod"), "{rates:?}");
        assert!(!rates.contains_key("service:a,env:prod"), "{rates:?}");
    }

    #[test]
    fn register_is_stable_and_bounded_with_lru_eviction() {
        let mut c = ServiceCatalog::new(3);
        let a = c.register("a", "prod");
        assert_eq!(a, service_signature("a", "prod"));
        c.register("b", "prod");
        c.register("c", "prod");
        c.register("a", "prod"); // a is now the most recent; b the oldest
        c.register("d", "prod");
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 1);
        let rates = c.rates_by_service("none", |_| Some(0.5), 1.0);
        assert!(rates.contains_key("service:a,env:prod"));
        assert!(!rates.contains_key("service:b,env:prod"), "{rates:?}");
        assert!(rates.contains_key("service:d,env:prod"));
        assert_eq!(rates.len(), 4, "3 pairs + default");
    }

    #[test]
    fn rates_by_service_adds_agent_env_alias_and_default_and_forgets_rateless_pairs() {
        let mut c = ServiceCatalog::new(0);
        let web = c.register("web", "prod");
        c.register("web", "staging");
        c.register("gone", "prod");
        let rates = c.rates_by_service(
            "prod",
            |s| {
                if s == web {
                    Some(0.25)
                } else if s == service_signature("web", "staging") {
                    Some(1.5)
                } else {
                    None
                }
            },
            0.75,
        );
        assert_eq!(rates["service:web,env:prod"], 0.25);
        assert_eq!(rates["service:web,env:"], 0.25, "agent env alias");
        assert_eq!(rates["service:web,env:staging"], 1.0, "clamped");
        assert_eq!(rates[DEFAULT_RATE_KEY], 0.75);
        assert!(!rates.contains_key("service:gone,env:prod"));
        assert_eq!(c.len(), 2, "the pair without a rate left the catalog");
    }
}
