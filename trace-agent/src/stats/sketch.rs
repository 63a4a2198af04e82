//! DDSketch: a mergeable quantile sketch with relative-error guarantees, in the form the Datadog
//! intake reads (`OkSummary` / `ErrorSummary` of the stats payload, spec section 6.1).
//!
//! Same layout as the Go agent's `ddsketch.LogCollapsingLowestDenseDDSketch(0.01, 2048)`
//! (DataDog/sketches-go):
//!
//! * **Mapping** — logarithmic: a positive value `v` goes to bin
//!   `floor(ln(v) · multiplier + index_offset)` with `multiplier = 1 / ln(gamma)`,
//!   `gamma = (1 + a) / (1 − a)` for relative accuracy `a` (1 % here) and `index_offset = 0`.
//!   A bin is reported as `gamma^(i − offset) · (1 + a)`, within `a` of every value it holds.
//! * **Stores** — one for positive values, one for negative values (mapped through `−v`), each a
//!   dense run of at most [`MAX_BINS`] bins; when a value would widen the run past that, the
//!   lowest bins are collapsed into one (accuracy is lost on the lowest quantiles only).
//! * **Zero count** — values in `(−min_indexable, min_indexable)`.
//!
//! Public API:
//!
//! | call | does |
//! |---|---|
//! | [`Sketch::new`] / `Default` | empty sketch, 1 % accuracy, 2048 bins per store |
//! | [`Sketch::with_params`] | other accuracy / bin limit |
//! | [`Sketch::add`], [`Sketch::add_with_count`] | record values (error for NaN, ±∞, out-of-range values or invalid counts) |
//! | [`Sketch::merge`] | add another sketch with the same mapping (error otherwise) |
//! | [`Sketch::quantile`] | value at quantile `q ∈ [0, 1]` (sketches-go rank rule `q · (count − 1)`), `None` when empty or `q` invalid |
//! | [`Sketch::count`], [`Sketch::zero_count`], [`Sketch::is_empty`], [`Sketch::min`], [`Sketch::max`], [`Sketch::bin_count`] | summaries |
//! | [`Sketch::encode`] / [`Sketch::decode`] | protobuf `DDSketch` bytes (sketches-go `ddsketch.proto`) |
//! | [`Sketch::to_proto`] / [`Sketch::from_proto`] | the same through the [`pb`] message structs |
//!
//! Decoding accepts any logarithmic mapping (`interpolation = NONE`, any gamma > 1 and offset,
//! e.g. libdatadog's gamma 1.015625 with its backend offset), sparse `binCounts` and contiguous
//! bins together (summed, as the proto specifies), and rejects non-finite or negative counts and
//! indexes outside `i32`. Two sketches merge only if their mappings agree (within 1e-12 relative).
//!
//! ```
//! use trace_agent::stats::sketch::Sketch;
//!
//! let mut sketch = Sketch::new();
//! for ms in 1..=100 {
//!     sketch.add(f64::from(ms) * 1e6).unwrap();
//! }
//! let p50 = sketch.quantile(0.5).unwrap();
//! assert!((p50 / 50.5e6 - 1.0).abs() <= 0.01 + 1e-9);
//!
//! let decoded = Sketch::decode(&sketch.encode()).unwrap();
//! assert_eq!(decoded.count(), 100.0);
//! ```

use std::collections::BTreeMap;

use prost::Message;

/// Relative accuracy of the agent's sketches (spec 6.1).
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Bins per store before the lowest ones collapse (spec 6.1).
pub const MAX_BINS: usize = 2048;

/// `ln` of the largest finite `f64` (where `exp` overflows), as sketches-go uses it.
const EXP_OVERFLOW: f64 = 7.094361393031e+02;
/// Relative tolerance under which two mappings are the same (sketches-go `Equals`).
const MAPPING_TOLERANCE: f64 = 1e-12;

