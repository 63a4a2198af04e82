//! The probabilistic sampler (spec 5.6, `probabilistic.go`), compatible with the
//! OpenTelemetry collector's probabilistic sampler in `hash_seed` mode: FNV-1a-32 over
//! `seed (4 bytes little-endian) || 16-byte trace id`, keep when `hash & 0x3FFF <
//! percentage × 163.84`.

use super::signature::Fnv32a;
use crate::span::{Span, tag_set};

/// Root metric: the configured percentage as a rate (kept chunks only).
pub const KEY_PROB_RATE: &str = "_dd.prob_sr";
/// Decision-maker value the agent writes in chunk tag `_dd.p.dm` when it keeps by hash.
pub const DECISION_MAKER: &str = "-9";
/// Feature flag: hash the real 128-bit trace id (`_dd.p.tid`, `otel.trace_id`).
pub const FEATURE_FULL_TRACE_ID: &str = "probabilistic_sampler_full_trace_id";

const BUCKETS: u32 = 0x4000;
const MASK: u32 = BUCKETS - 1;

/// Probabilistic-sampler settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProbabilisticConfig {
    /// `apm_config.probabilistic_sampler.enabled`.
    pub enabled: bool,
    /// `.sampling_percentage`, 0–100.
    pub sampling_percentage: f32,
    /// `.hash_seed`.
    pub hash_seed: u32,
}

/// The probabilistic sampler.
#[derive(Debug, Clone)]
pub struct ProbabilisticSampler {
    enabled: bool,
    seed: [u8; 4],
    threshold: u32,
    rate: f64,
    full_trace_id: bool,
}

/// The 16 bytes the hash covers: `hi || lo`, both big-endian (W3C byte order).
fn trace_id_bytes(hi: u64, lo: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    let (h, l) = b.split_at_mut(8);
    h.copy_from_slice(&hi.to_be_bytes());
    l.copy_from_slice(&lo.to_be_bytes());
    b
}

fn parse_hex_id(s: &str) -> Option<[u8; 16]> {
    // `otel.trace_id`: 32 hex digits.
    if s.len() != 32 {
        return None;
    }
    let hi = u64::from_str_radix(s.get(..16)?, 16).ok()?;
    let lo = u64::from_str_radix(s.get(16..)?, 16).ok()?;
    Some(trace_id_bytes(hi, lo))
}

impl ProbabilisticSampler {
    /// A sampler from its settings; `full_trace_id` is the feature flag
    /// [`FEATURE_FULL_TRACE_ID`].
    pub fn new(config: ProbabilisticConfig, full_trace_id: bool) -> Self {
        Self {
            enabled: config.enabled,
            seed: config.hash_seed.to_le_bytes(),
            // Go: uint32(float32 percentage × (0x4000 / 100.0)), truncated.
            threshold: (config.sampling_percentage * (BUCKETS as f32 / 100.0)) as u32,
            rate: f64::from(config.sampling_percentage) / 100.0,
            full_trace_id,
        }
    }

    /// Whether it is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The 16 trace-id bytes hashed for `root`, or `None` when the 128-bit id is wanted but
    /// malformed.
    fn id_bytes(&self, root: &Span<'_>) -> Option<[u8; 16]> {
        if !self.full_trace_id {
            // The low 64 bits in the first 8 bytes, then zeros (what the Go agent hashes).
            return Some(trace_id_bytes(root.trace_id, 0));
        }
        if let Some(otel) = root.meta("otel.trace_id") {
            return parse_hex_id(otel);
        }
        let hi = match root.meta("_dd.p.tid") {
            Some(t) => u64::from_str_radix(t, 16).ok()?,
            None => 0,
        };
        Some(trace_id_bytes(hi, root.trace_id))
    }

    /// The hash bucket decision alone (no side effect).
    pub fn selects(&self, root: &Span<'_>) -> bool {
        let Some(id) = self.id_bytes(root) else {
            return false;
        };
        let mut h = Fnv32a::default();
        h.write(&self.seed);
        h.write(&id);
        h.sum() & MASK < self.threshold
    }

