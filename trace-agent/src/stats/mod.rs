//! Trace statistics (spec section 6): the agent-side [`Concentrator`], the
//! [`ClientStatsAggregator`] for tracer-computed `/v0.6/stats`, the [`sketch::Sketch`] they
//! share, and the intake encoding ([`payload`]).
//!
//! * [`Concentrator`] — every span of every received chunk (before sampling, after
//!   obfuscation) that is top-level, measured or of an eligible `span.kind` is counted into a
//!   10 s bucket by its **end** time, grouped by the aggregation key of spec 6.2 ([`key`]) under
//!   a payload key (env, hostname, version, …). Flushed buckets become one
//!   `pb::StatsPayload`. Payloads whose tracer computed stats itself
//!   (`Datadog-Client-Computed-Stats`) are skipped by [`Concentrator::add`].
//! * [`client`] — `/v0.6/stats` payloads: normalization/obfuscation of their groups
//!   ([`client::process_client_stats`]) and the 2 s odd-aligned [`ClientStatsAggregator`].
//! * [`payload`] — msgpack + gzip encoding of `pb::StatsPayload` for `/api/v0.2/stats`, and
//!   [`payload::split_stats`] (at most 4000 groups per request).
//!
//! Everything here is pure: callers pass `now`; nothing spawns, sleeps or reads a clock.
//! Memory is bounded by [`StatsConfig::max_groups_per_bucket`] (overflow is counted into one
//! catch-all group per payload key whose string fields are [`key::OVERFLOW_VALUE`], and in a
//! counter) and by the number of open buckets (spans far in the future are clamped).

pub mod client;
pub mod concentrator;
pub mod key;
pub mod payload;
pub mod sketch;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use client::{ClientStatsAggregator, ClientStatsInput};
pub use concentrator::{Concentrator, ConcentratorCounters};
/// The stats wire types (`StatsPayload`, `ClientStatsPayload`, `ClientStatsBucket`,
/// `ClientGroupedStats`), re-exported from `libdd-trace-protobuf`.
pub use libdd_trace_protobuf::pb;

/// Stats configuration (`apm_config.*` keys of spec 6 and 8).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// `apm_config.compute_stats_by_span_kind` (default true): spans with `span.kind`
    /// server/client/producer/consumer are eligible even when not top-level.
    pub compute_stats_by_span_kind: bool,
    /// `apm_config.peer_tags_aggregation` (default true).
    pub peer_tags_aggregation: bool,
    /// `apm_config.peer_tags`: peer-tag keys added to [`key::DEFAULT_PEER_TAGS`].
    pub peer_tags: Vec<String>,
    /// `apm_config.bucket_size_seconds` (default 10 s).
    pub bucket_size: Duration,
    /// `apm_config.stats_max_groups_per_bucket` (default [`DEFAULT_MAX_GROUPS_PER_BUCKET`]):
    /// distinct (payload key, group key) pairs per time bucket before new ones go to the
    /// overflow group.
    pub max_groups_per_bucket: usize,
    /// Container id as a payload dimension: feature `enable_cid_stats` without
    /// `disable_cid_stats` (spec 6.2).
    pub container_id_dimension: bool,
}

/// Default of [`StatsConfig::max_groups_per_bucket`].
pub const DEFAULT_MAX_GROUPS_PER_BUCKET: usize = 5000;

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            compute_stats_by_span_kind: true,
            peer_tags_aggregation: true,
            peer_tags: Vec::new(),
            bucket_size: Duration::from_secs(10),
            max_groups_per_bucket: DEFAULT_MAX_GROUPS_PER_BUCKET,
            container_id_dimension: false,
        }
    }
}

impl StatsConfig {
    /// The effective peer-tag keys: defaults plus `peer_tags`, de-duplicated and sorted; empty
    /// when peer-tag aggregation is off. This is also the `/info` `peer_tags` list.
    pub fn peer_tag_keys(&self) -> Vec<String> {
        if !self.peer_tags_aggregation {
            return Vec::new();
        }
        let mut keys: Vec<String> = key::DEFAULT_PEER_TAGS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.peer_tags.iter().filter(|t| !t.is_empty()).cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `ts` aligned down to a multiple of `size` (both ns; `size > 0`).
pub(crate) fn align(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// splitmix64: a small deterministic generator for stochastic rounding (no crypto needs).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Stochastic rounding (Go agent `round`): the floor, plus one with probability equal to the
    /// fractional part, so sums of weighted counts stay unbiased. Negative or NaN → 0.
    pub(crate) fn round(&mut self, f: f64) -> u64 {
        if f.is_nan() || f <= 0.0 {
            return 0;
        }
        let floor = f.floor();
        let mut i = floor as u64;
        if self.unit() < f - floor {
            i = i.saturating_add(1);
        }
        i
    }
}

/// Truncates a ns duration to a 10-bit mantissa before it goes into a latency sketch (Go agent
/// `nsTimestampToFloat`: mask `0xfffff80000000000` on the float64 bits).
pub fn truncate_duration(ns: i64) -> f64 {
    f64::from_bits((ns as f64).to_bits() & 0xffff_f800_0000_0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let mut rng = Rng::new(1);
        let n = 100_000;
        let sum: u64 = (0..n).map(|_| rng.round(2.25)).sum();
        let mean = sum as f64 / f64::from(n);
        assert!((mean - 2.25).abs() < 0.01, "mean {mean}");
        assert_eq!(rng.round(3.0), 3);
        assert_eq!(rng.round(-1.0), 0);
        assert_eq!(rng.round(f64::NAN), 0);
        let r = rng.round(7.5);
        assert!(r == 7 || r == 8);
    }

    #[test]
    fn duration_truncation_keeps_ten_bits() {
        assert_eq!(truncate_duration(1024), 1024.0);
        assert_eq!(truncate_duration(1025), 1024.0);
        assert_eq!(truncate_duration(2047), 2046.0);
        let d = 123_456_789;
        let t = truncate_duration(d);
        // 10 significant bits: at most 2⁻⁹ below the value.
        assert!(t <= d as f64 && (d as f64 - t) / (d as f64) < 1.0 / 512.0);
    }

    #[test]
    fn peer_tag_keys_are_sorted_deduplicated_and_off_when_disabled() {
        let mut c = StatsConfig {
            peer_tags: vec!["zz.custom".into(), "peer.service".into(), String::new()],
            ..StatsConfig::default()
        };
        let keys = c.peer_tag_keys();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys.last().map(String::as_str), Some("zz.custom"));
        assert_eq!(keys.iter().filter(|k| *k == "peer.service").count(), 1);
        assert_eq!(keys.len(), key::DEFAULT_PEER_TAGS.len() + 1);
        c.peer_tags_aggregation = false;
        assert!(c.peer_tag_keys().is_empty());
    }

    #[test]
    fn align_handles_negative_timestamps() {
        assert_eq!(align(25, 10), 20);
        assert_eq!(align(-5, 10), -10);
        assert_eq!(align(30, 10), 30);
    }
}