/// Why a sketch operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    /// The bytes are not a protobuf `DDSketch`.
    #[error("invalid DDSketch protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The encoded sketch has no mapping.
    #[error("DDSketch without a mapping")]
    MissingMapping,
    /// Gamma not finite and > 1, index offset not finite, or relative accuracy not in (0, 1).
    #[error("invalid DDSketch mapping (gamma {gamma}, index offset {index_offset})")]
    InvalidMapping {
        /// Gamma of the rejected mapping.
        gamma: f64,
        /// Index offset of the rejected mapping.
        index_offset: f64,
    },
    /// Only the exact logarithmic mapping (`interpolation = NONE`) is supported.
    #[error("unsupported DDSketch interpolation {0} (only NONE)")]
    UnsupportedInterpolation(i32),
    /// A bin index does not fit in `i32`.
    #[error("DDSketch bin index out of range")]
    IndexOutOfRange,
    /// NaN, infinite, or beyond the largest indexable magnitude.
    #[error("value {0} cannot be added to a DDSketch")]
    InvalidValue(f64),
    /// Negative, NaN or infinite count.
    #[error("invalid DDSketch count {0}")]
    InvalidCount(f64),
    /// The bin limit must be at least 1.
    #[error("a DDSketch store needs at least one bin")]
    InvalidMaxBins,
    /// [`Sketch::merge`] of sketches with different mappings.
    #[error("cannot merge DDSketches with different mappings")]
    MappingMismatch,
}

/// Protobuf messages of `ddsketch.proto` (DataDog/sketches-go `ddsketch/pb`), field numbers
/// and types as there.
pub mod pb {
    use std::collections::BTreeMap;

    /// `DDSketch`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DdSketch {
        /// `mapping = 1`.
        #[prost(message, optional, tag = "1")]
        pub mapping: Option<IndexMapping>,
        /// `positiveValues = 2`.
        #[prost(message, optional, tag = "2")]
        pub positive_values: Option<Store>,
        /// `negativeValues = 3`: a negative `v` is stored as `−v`.
        #[prost(message, optional, tag = "3")]
        pub negative_values: Option<Store>,
        /// `zeroCount = 4`.
        #[prost(double, tag = "4")]
        pub zero_count: f64,
    }

    /// `IndexMapping`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct IndexMapping {
        /// `gamma = 1`.
        #[prost(double, tag = "1")]
        pub gamma: f64,
        /// `indexOffset = 2`.
        #[prost(double, tag = "2")]
        pub index_offset: f64,
        /// `interpolation = 3`: 0 NONE, 1 LINEAR, 2 QUADRATIC, 3 CUBIC.
        #[prost(int32, tag = "3")]
        pub interpolation: i32,
    }

    /// `Store`: sparse and contiguous counts; a bin present in both counts for their sum.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Store {
        /// `binCounts = 1` (`map<sint32, double>`).
        #[prost(btree_map = "sint32, double", tag = "1")]
        pub bin_counts: BTreeMap<i32, f64>,
        /// `contiguousBinCounts = 2` (packed): counts of bins `offset, offset + 1, …`.
        #[prost(double, repeated, tag = "2")]
        pub contiguous_bin_counts: Vec<f64>,
        /// `contiguousBinIndexOffset = 3`.
        #[prost(sint32, tag = "3")]
        pub contiguous_bin_index_offset: i32,
    }
}

// === mapping ===

/// Logarithmic value ↔ bin mapping (sketches-go `LogarithmicMapping`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mapping {
    gamma: f64,
    index_offset: f64,
    multiplier: f64,
    relative_accuracy: f64,
    min_indexable: f64,
    max_indexable: f64,
}

impl Mapping {
    fn from_relative_accuracy(a: f64) -> Result<Self, SketchError> {
        if !(a > 0.0 && a < 1.0) {
            return Err(SketchError::InvalidMapping {
                gamma: (1.0 + a) / (1.0 - a),
                index_offset: 0.0,
            });
        }
        Ok(Self::logarithmic(a))
    }

    /// sketches-go `NewLogarithmicMapping(a)`, for `a ∈ (0, 1)`.
    fn logarithmic(a: f64) -> Self {
        Self::build((1.0 + a) / (1.0 - a), 0.0, 1.0 / (2.0 * a / (1.0 - a)).ln_1p(), a)
    }

