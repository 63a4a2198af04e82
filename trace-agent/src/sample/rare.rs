//! The rare sampler (spec 5.5, `rare_sampler.go`): keeps a chunk when one of its top-level or
//! measured spans has a shape `(service, name, error, resource, http.status_code, error.type)`
//! not seen for a cooldown, within a token bucket of `tps` (burst 50). Shapes of chunks the
//! tracer kept (priority > 0) are marked seen for max(10 min, cooldown) without sampling.

use std::collections::HashMap;
use std::time::Duration;

use super::signature::{Signature, service_signature, span_hash};
use crate::process::toplevel::TOP_LEVEL_KEY;
use crate::span::{Span, tag_set};

/// Span metric written on the span that made the chunk rare.
pub const KEY_RARE: &str = "_dd.rare";
/// Span metric forcing stats (and rare sampling) on a non-top-level span.
pub const KEY_MEASURED: &str = "_dd.measured";
/// Token-bucket burst.
pub const BURST: f64 = 50.0;
/// How long shapes of tracer-kept chunks stay seen (at least).
pub const PRIORITY_TTL: Duration = Duration::from_secs(600);
/// A stored expiry is only pushed back when the new one is this much later.
const TTL_RENEWAL: Duration = Duration::from_secs(60);

/// Rare-sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RareConfig {
    /// `apm_config.enable_rare_sampler`.
    pub enabled: bool,
    /// `apm_config.rare_sampler.tps`: chunks kept per second at most.
    pub tps: f64,
    /// `apm_config.rare_sampler.cooldown`: how long a kept shape stays seen.
    pub cooldown: Duration,
    /// `apm_config.rare_sampler.cardinality`: shapes tracked per `(env, service)`.
    pub cardinality: usize,
}

impl Default for RareConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            tps: 5.0,
            cooldown: Duration::from_secs(300),
            cardinality: 200,
        }
    }
}

/// A token bucket like `golang.org/x/time/rate.Limiter`: starts full.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Duration>,
}

impl TokenBucket {
    fn allow(&mut self, now: Duration) -> bool {
        let elapsed = self.last.map_or(f64::INFINITY, |l| now.saturating_sub(l).as_secs_f64());
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Shapes seen for one `(env, service)`, with their expiry.
#[derive(Debug, Clone, Default)]
struct Shard {
    expires: HashMap<u32, Duration>,
    shrunk: bool,
}

/// Rare-sampler counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RareCounters {
    /// Chunks kept as rare.
    pub hits: u64,
    /// Unseen shapes not kept because the token bucket was empty.
    pub misses: u64,
    /// Times a shard was folded to its cardinality.
    pub shrinks: u64,
}

/// The rare sampler.
#[derive(Debug, Clone)]
pub struct RareSampler {
    config: RareConfig,
    priority_ttl: Duration,
    limiter: TokenBucket,
    shards: HashMap<Signature, Shard>,
    counters: RareCounters,
}

fn eligible(s: &Span<'_>) -> bool {
    s.metric(TOP_LEVEL_KEY) == Some(1.0) || s.metric(KEY_MEASURED) == Some(1.0)
}

/// Most `(env, service)` shards kept; beyond it the oldest-expiring shard is dropped.
const MAX_SHARDS: usize = 10_000;

impl RareSampler {
    /// A rare sampler (which answers `false` to everything when not enabled).
    pub fn new(config: RareConfig) -> Self {
        Self {
            priority_ttl: PRIORITY_TTL.max(config.cooldown),
            limiter: TokenBucket {
                rate: config.tps.max(0.0),
                burst: BURST,
                tokens: BURST,
                last: None,
            },
            shards: HashMap::new(),
            counters: RareCounters::default(),
            config: RareConfig {
                cardinality: config.cardinality.max(1),
                ..config
            },
        }
    }

    /// Whether the sampler is on.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Counters so far.
    pub fn counters(&self) -> RareCounters {
        self.counters
    }

