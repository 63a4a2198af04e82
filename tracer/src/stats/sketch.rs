//! A DDSketch of span durations, encoded as the agent reads it (the protobuf `DDSketch` of
//! DataDog/sketches-go, `OkSummary` / `ErrorSummary` of a stats group).
//!
//! Logarithmic mapping at 1 % relative accuracy: a value `v ≥ 1` goes to bin
//! `floor(ln(v) / ln(gamma))` with `gamma = 1.01 / 0.99` and index offset 0 (the Go agent's
//! mapping); a bin stands for `gamma^i · 1.01`, within 1 % of every value in it. Values below
//! 1 (durations of 0 ns) count as zeros. The bins are one dense run of at most [`MAX_BINS`];
//! a value that would widen it further collapses the lowest bins (as sketches-go's
//! "collapsing lowest dense store" does), so only the lowest quantiles can lose accuracy.

/// Relative accuracy.
pub(crate) const RELATIVE_ACCURACY: f64 = 0.01;
/// Bins kept before the lowest ones collapse.
pub(crate) const MAX_BINS: usize = 2048;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// A sketch of non-negative values (nanoseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sketch {
    /// Counts of bins `offset ..= offset + bins.len() - 1`.
    bins: Vec<f64>,
    offset: i32,
    zeros: f64,
    count: f64,
}

impl Sketch {
    /// Records one value; negative and non-finite values count as zeros.
    pub(crate) fn add(&mut self, value: f64) {
        self.count += 1.0;
        if value.is_nan() || value < 1.0 || value.is_infinite() {
            self.zeros += 1.0;
            return;
        }
        let multiplier = 1.0 / gamma().ln();
        // ln(f64::MAX) · multiplier ≈ 35 500: always within i32.
        let index = (value.ln() * multiplier).floor() as i32;
        self.add_to_bin(index);
    }

    fn add_to_bin(&mut self, index: i32) {
        if self.bins.is_empty() {
            self.offset = index;
            self.bins.push(1.0);
            return;
        }
        let last = self.offset + self.bins.len() as i32 - 1;
        if index < self.offset {
            // Widen downwards, unless that passes the limit: then the lowest bin takes it.
            let grow = (self.offset - index) as usize;
            if self.bins.len() + grow > MAX_BINS {
                let room = MAX_BINS - self.bins.len();
                if room > 0 {
                    self.bins.splice(0..0, std::iter::repeat_n(0.0, room));
                    self.offset -= room as i32;
                }
                if let Some(b) = self.bins.first_mut() {
                    *b += 1.0;
                }
            } else {
                self.bins.splice(0..0, std::iter::repeat_n(0.0, grow));
                self.offset = index;
                if let Some(b) = self.bins.first_mut() {
                    *b += 1.0;
                }
            }
        } else if index > last {
            let grow = (index - last) as usize;
            self.bins.extend(std::iter::repeat_n(0.0, grow));
            if self.bins.len() > MAX_BINS {
                // Collapse the lowest bins into the lowest one kept.
                let excess = self.bins.len() - MAX_BINS;
                let folded: f64 = self.bins.drain(..excess).sum();
                self.offset += excess as i32;
                if let Some(b) = self.bins.first_mut() {
                    *b += folded;
                }
            }
            if let Some(b) = self.bins.last_mut() {
                *b += 1.0;
            }
        } else if let Some(b) = self.bins.get_mut((index - self.offset) as usize) {
            *b += 1.0;
        }
    }

    /// Values recorded.
    #[cfg(test)]
    pub(crate) fn count(&self) -> f64 {
        self.count
    }

    /// The value at quantile `q` (rank `q · (count − 1)`, as sketches-go), `None` when empty.
    #[cfg(test)]
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * (self.count - 1.0);
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (i, c) in self.bins.iter().enumerate() {
            seen += c;
            if seen > rank {
                let index = self.offset + i as i32;
                return Some(gamma().powi(index) * (1.0 + RELATIVE_ACCURACY));
            }
        }
        None
    }

    /// The protobuf `DDSketch`: `mapping` (gamma, offset 0, interpolation NONE), the positive
    /// store as contiguous bins, an empty negative store and the zero count.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // mapping = 1: IndexMapping { gamma = 1 (double) } (indexOffset 0 and NONE are defaults).
        let mut mapping = Vec::with_capacity(9);
        tag(&mut mapping, 1, WIRE_FIXED64);
        mapping.extend_from_slice(&gamma().to_le_bytes());
        tag(out, 1, WIRE_LEN);
        varint(out, mapping.len() as u64);
        out.extend_from_slice(&mapping);
        // positiveValues = 2: Store { contiguousBinCounts = 2 (packed), contiguousBinIndexOffset = 3 }.
        if !self.bins.is_empty() {
            let mut store = Vec::with_capacity(self.bins.len() * 8 + 16);
            tag(&mut store, 2, WIRE_LEN);
            varint(&mut store, (self.bins.len() * 8) as u64);
            for c in &self.bins {
                store.extend_from_slice(&c.to_le_bytes());
            }
            if self.offset != 0 {
                tag(&mut store, 3, WIRE_VARINT);
                varint(&mut store, zigzag(self.offset));
            }
            tag(out, 2, WIRE_LEN);
            varint(out, store.len() as u64);
            out.extend_from_slice(&store);
        }
        // negativeValues = 3: empty.
        tag(out, 3, WIRE_LEN);
        varint(out, 0);
        if self.zeros != 0.0 {
            tag(out, 4, WIRE_FIXED64);
            out.extend_from_slice(&self.zeros.to_le_bytes());
        }
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;

fn tag(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push((field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut s = Sketch::default();
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 1_000.0).collect();
        for v in &values {
            s.add(*v);
        }
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
            let want = values[(q * 999.0_f64).floor() as usize];
            let got = s.quantile(q).unwrap_or_default();
            assert!((got - want).abs() <= want * RELATIVE_ACCURACY, "q{q}: {got} vs {want}");
        }
        assert_eq!(s.count(), 1000.0);
    }

    #[test]
    fn zeros_and_collapse() {
        let mut s = Sketch::default();
        s.add(0.0);
        s.add(-3.0);
        s.add(1e15);
        // Far below: would need more than MAX_BINS bins; collapses into the lowest kept bin.
        s.add(1.0);
        assert!(s.bins.len() <= MAX_BINS);
        assert_eq!(s.bins.iter().sum::<f64>() + s.zeros, 4.0);
        assert_eq!(s.quantile(0.0), Some(0.0));
        let top = s.quantile(1.0).unwrap_or_default();
        assert!((top - 1e15).abs() <= 1e15 * RELATIVE_ACCURACY);
        // Upwards collapse keeps the top exact too.
        let mut up = Sketch::default();
        up.add(1.0);
        up.add(1e15);
        assert!(up.bins.len() <= MAX_BINS);
        assert!((up.quantile(1.0).unwrap_or_default() - 1e15).abs() <= 1e13);
    }

    #[test]
    fn encoding_is_valid_protobuf() {
        let mut s = Sketch::default();
        s.add(1_000_000.0);
        s.add(0.0);
        let mut out = Vec::new();
        s.encode(&mut out);
        // mapping: tag 0x0a, len 9, tag 0x09, gamma.
        assert_eq!(&out[..3], &[0x0a, 9, 0x09]);
        assert_eq!(f64::from_le_bytes(out[3..11].try_into().unwrap_or_default()), gamma());
        // positive store: one bin.
        assert_eq!(out[11], 0x12);
        assert_eq!(out.last_chunk::<9>().map(|c| c[0]), Some(0x21), "zero count field 4");
    }
}