    fn from_gamma(gamma: f64, index_offset: f64) -> Result<Self, SketchError> {
        if !(gamma.is_finite() && gamma > 1.0 && index_offset.is_finite()) {
            return Err(SketchError::InvalidMapping { gamma, index_offset });
        }
        Ok(Self::build(
            gamma,
            index_offset,
            1.0 / gamma.ln(),
            1.0 - 2.0 / (1.0 + gamma),
        ))
    }

    fn build(gamma: f64, index_offset: f64, multiplier: f64, relative_accuracy: f64) -> Self {
        let min_indexable = f64::max(
            ((f64::from(i32::MIN) - index_offset) / multiplier + 1.0).exp(),
            f64::MIN_POSITIVE * (1.0 + relative_accuracy) / (1.0 - relative_accuracy),
        );
        let max_indexable = f64::min(
            ((f64::from(i32::MAX) - index_offset) / multiplier - 1.0).exp(),
            EXP_OVERFLOW.exp() / (1.0 + relative_accuracy),
        );
        Self {
            gamma,
            index_offset,
            multiplier,
            relative_accuracy,
            min_indexable,
            max_indexable,
        }
    }

    /// Bin of a value in `[min_indexable, max_indexable]`; the float → int cast saturates.
    fn index(&self, value: f64) -> i32 {
        (value.ln() * self.multiplier + self.index_offset).floor() as i32
    }

    fn value(&self, index: i32) -> f64 {
        ((f64::from(index) - self.index_offset) / self.multiplier).exp() * (1.0 + self.relative_accuracy)
    }

    fn same_as(&self, other: &Self) -> bool {
        fn close(x: f64, y: f64) -> bool {
            (x - y).abs() <= MAPPING_TOLERANCE * x.abs().max(y.abs()).max(1.0)
        }
        close(self.multiplier, other.multiplier) && close(self.index_offset, other.index_offset)
    }

    fn to_proto(self) -> pb::IndexMapping {
        pb::IndexMapping {
            gamma: (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy),
            index_offset: self.index_offset,
            interpolation: 0,
        }
    }
}

// === store ===

/// Dense bins `offset ..= offset + bins.len() − 1`, at most `max_bins` of them; the first and
/// last bins are non-zero whenever the store is not empty.
#[derive(Debug, Clone, PartialEq)]
struct Store {
    bins: Vec<f64>,
    offset: i32,
    count: f64,
    max_bins: usize,
}

impl Store {
    fn new(max_bins: usize) -> Self {
        Self {
            bins: Vec::new(),
            offset: 0,
            count: 0.0,
            max_bins,
        }
    }

    fn add(&mut self, index: i32, count: f64) {
        if count == 0.0 {
            return;
        }
        let slot = self.slot_for(index);
        if let Some(bin) = self.bins.get_mut(slot) {
            *bin += count;
            self.count += count;
        }
    }

    /// Position of `index` in `bins`, widening (and collapsing the lowest bins) as needed.
    fn slot_for(&mut self, index: i32) -> usize {
        if self.bins.is_empty() {
            self.bins.push(0.0);
            self.offset = index;
            return 0;
        }
        let (lo, idx) = (i64::from(self.offset), i64::from(index));
        let hi = lo + self.bins.len() as i64 - 1;
        if idx < lo {
            // Grow downwards as far as the limit allows; the rest collapses into the lowest bin.
            let grow = ((lo - idx) as usize).min(self.max_bins.saturating_sub(self.bins.len()));
            if grow > 0 {
                self.bins.splice(0..0, std::iter::repeat_n(0.0, grow));
                self.offset -= grow as i32;
            }
            0
        } else if idx > hi {
            if (idx - lo + 1) as usize > self.max_bins {
                let new_lo = idx - self.max_bins as i64 + 1;
                let dropped = (new_lo - lo) as usize;
                if dropped >= self.bins.len() {
                    let total: f64 = self.bins.iter().sum();
                    self.bins.clear();
                    self.bins.push(total);
                } else {
                    let collapsed: f64 = self.bins.drain(..dropped).sum();
                    if let Some(first) = self.bins.first_mut() {
                        *first += collapsed;
                    }
                }
                self.offset = new_lo as i32;
            }
            let slot = (idx - i64::from(self.offset)) as usize;
            self.bins.resize(slot + 1, 0.0);
            slot
        } else {
            (idx - lo) as usize
        }
    }

