//! The rate engine shared by the priority, errors and no-priority samplers (spec 5.2;
//! `coresampler.go` in the Go agent).
//!
//! Chunks are counted per signature in 6 circular buckets of 5 s. When the first chunk of a new
//! bucket arrives, rates are recomputed from the busiest bucket of the 30 s window: the target
//! TPS is spread over the signatures (quiet ones keep their full share, the rest is split
//! evenly), a rate may fall at once but rise by at most ×1.2 per recomputation, and signatures
//! without traffic leave once their rate is back to 1.

use std::collections::HashMap;

use super::signature::Signature;
use crate::span::Span;

/// Width of one counting bucket, in seconds.
pub const BUCKET_SECS: i64 = 5;
/// Buckets in the window (6 × 5 s = 30 s).
pub const NUM_BUCKETS: usize = 6;
/// Most a rate may grow per recomputation.
pub const MAX_RATE_INCREASE: f64 = 1.2;

/// Knuth multiplier of `SampleByRate` (large, prime, fits an i64).
const SAMPLER_HASHER: u64 = 1_111_111_111_111_111_111;

/// Metric: cumulative client sample rate of the trace (root span).
pub const KEY_SAMPLE_RATE: &str = "_sample_rate";
/// Metric: legacy agent pre-sampler rate (root span).
pub const KEY_PRE_SAMPLER_RATE: &str = "_dd1.sr.rapre";

/// Deterministic keep decision from the trace id: `trace_id × 1111111111111111111` (wrapping)
/// `< rate × 2^64`; a rate ≥ 1 keeps everything. The same trace id gets the same decision in
/// every chunk, on every host, and in tracers that use the same rule.
pub fn sample_by_rate(trace_id: u64, rate: f64) -> bool {
    if rate < 1.0 {
        // `as` saturates: NaN and negatives become 0 (drop), which is what a rate ≤ 0 means.
        trace_id.wrapping_mul(SAMPLER_HASHER) < (rate * u64::MAX as f64) as u64
    } else {
        true
    }
}

/// Count weight of a chunk: `1 / (_sample_rate × _dd1.sr.rapre)` of its root, each taken as 1
/// when missing or outside (0, 1]; compensates for sampling done before the agent.
pub fn root_weight(root: &Span<'_>) -> f32 {
    let rate = |key: &str| root.metric(key).filter(|r| *r > 0.0 && *r <= 1.0).unwrap_or(1.0);
    (1.0 / (rate(KEY_PRE_SAMPLER_RATE) * rate(KEY_SAMPLE_RATE))) as f32
}

/// Per-signature counters and rates towards a target number of chunks per second.
#[derive(Debug, Clone)]
pub struct RateEngine {
    seen: HashMap<Signature, [f32; NUM_BUCKETS]>,
    all_seen: [f32; NUM_BUCKETS],
    last_bucket: i64,
    rates: HashMap<Signature, f64>,
    lowest_rate: f64,
    target_tps: f64,
    extra_rate: f64,
}

fn bucket_index(bucket: i64) -> usize {
    // rem_euclid of a positive modulus is in 0..NUM_BUCKETS.
    bucket.rem_euclid(NUM_BUCKETS as i64) as usize
}

/// Zeroes the buckets that expired between `previous` and `new` and returns the largest count
/// of the window, including the bucket that `new` is about to overwrite.
fn zero_and_get_max(buckets: &mut [f32; NUM_BUCKETS], previous: i64, new: i64) -> f32 {
    let mut max = 0f32;
    for i in (previous + 1)..=(previous + NUM_BUCKETS as i64) {
        let slot = bucket_index(i);
        let Some(value) = buckets.get_mut(slot) else {
            continue;
        };
        if i < new {
            // A whole rotation (or more) passed: these buckets hold stale counts.
            *value = 0.0;
            continue;
        }
        max = max.max(*value);
        if i == new {
            *value = 0.0;
        }
    }
    max
}

/// The TPS each signature may keep: `target / n`, where quiet signatures (below their share)
/// keep what they use and give the rest to the others.
fn tps_per_signature(mut target: f64, seen: &mut [f64]) -> f64 {
    seen.sort_by(f64::total_cmp);
    let n = seen.len();
    if n == 0 {
        return target;
    }
    let mut share = target / n as f64;
    for (i, &c) in seen.iter().enumerate() {
        if c >= share || i == n - 1 {
            break;
        }
        target -= c;
        share = target / (n - i - 1) as f64;
    }
    share
}

impl RateEngine {
    /// An engine aiming at `target_tps` chunks per second, every rate multiplied by `extra_rate`.
    pub fn new(target_tps: f64, extra_rate: f64) -> Self {
        Self {
            seen: HashMap::new(),
            all_seen: [0.0; NUM_BUCKETS],
            last_bucket: 0,
            rates: HashMap::new(),
            lowest_rate: 0.0,
            target_tps,
            extra_rate,
        }
    }

    /// The target, chunks per second.
    pub fn target_tps(&self) -> f64 {
        self.target_tps
    }

