//! What the worker adds to a span's own tags and metrics, skipping the keys the span
//! already has (see [`super::reserved`]).

use smallvec::SmallVec;

use super::memo::Standard;
use super::reserved;
use super::table::Text;
use crate::span::SpanData;

/// The meta the worker adds to a span, skipping keys the span (or an earlier addition)
/// already has.
pub(super) struct ExtraMeta<'a> {
    pub(super) items: SmallVec<[(Text<'a>, Text<'a>); 16]>,
    /// Reserved keys present, in the span or added.
    pub(super) bits: u16,
    /// The [`Standard`] entries added (a bit each).
    pub(super) standard: u16,
}

impl<'a> ExtraMeta<'a> {
    /// `bits`: the reserved keys the span's own meta has.
    pub(super) fn with_bits(bits: u16) -> Self {
        Self {
            items: SmallVec::new(),
            bits,
            standard: 0,
        }
    }

    /// A reserved key whose key and value are [`Standard`] entry `i`.
    pub(super) fn standard(&mut self, bit: u16, i: usize) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.standard |= 1 << i;
        }
    }

    /// A reserved key.
    pub(super) fn fixed(&mut self, bit: u16, key: &'static str, value: Text<'a>) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.items.push((Text::Static(key), value));
        }
    }

    /// A key from configuration or upstream (global tags, propagated tags).
    pub(super) fn dynamic(&mut self, span: &SpanData, key: Text<'a>, value: Text<'a>) {
        let k = key.as_str();
        match reserved::meta_bit(k) {
            0 => {
                if span.meta.iter().any(|(m, _)| m.as_str() == k) || self.items.iter().any(|(e, _)| e.as_str() == k) {
                    return;
                }
            }
            bit => {
                if self.bits & bit != 0 {
                    return;
                }
                self.bits |= bit;
            }
        }
        self.items.push((key, value));
    }
}

/// The metrics the worker adds, skipping keys the span has.
pub(super) struct ExtraMetrics {
    pub(super) items: SmallVec<[(&'static str, f64); 8]>,
    pub(super) bits: u8,
    /// The [`Standard`] entries added (a bit each).
    pub(super) standard: u16,
}

impl ExtraMetrics {
    pub(super) fn new(span: &SpanData) -> Self {
        let bits = span.metrics.iter().fold(0, |b, (k, _)| b | reserved::metric_bit(k));
        Self {
            items: SmallVec::new(),
            bits,
            standard: 0,
        }
    }

    /// A reserved key whose key and value are [`Standard`] entry `i`.
    pub(super) fn standard(&mut self, bit: u8, i: usize) {
        debug_assert!(i >= Standard::META, "a metrics entry");
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.standard |= 1 << i;
        }
    }

    pub(super) fn add(&mut self, bit: u8, key: &'static str, value: f64) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.items.push((key, value));
        }
    }
}
