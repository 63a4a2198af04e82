//! Head-based trace sampling: rules, a global rate, a rate limiter and the agent's
//! `rate_by_service` feedback. Decisions are pure functions of their input and `now`.

mod priority;
mod rate_limiter;
mod rules;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

pub use priority::{AUTO_KEEP, AUTO_REJECT, AgentRates, USER_KEEP, USER_REJECT, sampled_by_rate};
pub use rate_limiter::RateLimiter;
pub use rules::{Glob, RuleInput, SamplingRule, parse_rules};
// The decision is trace state (span/decision.rs); its public home is here.
pub use crate::span::{Mechanism, SamplingDecision};

/// The tracer's sampler.
#[derive(Debug)]
pub struct Sampler {
    rules: Vec<SamplingRule>,
    limiter: Mutex<RateLimiter>,
    agent_rates: RwLock<AgentRates>,
    /// Bumped at every change of `agent_rates` (what a [`RateCache`] checks).
    rates_generation: AtomicU64,
    env: String,
}

/// The agent rate last looked up, for the export worker's chunk after chunk of one
/// service: valid while the agent rates have not changed.
#[derive(Debug, Default)]
pub struct RateCache {
    generation: u64,
    service: String,
    rate: Option<f64>,
    valid: bool,
}

/// What the sampler sees of a trace: its id and its local root.
#[derive(Debug, Clone, Copy)]
pub struct SamplingInput<'a> {
    /// The trace id (its low 64 bits feed the keep rule).
    pub trace_id_low: u64,
    /// The root's fields and tags, for the rules.
    pub root: RuleInput<'a>,
}

impl Sampler {
    /// `rules` are tried in order; `sample_rate` (`DD_TRACE_SAMPLE_RATE`) is a catch-all
    /// rule after them; rule keeps are limited to `rate_limit` traces per second;
    /// without a matching rule the agent's rate for (service, `env`) decides.
    pub fn new(mut rules: Vec<SamplingRule>, sample_rate: Option<f64>, rate_limit: f64, env: &str) -> Self {
        if let Some(rate) = sample_rate {
            rules.push(SamplingRule::catch_all(rate));
        }
        Self {
            rules,
            limiter: Mutex::new(RateLimiter::new(rate_limit)),
            agent_rates: RwLock::new(AgentRates::default()),
            rates_generation: AtomicU64::new(0),
            env: env.to_owned(),
        }
    }

    /// Decides for a trace at `now`.
    pub fn decide(&self, input: &SamplingInput<'_>, now: Instant) -> SamplingDecision {
        self.decide_cached(input, now, &mut RateCache::default())
    }

