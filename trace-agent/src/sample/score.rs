//! Score samplers (spec 5.4, `scoresampler.go`): the errors sampler and the no-priority
//! sampler. They sign each chunk by its shape, count it in a [`RateEngine`] and keep it by
//! trace id at `rate × root._sample_rate`, so every chunk of one trace gets the same answer.

use std::collections::HashSet;

use super::engine::{KEY_SAMPLE_RATE, RateEngine, root_weight, sample_by_rate};
use super::signature::{Signature, chunk_signature};
use crate::span::{Span, tag_set};

/// Root metric written by the errors sampler when it keeps a chunk.
pub const KEY_ERRORS_RATE: &str = "_dd.errors_sr";
/// Root metric written by the no-priority sampler when it keeps a chunk.
pub const KEY_NO_PRIORITY_RATE: &str = "_dd.no_p_sr";
/// Signatures tracked before new ones are folded (`shrinkCardinality / 2` in Go).
pub const MAX_SIGNATURES: u64 = 100;

/// A score sampler; [`ScoreSampler::errors`] and [`ScoreSampler::no_priority`] build the two.
#[derive(Debug, Clone)]
pub struct ScoreSampler {
    engine: RateEngine,
    rate_key: &'static str,
    disabled: bool,
    // Signatures that had a rate when the cap was reached: they keep their own slot.
    allow_list: Option<HashSet<Signature>>,
    scratch: Vec<u32>,
}

impl ScoreSampler {
    /// The errors sampler: target `error_tps` (0 disables it), writes `_dd.errors_sr`.
    pub fn errors(error_tps: f64, extra_rate: f64) -> Self {
        Self::new(error_tps, extra_rate, KEY_ERRORS_RATE, error_tps == 0.0)
    }

    /// The no-priority sampler: target `target_tps`, writes `_dd.no_p_sr`.
    pub fn no_priority(target_tps: f64, extra_rate: f64) -> Self {
        Self::new(target_tps, extra_rate, KEY_NO_PRIORITY_RATE, false)
    }

    fn new(target: f64, extra_rate: f64, rate_key: &'static str, disabled: bool) -> Self {
        Self {
            engine: RateEngine::new(target, extra_rate),
            rate_key,
            disabled,
            allow_list: None,
            scratch: Vec::new(),
        }
    }

    /// Whether the sampler never keeps anything (errors sampler with a target of 0).
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Counts the chunk and decides. `root` is `spans[root_index]`; on keep the rate is written
    /// to the root's metrics.
    pub fn sample(&mut self, now_secs: i64, spans: &mut [Span<'_>], root_index: usize, env: &str) -> bool {
        if self.disabled {
            return false;
        }
        let Some(root) = spans.get(root_index) else {
            return false;
        };
        let sig = chunk_signature(spans, root, env, &mut self.scratch);
        let sig = self.shrink(sig);
        self.engine.count(now_secs, sig, root_weight(root));
        let rate = self.engine.rate(sig);
        let client_rate = root.metric(KEY_SAMPLE_RATE).unwrap_or(1.0);
        let keep = sample_by_rate(root.trace_id, client_rate * rate);
        if keep && let Some(root) = spans.get_mut(root_index) {
            tag_set(&mut root.metrics, self.rate_key, rate);
        }
        keep
    }

    /// Caps the signatures tracked: past [`MAX_SIGNATURES`], signatures that had no rate yet
    /// are folded modulo [`MAX_SIGNATURES`].
    fn shrink(&mut self, sig: Signature) -> Signature {
        if (self.engine.size() as u64) < MAX_SIGNATURES {
            self.allow_list = None;
            return sig;
        }
        let engine = &self.engine;
        let allow = self
            .allow_list
            .get_or_insert_with(|| engine.rates().map(|(s, _)| s).collect());
        if allow.contains(&sig) {
            sig
        } else {
            sig % MAX_SIGNATURES
        }
    }

    /// The rate engine (for introspection).
    pub fn engine(&self) -> &RateEngine {
        &self.engine
    }

    /// Changes the target TPS.
    pub fn set_target_tps(&mut self, target_tps: f64) {
        self.engine.set_target_tps(target_tps);
    }
}