    /// Decides by hash; on keep writes `_dd.prob_sr` on the root.
    pub fn sample(&self, root: &mut Span<'_>) -> bool {
        if !self.enabled {
            return false;
        }
        let keep = self.selects(root);
        if keep {
            tag_set(&mut root.metrics, KEY_PROB_RATE, self.rate);
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Str;

    fn sampler(pct: f32, full: bool) -> ProbabilisticSampler {
        ProbabilisticSampler::new(
            ProbabilisticConfig {
                enabled: true,
                sampling_percentage: pct,
                hash_seed: 0,
            },
            full,
        )
    }

    fn root(trace_id: u64, meta: &[(&'static str, String)]) -> Span<'static> {
        Span {
            trace_id,
            meta: meta
                .iter()
                .map(|(k, v)| (Str::from(*k), Str::from(v.clone())))
                .collect(),
            ..Span::default()
        }
    }

    // Vectors of the Go agent's probabilistic_test.go (which checks itself against the OTel
    // collector's processor): trace id bytes 01 02 … 10, seed 0.
    const TID_HEX: &str = "0102030405060708090a0b0c0d0e0f10";

    #[test]
    fn otel_trace_id_vectors() {
        let r = root(555, &[("otel.trace_id", TID_HEX.to_owned())]);
        assert!(sampler(41.0, true).selects(&r));
        assert!(!sampler(40.0, true).selects(&r));
    }

    #[test]
    fn datadog_128_bit_vectors() {
        let lo = u64::from_be_bytes([9, 10, 11, 12, 13, 14, 15, 16]);
        let r = root(lo, &[("_dd.p.tid", "0102030405060708".to_owned())]);
        assert!(sampler(41.0, true).selects(&r), "same 16 bytes as the OTel id");
        assert!(!sampler(40.0, true).selects(&r));
        let mut r = root(555, &[]);
        let s = sampler(40.0, true);
        assert!(s.sample(&mut r));
        assert_eq!(r.metric(KEY_PROB_RATE), Some(0.4), "f64(40) / 100, as in Go");
        assert!(!s.selects(&root(556, &[])));
    }

    #[test]
    fn default_mode_hashes_the_low_64_bits_first() {
        let lo = u64::from_be_bytes([9, 10, 11, 12, 13, 14, 15, 16]);
        let r = root(lo, &[("_dd.p.tid", "0102030405060708".to_owned())]);
        assert!(sampler(70.0, false).selects(&r));
        assert!(!sampler(68.0, false).selects(&root(555, &[("_dd.p.tid", "0102030405060708".to_owned())])));
    }

    #[test]
    fn hand_computed_hashes() {
        // FNV-1a-32 of seed LE || id bytes, computed independently (Python, from the FNV
        // definition): seed 0, id 1 → 0x98b62362 (bucket 9058 = 55.29 %); seed 555666,
        // id 1 → 0xb37fb8ea (bucket 14570 = 88.93 %).
        for (seed, hash) in [(0u32, 0x98b6_2362u32), (555_666, 0xb37f_b8ea)] {
            let mut h = Fnv32a::default();
            h.write(&seed.to_le_bytes());
            h.write(&trace_id_bytes(1, 0));
            assert_eq!(h.sum(), hash);
        }
        let with = |pct: f32, seed: u32| {
            ProbabilisticSampler::new(
                ProbabilisticConfig {
                    enabled: true,
                    sampling_percentage: pct,
                    hash_seed: seed,
                },
                false,
            )
            .selects(&root(1, &[]))
        };
        assert!(with(55.3, 0));
        assert!(!with(55.2, 0));
        assert!(with(89.0, 555_666));
        assert!(!with(88.9, 555_666));
    }

    #[test]
    fn disabled_or_malformed_keeps_nothing() {
        let off = ProbabilisticSampler::new(ProbabilisticConfig::default(), false);
        assert!(!off.sample(&mut root(1, &[])));
        assert!(!sampler(100.0, true).selects(&root(1, &[("_dd.p.tid", "zz".to_owned())])));
        assert!(sampler(100.0, false).selects(&root(1, &[])));
        assert!(!sampler(0.0, false).selects(&root(1, &[])));
    }
}