    fn iter(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        (self.offset..).zip(self.bins.iter().copied())
    }

    /// Bin holding the value of rank `rank` (0-based, may be fractional).
    fn key_at_rank(&self, rank: f64) -> i32 {
        let mut seen = 0.0;
        for (index, count) in self.iter() {
            seen += count;
            if seen > rank {
                return index;
            }
        }
        self.max_index()
    }

    fn min_index(&self) -> i32 {
        self.offset
    }

    fn max_index(&self) -> i32 {
        self.offset.saturating_add(self.bins.len().saturating_sub(1) as i32)
    }

    fn to_proto(&self) -> pb::Store {
        pb::Store {
            bin_counts: BTreeMap::new(),
            contiguous_bin_counts: self.bins.clone(),
            contiguous_bin_index_offset: self.offset,
        }
    }

    fn from_proto(proto: &pb::Store, max_bins: usize) -> Result<Self, SketchError> {
        let mut store = Self::new(max_bins);
        for (&index, &count) in &proto.bin_counts {
            store.add(index, check_count(count)?);
        }
        let offset = i64::from(proto.contiguous_bin_index_offset);
        for (i, &count) in proto.contiguous_bin_counts.iter().enumerate() {
            let index = i32::try_from(offset + i as i64).map_err(|_| SketchError::IndexOutOfRange)?;
            store.add(index, check_count(count)?);
        }
        Ok(store)
    }
}

fn check_count(count: f64) -> Result<f64, SketchError> {
    if count.is_finite() && count >= 0.0 {
        Ok(count)
    } else {
        Err(SketchError::InvalidCount(count))
    }
}

// === sketch ===

/// A DDSketch (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    mapping: Mapping,
    positive: Store,
    negative: Store,
    zero_count: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

impl Sketch {
    /// An empty sketch: 1 % relative accuracy, at most 2048 bins per store.
    pub fn new() -> Self {
        Self {
            mapping: Mapping::logarithmic(RELATIVE_ACCURACY),
            positive: Store::new(MAX_BINS),
            negative: Store::new(MAX_BINS),
            zero_count: 0.0,
        }
    }

    /// An empty sketch with relative accuracy `relative_accuracy ∈ (0, 1)` and at most
    /// `max_bins ≥ 1` bins per store.
    pub fn with_params(relative_accuracy: f64, max_bins: usize) -> Result<Self, SketchError> {
        if max_bins == 0 {
            return Err(SketchError::InvalidMaxBins);
        }
        Ok(Self {
            mapping: Mapping::from_relative_accuracy(relative_accuracy)?,
            positive: Store::new(max_bins),
            negative: Store::new(max_bins),
            zero_count: 0.0,
        })
    }

    /// Records `value` once.
    pub fn add(&mut self, value: f64) -> Result<(), SketchError> {
        self.add_with_count(value, 1.0)
    }

    /// Records `value` with weight `count ≥ 0` (a zero count is a no-op).
    pub fn add_with_count(&mut self, value: f64, count: f64) -> Result<(), SketchError> {
        let count = check_count(count)?;
        if value.is_nan() || value.abs() > self.mapping.max_indexable {
            return Err(SketchError::InvalidValue(value));
        }
        if value > self.mapping.min_indexable {
            self.positive.add(self.mapping.index(value), count);
        } else if value < -self.mapping.min_indexable {
            self.negative.add(self.mapping.index(-value), count);
        } else if count > 0.0 {
            self.zero_count += count;
        }
        Ok(())
    }