    /// Shards (`(env, service)` pairs) tracked.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Sees a chunk at `now` (time since the Unix epoch). Tracer-kept chunks (`priority > 0`)
    /// only refresh what is seen; others are kept when a shape is new (the span gets
    /// `_dd.rare = 1`).
    pub fn sample(&mut self, now: Duration, priority: Option<i32>, spans: &mut [Span<'_>], env: &str) -> bool {
        if !self.config.enabled {
            return false;
        }
        if priority.is_some_and(|p| p > 0) {
            self.mark_seen(now + self.priority_ttl, spans, env);
            return false;
        }
        let mut sampled = false;
        for span in spans.iter_mut() {
            if !eligible(span) {
                continue;
            }
            if self.sample_span(now, span, env) {
                tag_set(&mut span.metrics, KEY_RARE, 1.0);
                sampled = true;
                break;
            }
        }
        if sampled {
            self.mark_seen(now + self.config.cooldown, spans, env);
        }
        sampled
    }

    fn shard(&mut self, env: &str, service: &str) -> &mut Shard {
        // The Go agent hashes `ServiceSignature{env, service}`: env first.
        let key = service_signature(env, service);
        if !self.shards.contains_key(&key) && self.shards.len() >= MAX_SHARDS {
            let victim = self
                .shards
                .iter()
                .map(|(k, s)| (s.expires.values().max().copied().unwrap_or_default(), *k))
                .min()
                .map(|(_, k)| k);
            if let Some(k) = victim {
                self.shards.remove(&k);
            }
        }
        self.shards.entry(key).or_default()
    }

    fn sign(cardinality: usize, shard: &Shard, span: &Span<'_>) -> u32 {
        let h = span_hash(span, "", true);
        if shard.shrunk { h % cardinality as u32 } else { h }
    }

    fn sample_span(&mut self, now: Duration, span: &Span<'_>, env: &str) -> bool {
        let cardinality = self.config.cardinality;
        let shard = self.shard(env, &span.service);
        let sig = Self::sign(cardinality, shard, span);
        let fresh = shard.expires.get(&sig).is_none_or(|exp| now > *exp);
        if !fresh {
            return false;
        }
        if self.limiter.allow(now) {
            self.counters.hits += 1;
            true
        } else {
            self.counters.misses += 1;
            false
        }
    }

    fn mark_seen(&mut self, expire: Duration, spans: &[Span<'_>], env: &str) {
        let cardinality = self.config.cardinality;
        for span in spans.iter().filter(|s| eligible(s)) {
            let shard = self.shard(env, &span.service);
            let sig = Self::sign(cardinality, shard, span);
            if shard
                .expires
                .get(&sig)
                .is_some_and(|stored| expire.saturating_sub(*stored) < TTL_RENEWAL)
            {
                continue;
            }
            shard.expires.insert(sig, expire);
            if shard.expires.len() > cardinality {
                let old = std::mem::take(&mut shard.expires);
                shard.expires = old.into_iter().map(|(h, e)| (h % cardinality as u32, e)).collect();
                shard.shrunk = true;
                self.counters.shrinks += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Str;

    fn top(service: &'static str, resource: &'static str) -> Span<'static> {
        Span {
            service: Str::from(service),
            name: Str::from("op"),
            resource: Str::from(resource),
            trace_id: 1,
            span_id: 1,
            metrics: vec![(Str::from(TOP_LEVEL_KEY), 1.0)],
            ..Span::default()
        }
    }

    fn on() -> RareSampler {
        RareSampler::new(RareConfig {
            enabled: true,
            ..RareConfig::default()
        })
    }

    const T: Duration = Duration::from_secs(1_800_000_000);

    #[test]
    fn disabled_keeps_nothing() {
        let mut r = RareSampler::new(RareConfig::default());
        assert!(!r.sample(T, Some(0), &mut [top("a", "x")], "prod"));
        assert_eq!(r.shards(), 0);
    }

    #[test]
    fn a_new_shape_is_kept_once_per_cooldown_and_marked() {
        let mut r = on();
        let mut spans = [top("a", "x")];
        assert!(r.sample(T, Some(0), &mut spans, "prod"));
        assert_eq!(spans[0].metric(KEY_RARE), Some(1.0));
        let mut again = [top("a", "x")];
        assert!(!r.sample(T + Duration::from_secs(60), Some(0), &mut again, "prod"));
        assert_eq!(again[0].metric(KEY_RARE), None);
        // Another resource, env or service is another shape.
        assert!(r.sample(T, Some(0), &mut [top("a", "y")], "prod"));
        assert!(r.sample(T, Some(0), &mut [top("a", "x")], "staging"));
        // After the cooldown the shape is rare again.
        assert!(r.sample(T + Duration::from_secs(301), Some(0), &mut [top("a", "x")], "prod"));
        assert_eq!(r.counters().hits, 4);
    }

    #[test]
    fn non_top_level_spans_are_ignored_unless_measured() {
        let mut r = on();
        let mut child = top("a", "x");
        child.metrics.clear();
        assert!(!r.sample(T, Some(0), &mut [child.clone()], "prod"));
        child.metrics.push((Str::from(KEY_MEASURED), 1.0));
        assert!(r.sample(T, Some(0), &mut [child], "prod"));
    }

    #[test]
    fn tracer_kept_shapes_are_not_rare_for_ten_minutes() {
        let mut r = on();
        assert!(
            !r.sample(T, Some(1), &mut [top("a", "x")], "prod"),
            "P1 is never sampled here"
        );
        assert!(!r.sample(T + Duration::from_secs(599), Some(0), &mut [top("a", "x")], "prod"));
        assert!(r.sample(T + Duration::from_secs(601), Some(0), &mut [top("a", "x")], "prod"));
    }

    #[test]
    fn the_token_bucket_limits_rare_keeps() {
        let mut r = on();
        let resources: Vec<String> = (0..200).map(|i| format!("r{i}")).collect();
        let mut kept = 0;
        for res in &resources {
            let mut s = top("a", "x");
            s.resource = Str::from(res.clone());
            if r.sample(T, Some(0), &mut [s], "prod") {
                kept += 1;
            }
        }
        assert_eq!(kept, 50, "burst of 50 at one instant");
        assert_eq!(r.counters().misses, 150);
        // One second later 5 more tokens.
        let mut later = 0;
        for res in &resources[100..] {
            let mut s = top("a", "x");
            s.resource = Str::from(res.clone());
            if r.sample(T + Duration::from_secs(1), Some(0), &mut [s], "prod") {
                later += 1;
            }
        }
        assert_eq!(later, 5);
    }

    #[test]
    fn cardinality_is_capped_per_shard() {
        let mut r = RareSampler::new(RareConfig {
            enabled: true,
            tps: 1e9,
            cardinality: 10,
            ..RareConfig::default()
        });
        for i in 0..100 {
            let mut s = top("a", "x");
            s.resource = Str::from(format!("r{i}"));
            r.sample(T + Duration::from_secs(i), Some(1), &mut [s], "prod");
        }
        let shard = r.shards.values().next().map(|s| s.expires.len());
        assert!(shard.is_some_and(|n| n <= 10), "{shard:?}");
        assert!(r.counters().shrinks >= 1);
    }
}