    /// Changes the target and scales the current rates by the same ratio (capped at 1).
    pub fn set_target_tps(&mut self, target_tps: f64) {
        let previous = self.target_tps;
        self.target_tps = target_tps;
        if previous == 0.0 {
            return;
        }
        let ratio = target_tps / previous;
        for rate in self.rates.values_mut() {
            *rate = (*rate * ratio).min(1.0);
        }
    }

    /// Counts `weight` chunks of `signature` at `now_secs` (Unix seconds). Returns whether this
    /// call started a new bucket and therefore recomputed the rates.
    pub fn count(&mut self, now_secs: i64, signature: Signature, weight: f32) -> bool {
        let bucket = now_secs.div_euclid(BUCKET_SECS);
        let previous = self.last_bucket;
        self.last_bucket = bucket;
        let rotated = previous != bucket;
        if rotated {
            self.update_rates(previous, bucket);
        }
        let slot = bucket_index(bucket);
        if let Some(c) = self.all_seen.get_mut(slot) {
            *c += weight;
        }
        let buckets = self.seen.entry(signature).or_insert([0.0; NUM_BUCKETS]);
        if let Some(c) = buckets.get_mut(slot) {
            *c += weight;
        }
        rotated
    }

    fn update_rates(&mut self, previous: i64, new: i64) {
        if self.seen.is_empty() {
            return;
        }
        let mut sigs = Vec::with_capacity(self.seen.len());
        let mut seen_tps = Vec::with_capacity(self.seen.len());
        for (sig, buckets) in &mut self.seen {
            let max = zero_and_get_max(buckets, previous, new);
            sigs.push(*sig);
            seen_tps.push(f64::from(max) / BUCKET_SECS as f64);
        }
        zero_and_get_max(&mut self.all_seen, previous, new);
        let per_sig = tps_per_signature(self.target_tps, &mut seen_tps.clone());

        let mut rates = HashMap::with_capacity(sigs.len());
        self.lowest_rate = 1.0;
        for (sig, tps) in sigs.into_iter().zip(seen_tps) {
            let mut rate = if per_sig < tps && tps > 0.0 { per_sig / tps } else { 1.0 };
            if let Some(&prev) = self.rates.get(&sig)
                && prev != 0.0
                && rate / prev > MAX_RATE_INCREASE
            {
                rate = prev * MAX_RATE_INCREASE;
            }
            rate = rate.min(1.0);
            if rate == 1.0 && tps == 0.0 {
                // No traffic in the window and nothing left to recover: forget the signature.
                self.seen.remove(&sig);
                continue;
            }
            self.lowest_rate = self.lowest_rate.min(rate);
            rates.insert(sig, rate);
        }
        self.rates = rates;
    }

    /// The rate for `signature` (× extra rate), or [`Self::default_rate`] when it has none yet.
    pub fn rate(&self, signature: Signature) -> f64 {
        match self.rates.get(&signature) {
            Some(r) => r * self.extra_rate,
            None => self.default_rate(),
        }
    }