    /// Adds every value of `other` (which must use the same mapping) to `self`.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if !self.mapping.same_as(&other.mapping) {
            return Err(SketchError::MappingMismatch);
        }
        for (index, count) in other.positive.iter() {
            self.positive.add(index, count);
        }
        for (index, count) in other.negative.iter() {
            self.negative.add(index, count);
        }
        self.zero_count += other.zero_count;
        Ok(())
    }

    /// The value at quantile `q ∈ [0, 1]`, within the relative accuracy of the true one (for
    /// quantiles above the collapsed bins); `None` if the sketch is empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let count = self.count();
        if count <= 0.0 {
            return None;
        }
        let rank = q * (count - 1.0);
        let negatives = self.negative.count;
        if rank < negatives {
            Some(-self.mapping.value(self.negative.key_at_rank(negatives - 1.0 - rank)))
        } else if rank < negatives + self.zero_count {
            Some(0.0)
        } else {
            Some(
                self.mapping
                    .value(self.positive.key_at_rank(rank - self.zero_count - negatives)),
            )
        }
    }

    /// Total weight of the recorded values.
    pub fn count(&self) -> f64 {
        self.zero_count + self.positive.count + self.negative.count
    }

    /// Weight of the values recorded as zero.
    pub fn zero_count(&self) -> f64 {
        self.zero_count
    }

    /// No value recorded.
    pub fn is_empty(&self) -> bool {
        self.count() == 0.0
    }

    /// The (approximate) smallest recorded value.
    pub fn min(&self) -> Option<f64> {
        if !self.negative.bins.is_empty() {
            Some(-self.mapping.value(self.negative.max_index()))
        } else if self.zero_count > 0.0 {
            Some(0.0)
        } else if !self.positive.bins.is_empty() {
            Some(self.mapping.value(self.positive.min_index()))
        } else {
            None
        }
    }

    /// The (approximate) largest recorded value.
    pub fn max(&self) -> Option<f64> {
        if !self.positive.bins.is_empty() {
            Some(self.mapping.value(self.positive.max_index()))
        } else if self.zero_count > 0.0 {
            Some(0.0)
        } else if !self.negative.bins.is_empty() {
            Some(-self.mapping.value(self.negative.min_index()))
        } else {
            None
        }
    }

    /// Relative accuracy of the mapping (1 % for [`Sketch::new`]).
    pub fn relative_accuracy(&self) -> f64 {
        self.mapping.relative_accuracy
    }

    /// Gamma of the mapping.
    pub fn gamma(&self) -> f64 {
        self.mapping.gamma
    }

    /// Bins held by both stores (bounded by twice the bin limit).
    pub fn bin_count(&self) -> usize {
        self.positive.bins.len() + self.negative.bins.len()
    }

    /// The protobuf message (contiguous encoding for both stores).
    pub fn to_proto(&self) -> pb::DdSketch {
        pb::DdSketch {
            mapping: Some(self.mapping.to_proto()),
            positive_values: Some(self.positive.to_proto()),
            negative_values: Some(self.negative.to_proto()),
            zero_count: self.zero_count,
        }
    }

    /// Rebuilds a sketch from its protobuf message, with at most [`MAX_BINS`] bins per store.
    pub fn from_proto(proto: &pb::DdSketch) -> Result<Self, SketchError> {
        let mapping = proto.mapping.ok_or(SketchError::MissingMapping)?;
        if mapping.interpolation != 0 {
            return Err(SketchError::UnsupportedInterpolation(mapping.interpolation));
        }
        let empty = pb::Store::default();
        Ok(Self {
            mapping: Mapping::from_gamma(mapping.gamma, mapping.index_offset)?,
            positive: Store::from_proto(proto.positive_values.as_ref().unwrap_or(&empty), MAX_BINS)?,
            negative: Store::from_proto(proto.negative_values.as_ref().unwrap_or(&empty), MAX_BINS)?,
            zero_count: check_count(proto.zero_count)?,
        })
    }

    /// Serialized protobuf `DDSketch`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Parses a serialized protobuf `DDSketch`.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        Self::from_proto(&pb::DdSketch::decode(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: deterministic test data without a rand dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Log-uniform over `[lo, hi)`.
        fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
            (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
        }
    }

    fn relative_error(actual: f64, expected: f64) -> f64 {
        if expected == 0.0 {
            actual.abs()
        } else {
            (actual / expected - 1.0).abs()
        }
    }

    fn assert_close(actual: f64, expected: f64, accuracy: f64, what: &str) {
        let err = relative_error(actual, expected);
        assert!(
            err <= accuracy + 1e-12,
            "{what}: {actual} vs {expected} (relative error {err})"
        );
    }

    /// Checks `actual` against the exact quantile at rank `q·(n−1)`: sketches-go takes the value
    /// at the rank rounded down for positive values and rounded up for negative ones, so either
    /// neighbour is exact.
    fn assert_quantile(actual: f64, sorted: &[f64], q: f64, what: &str) {
        let rank = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (sorted[rank.floor() as usize], sorted[rank.ceil() as usize]);
        let err = relative_error(actual, lo).min(relative_error(actual, hi));
        assert!(
            err <= 0.01 + 1e-12,
            "{what}: {actual} vs [{lo}, {hi}] (relative error {err})"
        );
    }

    const QUANTILES: [f64; 9] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

    fn datasets() -> Vec<Vec<f64>> {
        let mut rng = Rng(42);
        vec![
            (0..10_000).map(|_| rng.log_uniform(1e3, 1e10)).collect(),
            (0..5_000).map(|_| 1e6 + rng.unit() * 1e6).collect(),
            (1..=1000).map(f64::from).collect(),
            vec![12345.0],
            (0..2_000)
                .map(|_| rng.log_uniform(1e-3, 1e3) * if rng.unit() < 0.3 { -1.0 } else { 1.0 })
                .collect(),
        ]
    }

    #[test]
    fn quantiles_are_within_one_percent_of_exact() {
        for data in datasets() {
            let mut sketch = Sketch::new();
            for &v in &data {
                sketch.add(v).unwrap();
            }
            let mut sorted = data.clone();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(sketch.count(), data.len() as f64);
            for q in QUANTILES {
                assert_quantile(sketch.quantile(q).unwrap(), &sorted, q, &format!("q{q}"));
            }
            assert_close(sketch.min().unwrap(), sorted[0], 0.01, "min");
            assert_close(sketch.max().unwrap(), *sorted.last().unwrap(), 0.01, "max");
        }
    }

    #[test]
    fn mapping_matches_sketches_go() {
        let sketch = Sketch::new();
        // gamma = 1.01 / 0.99; Go writes exactly this in the proto.
        assert_eq!(sketch.to_proto().mapping.unwrap().gamma, 1.01 / 0.99);
        assert_eq!(sketch.to_proto().mapping.unwrap().index_offset, 0.0);
        let m = sketch.mapping;
        // Bin of 1 is 0, of gamma^k is k (floor, offset 0); 1ms = 1e6 ns ≈ bin 690.
        assert_eq!(m.index(1.0), 0);
        assert_eq!(m.index(1.5), (1.5f64.ln() / (1.01f64 / 0.99).ln()).floor() as i32);
        assert_eq!(m.index(0.5), -35);
        assert_eq!(m.index(1e6), 690);
        // Encoded field layout: mapping{gamma=1 double, indexOffset absent when 0}.
        let mut one = Sketch::new();
        one.add(1.0).unwrap();
        let bytes = one.encode();
        assert_eq!(&bytes[..2], &[0x0a, 9]); // field 1, length 9: gamma double
        assert_eq!(bytes[2], 0x09); // gamma: field 1, wire type 1
    }

    #[test]
    fn zero_and_negative_values() {
        let mut s = Sketch::new();
        for v in [-5.0, -1.0, 0.0, 0.0, 3.0] {
            s.add(v).unwrap();
        }
        assert_eq!(s.zero_count(), 2.0);
        assert_close(s.quantile(0.0).unwrap(), -5.0, 0.01, "min");
        assert_close(s.quantile(0.25).unwrap(), -1.0, 0.01, "q25");
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_close(s.quantile(1.0).unwrap(), 3.0, 0.01, "max");
        let back = Sketch::decode(&s.encode()).unwrap();
        assert_eq!(
            (back.positive.clone(), back.negative.clone(), back.zero_count()),
            (s.positive.clone(), s.negative.clone(), 2.0)
        );
        for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
            assert_close(back.quantile(q).unwrap(), s.quantile(q).unwrap(), 1e-12, "decoded");
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let mut s = Sketch::new();
        assert!(matches!(s.add(f64::NAN), Err(SketchError::InvalidValue(_))));
        assert!(matches!(s.add(f64::INFINITY), Err(SketchError::InvalidValue(_))));
        assert!(matches!(s.add(f64::MAX), Err(SketchError::InvalidValue(_))));
        assert!(matches!(s.add_with_count(1.0, -1.0), Err(SketchError::InvalidCount(_))));
        assert!(matches!(
            s.add_with_count(1.0, f64::NAN),
            Err(SketchError::InvalidCount(_))
        ));
        assert!(s.is_empty());
        assert_eq!(s.quantile(0.5), None);
        s.add(1.0).unwrap();
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(s.quantile(-0.1), None);
        assert!(matches!(
            Sketch::with_params(0.0, 10),
            Err(SketchError::InvalidMapping { .. })
        ));
        assert!(matches!(Sketch::with_params(0.01, 0), Err(SketchError::InvalidMaxBins)));
        assert!(matches!(Sketch::decode(&[0xff, 0xff]), Err(SketchError::Decode(_))));
        assert!(matches!(Sketch::decode(&[]), Err(SketchError::MissingMapping)));
        let mut proto = s.to_proto();
        proto.mapping = Some(pb::IndexMapping {
            gamma: 0.5,
            index_offset: 0.0,
            interpolation: 0,
        });
        assert!(matches!(
            Sketch::from_proto(&proto),
            Err(SketchError::InvalidMapping { .. })
        ));
        proto.mapping = Some(pb::IndexMapping {
            gamma: 1.02,
            index_offset: 0.0,
            interpolation: 1,
        });
        assert!(matches!(
            Sketch::from_proto(&proto),
            Err(SketchError::UnsupportedInterpolation(1))
        ));
        let mut proto = s.to_proto();
        proto.positive_values = Some(pb::Store {
            contiguous_bin_counts: vec![1.0, 1.0],
            contiguous_bin_index_offset: i32::MAX,
            ..Default::default()
        });
        assert!(matches!(Sketch::from_proto(&proto), Err(SketchError::IndexOutOfRange)));
        let mut proto = s.to_proto();
        proto.zero_count = -1.0;
        assert!(matches!(Sketch::from_proto(&proto), Err(SketchError::InvalidCount(_))));
    }

    #[test]
    fn sparse_and_contiguous_bins_are_summed() {
        let proto = pb::DdSketch {
            mapping: Some(Sketch::new().mapping.to_proto()),
            positive_values: Some(pb::Store {
                bin_counts: [(10, 2.0), (700, 1.0)].into_iter().collect(),
                contiguous_bin_counts: vec![3.0, 0.0, 4.0],
                contiguous_bin_index_offset: 9,
            }),
            negative_values: None,
            zero_count: 1.0,
        };
        let s = Sketch::from_proto(&proto).unwrap();
        assert_eq!(s.count(), 11.0);
        let bins: Vec<_> = s.positive.iter().filter(|(_, c)| *c > 0.0).collect();
        assert_eq!(bins, vec![(9, 3.0), (10, 2.0), (11, 4.0), (700, 1.0)]);
    }

    #[test]
    fn merge_equals_adding_everything() {
        let mut rng = Rng(7);
        let (mut a, mut b, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
        for i in 0..5000 {
            let v = rng.log_uniform(1e2, 1e9);
            if i % 3 == 0 { &mut a } else { &mut b }.add(v).unwrap();
            all.add(v).unwrap();
        }
        a.merge(&b).unwrap();
        assert_eq!(a.count(), all.count());
        for q in QUANTILES {
            assert_eq!(a.quantile(q), all.quantile(q), "q{q}");
        }
        // Merging a decoded copy works too (gamma round-trips within tolerance).
        let decoded = Sketch::decode(&b.encode()).unwrap();
        a.merge(&decoded).unwrap();
        assert_eq!(a.count(), all.count() + b.count());
        let other = Sketch::with_params(0.02, MAX_BINS).unwrap();
        assert_eq!(a.merge(&other), Err(SketchError::MappingMismatch));
    }

    #[test]
    fn bins_stay_bounded_and_lowest_collapse() {
        let mut s = Sketch::new();
        // 1e-300 … 1e300 spans ~27 600 bins at 1 %: far beyond the limit, both ascending and descending.
        for e in (-300..=300).chain((-300..=300).rev()) {
            s.add(10f64.powi(e)).unwrap();
            s.add(-(10f64.powi(e))).unwrap();
            assert!(s.positive.bins.len() <= MAX_BINS && s.negative.bins.len() <= MAX_BINS);
        }
        assert!(s.bin_count() <= 2 * MAX_BINS);
        assert_eq!(s.count(), 2.0 * 2.0 * 601.0);
        // High quantiles stay accurate; the collapsed low end only affects the lowest ones.
        assert_close(s.quantile(1.0).unwrap(), 1e300, 0.01, "max");
        assert_close(s.quantile(0.0).unwrap(), -1e300, 0.01, "min");
        let small = Sketch::with_params(0.01, 4).unwrap();
        let mut small = small;
        for v in [1.0, 2.0, 4.0, 8.0, 1000.0] {
            small.add(v).unwrap();
        }
        assert_eq!(small.positive.bins.len(), 4);
        assert_eq!(small.count(), 5.0);
        assert_close(small.quantile(1.0).unwrap(), 1000.0, 0.01, "max");
    }

    // === differential tests against libdatadog's `libdd-ddsketch` ===

    /// Quantile from libdd's `(value, weight)` bins with the sketches-go rank rule.
    fn libdd_quantile(sketch: &libdd_ddsketch::DDSketch, q: f64) -> f64 {
        let rank = q * (sketch.count() - 1.0);
        let mut seen = 0.0;
        let bins = sketch.ordered_bins();
        for &(value, weight) in &bins {
            seen += weight;
            if seen > rank {
                return value;
            }
        }
        bins.last().map_or(f64::NAN, |b| b.0)
    }

    #[test]
    fn our_bytes_decode_with_libdd() {
        // libdd only reads positive contiguous bins: positive data only.
        for data in datasets().into_iter().filter(|d| d.iter().all(|v| *v > 0.0)) {
            let mut ours = Sketch::new();
            for &v in &data {
                ours.add(v).unwrap();
            }
            let theirs = libdd_ddsketch::DDSketch::from_encoded(&ours.encode()).unwrap();
            assert_eq!(theirs.count(), ours.count());
            let mut sorted = data.clone();
            sorted.sort_by(f64::total_cmp);
            for q in QUANTILES {
                let t = libdd_quantile(&theirs, q);
                assert_close(t, ours.quantile(q).unwrap(), 1e-9, &format!("same bins q{q}"));
                assert_quantile(t, &sorted, q, &format!("exact q{q}"));
            }
        }
    }

    #[test]
    fn libdd_bytes_decode_with_ours() {
        for data in datasets().into_iter().filter(|d| d.iter().all(|v| *v >= 0.0)) {
            let mut theirs = libdd_ddsketch::DDSketch::default();
            for &v in &data {
                theirs.add(v).unwrap();
            }
            theirs.add(0.0).unwrap();
            let reference: Vec<f64> = QUANTILES.iter().map(|&q| libdd_quantile(&theirs, q)).collect();
            let ours = Sketch::decode(&theirs.clone().encode_to_vec()).unwrap();
            assert_eq!(ours.count(), theirs.count());
            assert_eq!(ours.zero_count(), 1.0);
            // libdd's mapping: gamma 1 + 1/64 (0.775 % accuracy) with the backend's offset.
            assert_eq!(ours.gamma(), 1.015625);
            let mut sorted = data.clone();
            sorted.push(0.0);
            sorted.sort_by(f64::total_cmp);
            for (q, r) in QUANTILES.iter().zip(reference) {
                let v = ours.quantile(*q).unwrap();
                assert_close(v, r, 1e-9, &format!("same bins q{q}"));
                assert_quantile(v, &sorted, *q, &format!("exact q{q}"));
            }
            // A libdd sketch cannot merge into ours (different mapping) …
            assert_eq!(Sketch::new().merge(&ours), Err(SketchError::MappingMismatch));
            // … but into another decoded libdd sketch it can.
            let mut twice = ours.clone();
            twice.merge(&ours).unwrap();
            assert_eq!(twice.count(), 2.0 * ours.count());
        }
    }
}