    /// [`Sampler::decide`], looking the agent rate up in `cache` first (the export worker
    /// keeps one: consecutive chunks mostly share their service).
    pub fn decide_cached(&self, input: &SamplingInput<'_>, now: Instant, cache: &mut RateCache) -> SamplingDecision {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(&input.root)) {
            let rate = rule.sample_rate;
            if !sampled_by_rate(input.trace_id_low, rate) {
                return SamplingDecision {
                    rule_rate: Some(rate),
                    ..SamplingDecision::new(USER_REJECT, Mechanism::Rule)
                };
            }
            let (allowed, effective) = match self.limiter.lock() {
                Ok(mut l) => l.allow(now),
                Err(poisoned) => poisoned.into_inner().allow(now),
            };
            let priority = if allowed { USER_KEEP } else { USER_REJECT };
            return SamplingDecision {
                rule_rate: Some(rate),
                limit_rate: Some(effective),
                ..SamplingDecision::new(priority, Mechanism::Rule)
            };
        }
        let generation = self.rates_generation.load(Ordering::Acquire);
        let service = input.root.service;
        let rate = if cache.valid && cache.generation == generation && cache.service == service {
            cache.rate
        } else {
            let rate = match self.agent_rates.read() {
                Ok(r) => r.rate_for(service, &self.env),
                Err(poisoned) => poisoned.into_inner().rate_for(service, &self.env),
            };
            cache.generation = generation;
            service.clone_into(&mut cache.service);
            cache.rate = rate;
            cache.valid = true;
            rate
        };
        let (rate, mechanism) = match rate {
            Some(r) => (r, Mechanism::AgentRate),
            None => (1.0, Mechanism::Default),
        };
        let priority = if sampled_by_rate(input.trace_id_low, rate) {
            AUTO_KEEP
        } else {
            AUTO_REJECT
        };
        SamplingDecision {
            agent_rate: Some(rate),
            ..SamplingDecision::new(priority, mechanism)
        }
    }

    /// Replaces the agent rates (from a trace-endpoint response).
    pub fn set_agent_rates(&self, rates: AgentRates) {
        match self.agent_rates.write() {
            Ok(mut r) => *r = rates,
            Err(poisoned) => *poisoned.into_inner() = rates,
        }
        self.rates_generation.fetch_add(1, Ordering::Release);
    }

    /// The current agent rates.
    pub fn agent_rates(&self) -> AgentRates {
        match self.agent_rates.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn root() -> RuleInput<'static> {
        RuleInput {
            service: "web",
            name: "http.request",
            resource: "GET /",
            meta: &[],
            metrics: &[],
        }
    }

    #[test]
    fn default_keeps_everything_until_the_agent_speaks() {
        let s = Sampler::new(vec![], None, 100.0, "prod");
        let d = s.decide(
            &SamplingInput {
                trace_id_low: 42,
                root: root(),
            },
            Instant::now(),
        );
        assert_eq!(d.priority, AUTO_KEEP);
        assert_eq!(d.mechanism, Mechanism::Default);
        assert_eq!(d.agent_rate, Some(1.0));
    }

    #[test]
    fn agent_rate_applies_the_keep_rule() {
        let s = Sampler::new(vec![], None, 100.0, "prod");
        let body = br#"{"rate_by_service":{"service:web,env:prod":0.06}}"#;
        s.set_agent_rates(AgentRates::from_response(body).ok().flatten().unwrap_or_default());
        let now = Instant::now();
        // id 1 hashes to ≈0.0602 of the range: dropped at 0.06
        let d = s.decide(
            &SamplingInput {
                trace_id_low: 1,
                root: root(),
            },
            now,
        );
        assert_eq!(
            (d.priority, d.mechanism, d.agent_rate),
            (AUTO_REJECT, Mechanism::AgentRate, Some(0.06))
        );
        let kept = (1..=10_000u64)
            .filter(|i| {
                s.decide(
                    &SamplingInput {
                        trace_id_low: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        root: root(),
                    },
                    now,
                )
                .is_keep()
            })
            .count();
        assert!((500..700).contains(&kept), "{kept}");
    }

    #[test]
    fn rules_keep_at_user_priority_and_are_rate_limited() {
        let s = Sampler::new(vec![SamplingRule::new(Some("web"), None, 1.0)], None, 2.0, "prod");
        let t0 = Instant::now();
        let pri: Vec<i8> = (1..=4u64)
            .map(|i| {
                s.decide(
                    &SamplingInput {
                        trace_id_low: i,
                        root: root(),
                    },
                    t0,
                )
                .priority
            })
            .collect();
        assert_eq!(pri, [USER_KEEP, USER_KEEP, USER_REJECT, USER_REJECT]);
        let later = s.decide(
            &SamplingInput {
                trace_id_low: 9,
                root: root(),
            },
            t0 + Duration::from_secs(1),
        );
        assert_eq!(later.priority, USER_KEEP);
        assert_eq!(later.rule_rate, Some(1.0));
        assert!(later.limit_rate.is_some_and(|r| r < 1.0));
    }

    #[test]
    fn sample_rate_is_a_catch_all_after_rules() {
        let s = Sampler::new(vec![SamplingRule::new(Some("db"), None, 1.0)], Some(0.0), 100.0, "prod");
        let d = s.decide(
            &SamplingInput {
                trace_id_low: 7,
                root: root(),
            },
            Instant::now(),
        );
        assert_eq!(
            (d.priority, d.mechanism, d.rule_rate),
            (USER_REJECT, Mechanism::Rule, Some(0.0))
        );
    }

    #[test]
    fn mechanism_round_trip() {
        assert_eq!(Mechanism::from_dm("-4"), Some(Mechanism::Propagated(4)));
        assert_eq!(Mechanism::from_dm("934086a686-4").map(Mechanism::as_dm), Some("-4"));
        assert_eq!(Mechanism::from_dm("4"), None);
        assert_eq!(Mechanism::from_dm("-x"), None);
    }
}