    /// Every signature's rate (× extra rate).
    pub fn rates(&self) -> impl Iterator<Item = (Signature, f64)> + '_ {
        self.rates.iter().map(|(s, r)| (*s, r * self.extra_rate))
    }

    /// Whether `signature` has a computed rate.
    pub fn has_rate(&self, signature: Signature) -> bool {
        self.rates.contains_key(&signature)
    }

    /// Rate for signatures not seen yet: `target / seen TPS of all signatures`, at most the
    /// lowest current rate; 0 when the target is 0. (Like the Go agent, not × extra rate.)
    pub fn default_rate(&self) -> f64 {
        if self.target_tps == 0.0 {
            return 0.0;
        }
        let max = self.all_seen.iter().copied().fold(0f32, f32::max);
        let seen_tps = f64::from(max) / BUCKET_SECS as f64;
        let rate = if self.target_tps < seen_tps && seen_tps > 0.0 {
            self.target_tps / seen_tps
        } else {
            1.0
        };
        if self.lowest_rate < rate && self.lowest_rate != 0.0 {
            self.lowest_rate
        } else {
            rate
        }
    }

    /// Signatures tracked.
    pub fn size(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Str;

    const T0: i64 = 1_800_000_000; // a multiple of 5

    /// Feeds `tps` chunks per second of `sig` for `secs` seconds from `start`, one count per
    /// second of weight `tps` (what matters is the per-bucket total).
    fn feed(e: &mut RateEngine, sig: Signature, start: i64, secs: i64, tps: f32) {
        for s in 0..secs {
            e.count(start + s, sig, tps);
        }
    }

    #[test]
    fn sample_by_rate_is_the_knuth_rule() {
        assert!(sample_by_rate(12345, 1.0));
        assert!(sample_by_rate(0, 0.5), "0 × k = 0 is below any positive threshold");
        assert!(!sample_by_rate(0, 0.0));
        let id = 987_654_321u64;
        let h = id.wrapping_mul(1_111_111_111_111_111_111);
        let threshold = h as f64 / u64::MAX as f64;
        assert!(sample_by_rate(id, threshold + 1e-6));
        assert!(!sample_by_rate(id, threshold - 1e-6));
        // Over many ids the kept fraction is the rate.
        let kept = (1..=100_000u64)
            .filter(|i| sample_by_rate(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0.1))
            .count();
        assert!((9_500..10_500).contains(&kept), "{kept}");
    }

    #[test]
    fn root_weight_compensates_client_sampling() {
        let mut s = Span::default();
        assert_eq!(root_weight(&s), 1.0);
        s.metrics.push((Str::from(KEY_SAMPLE_RATE), 0.25));
        assert_eq!(root_weight(&s), 4.0);
        s.metrics.push((Str::from(KEY_PRE_SAMPLER_RATE), 0.5));
        assert_eq!(root_weight(&s), 8.0);
        s.metrics.clear();
        s.metrics.push((Str::from(KEY_SAMPLE_RATE), 0.0));
        s.metrics.push((Str::from(KEY_PRE_SAMPLER_RATE), 7.0));
        assert_eq!(root_weight(&s), 1.0, "out-of-range rates count as 1");
    }

    #[test]
    fn tps_is_spread_and_quiet_signatures_keep_their_share() {
        assert_eq!(tps_per_signature(10.0, &mut [100.0]), 10.0);
        assert_eq!(tps_per_signature(10.0, &mut [100.0, 100.0]), 5.0);
        // 1 TPS uses less than its 5: the other gets 9.
        assert_eq!(tps_per_signature(10.0, &mut [100.0, 1.0]), 9.0);
        assert_eq!(tps_per_signature(10.0, &mut [1.0, 2.0, 100.0]), 7.0);
    }

    #[test]
    fn a_busy_signature_converges_to_target_over_seen() {
        let mut e = RateEngine::new(10.0, 1.0);
        assert_eq!(e.rate(1), 1.0, "nothing seen: keep everything");
        feed(&mut e, 1, T0, 5, 1000.0);
        assert!(e.count(T0 + 5, 1, 1000.0), "first count of a new bucket recomputes");
        assert!((e.rate(1) - 0.01).abs() < 1e-9, "{}", e.rate(1));
        // Unknown signatures get min(target / all seen, lowest rate).
        assert!((e.rate(2) - 0.01).abs() < 1e-9);
    }

    #[test]
    fn rates_rise_at_most_1_2_per_bucket_and_idle_signatures_leave() {
        let mut e = RateEngine::new(10.0, 1.0);
        feed(&mut e, 1, T0, 10, 100.0);
        e.count(T0 + 10, 1, 0.0);
        let mut prev = e.rate(1);
        assert!((prev - 0.1).abs() < 1e-9);
        // Traffic falls to 1 TPS: the window still remembers 100 TPS for 30 s, then the rate
        // climbs back by ×1.2 steps.
        let mut steps = 0;
        let mut t = T0 + 11;
        while prev < 1.0 {
            feed(&mut e, 1, t, 5, 1.0);
            t += 5;
            let r = e.rate(1);
            assert!(r <= prev * MAX_RATE_INCREASE + 1e-12, "{prev} -> {r}");
            assert!(r >= prev);
            prev = r;
            steps += 1;
            assert!(steps < 40, "never recovered");
        }
        assert!(steps >= 13, "0.1 → 1 needs ≥ 13 steps of ×1.2, took {steps}");
        // No traffic at all: once back at 1 the signature is forgotten.
        e.count(t + 100, 2, 1.0);
        assert_eq!(e.size(), 1, "only the new signature is left");
        assert!(!e.has_rate(1));
    }

    #[test]
    fn extra_rate_multiplies_known_rates_and_zero_target_drops_unknown() {
        let mut e = RateEngine::new(10.0, 0.5);
        feed(&mut e, 1, T0, 5, 1000.0);
        e.count(T0 + 5, 1, 1.0);
        assert!((e.rate(1) - 0.005).abs() < 1e-9);
        assert_eq!(e.rates().count(), 1);
        let z = RateEngine::new(0.0, 1.0);
        assert_eq!(z.rate(7), 0.0);
    }

    #[test]
    fn set_target_tps_scales_rates() {
        let mut e = RateEngine::new(10.0, 1.0);
        feed(&mut e, 1, T0, 5, 1000.0);
        e.count(T0 + 5, 1, 1.0);
        e.set_target_tps(20.0);
        assert!((e.rate(1) - 0.02).abs() < 1e-9);
        assert_eq!(e.target_tps(), 20.0);
    }

    #[test]
    fn a_long_gap_clears_the_window() {
        let mut e = RateEngine::new(10.0, 1.0);
        feed(&mut e, 1, T0, 5, 1000.0);
        e.count(T0 + 5, 1, 1.0);
        assert!(e.rate(1) < 0.02);
        // Ten minutes later all buckets are stale: seen TPS is only what the new bucket holds.
        e.count(T0 + 600, 1, 1.0);
        assert!(e.rate(1) > 0.01, "rate recovers (capped) after the gap");
        assert!(e.rate(1) <= 0.01 * MAX_RATE_INCREASE + 1e-12);
    }
}
