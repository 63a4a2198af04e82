//! Merging the stored DDSketches (ok and error summaries of each stats group) into latency
//! percentiles and a distribution.

use crate::stats::sketch::Sketch;

/// Sketches merged so far; counts the blobs it could not use.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    sketch: Option<Sketch>,
    /// Blobs that did not decode or merge (other mapping); logged by the caller.
    pub(crate) rejected: u64,
}

impl Merged {
    /// Adds one encoded sketch (`None`/empty: nothing).
    pub(crate) fn add_encoded(&mut self, bytes: Option<&[u8]>) {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return;
        };
        match Sketch::decode(bytes) {
            Ok(s) => self.add(&s),
            Err(_) => self.rejected += 1,
        }
    }

    /// Adds another sketch.
    pub(crate) fn add(&mut self, other: &Sketch) {
        match &mut self.sketch {
            None => self.sketch = Some(other.clone()),
            Some(s) => {
                if s.merge(other).is_err() {
                    self.rejected += 1;
                }
            }
        }
    }

    /// Adds what another merge holds.
    pub(crate) fn absorb(&mut self, other: &Merged) {
        if let Some(s) = &other.sketch {
            self.add(s);
        }
        self.rejected += other.rejected;
    }

    /// Value at quantile `q` (ns), `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.as_ref().and_then(|s| s.quantile(q))
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> f64 {
        self.sketch.as_ref().map_or(0.0, Sketch::count)
    }
}
