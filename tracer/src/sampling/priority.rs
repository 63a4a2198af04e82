//! Sampling priorities, the keep rule on the trace id, and the agent's `rate_by_service`.

use std::collections::HashMap;

/// The user asked to drop the trace (rule drop, rate-limited, `manual.drop`).
pub const USER_REJECT: i8 = -1;
/// The automatic sampler dropped the trace.
pub const AUTO_REJECT: i8 = 0;
/// The automatic sampler kept the trace.
pub const AUTO_KEEP: i8 = 1;
/// The user asked to keep the trace (rule keep, `manual.keep`).
pub const USER_KEEP: i8 = 2;

/// Knuth's multiplicative hash factor, shared by every Datadog tracer and the agent so that
/// all of them agree on the decision for a trace id.
const KNUTH_FACTOR: u64 = 1_111_111_111_111_111_111;

/// The keep rule: `trace_id_low × 1111111111111111111 (mod 2^64) < rate × 2^64`;
/// a rate of 1 or more keeps everything, 0 or less (or NaN) nothing.
pub fn sampled_by_rate(trace_id_low: u64, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    // `rate * 2^64` fits a u64 for rate < 1, up to float rounding at the very top.
    let threshold = (rate * 18_446_744_073_709_551_616.0) as u64;
    trace_id_low.wrapping_mul(KNUTH_FACTOR) < threshold
}

/// Sample rates per `service:S,env:E` as the agent last sent them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AgentRates {
    /// service → env → rate
    by_service: HashMap<String, HashMap<String, f64>>,
    default: Option<f64>,
}

/// The agent's default key: applies to services it sent no rate for.
const DEFAULT_KEY: &str = "service:,env:";

impl AgentRates {
    /// Parses a trace-endpoint response body: `{"rate_by_service": {"service:a,env:b": 0.5, ...}}`.
    /// `Ok(None)` when the body carries no rates (e.g. `{}` or `OK`): the current rates stay.
    ///
    /// # Errors
    /// When the body is JSON with a `rate_by_service` that is not an object of numbers.
    pub fn from_response(body: &[u8]) -> Result<Option<Self>, String> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Ok(None);
        };
        let Some(rates) = value.get("rate_by_service") else {
            return Ok(None);
        };
        let obj = rates.as_object().ok_or("rate_by_service is not an object")?;
        let mut out = Self::default();
        for (k, v) in obj {
            let rate = v.as_f64().ok_or_else(|| format!("rate for {k:?} is not a number"))?;
            let rate = rate.clamp(0.0, 1.0);
            if k == DEFAULT_KEY {
                out.default = Some(rate);
            } else if let Some((service, env)) = k.strip_prefix("service:").and_then(|rest| rest.split_once(",env:")) {
                out.by_service
                    .entry(service.to_owned())
                    .or_default()
                    .insert(env.to_owned(), rate);
            }
        }
        Ok(Some(out))
    }

    /// Whether any rate came from the agent.
    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty() && self.default.is_none()
    }

    /// The rate for a service and env: the exact key, else the default key; `None` when
    /// the agent sent neither.
    pub fn rate_for(&self, service: &str, env: &str) -> Option<f64> {
        self.by_service
            .get(service)
            .and_then(|envs| envs.get(env))
            .copied()
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_rule_matches_the_shared_hash() {
        // trace id 1: 1 × K = K = 1111111111111111111 ≈ 0.0602 × 2^64
        assert!(!sampled_by_rate(1, 0.06));
        assert!(sampled_by_rate(1, 0.061));
        assert!(sampled_by_rate(0, 0.0001), "hash 0 is below any positive threshold");
        assert!(!sampled_by_rate(0, 0.0));
        assert!(sampled_by_rate(u64::MAX, 1.0));
        assert!(!sampled_by_rate(12345, f64::NAN));
    }

    #[test]
    fn keep_rule_keeps_the_rate_fraction() {
        let kept = (1..=100_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .filter(|id| sampled_by_rate(*id, 0.25))
            .count();
        assert!((24_000..26_000).contains(&kept), "{kept}");
    }

    #[test]
    fn agent_rates_parse_and_lookup() {
        let body = br#"{"rate_by_service":{"service:web,env:prod":0.5,"service:,env:":0.25}}"#;
        let rates = AgentRates::from_response(body).ok().flatten().unwrap_or_default();
        assert_eq!(rates.rate_for("web", "prod"), Some(0.5));
        assert_eq!(rates.rate_for("web", "staging"), Some(0.25));
        assert_eq!(AgentRates::from_response(b"{}"), Ok(None));
        assert_eq!(AgentRates::from_response(b"OK"), Ok(None));
        assert!(AgentRates::from_response(br#"{"rate_by_service":{"a":"x"}}"#).is_err());
        let none = AgentRates::from_response(br#"{"rate_by_service":{}}"#)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(none.is_empty());
        assert_eq!(none.rate_for("web", "prod"), None);
    }
}
