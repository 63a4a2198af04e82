//! Repeated tag values without an allocation each: a small per-thread cache of shared
//! strings, for integrations that receive values as borrowed or owned text (the `tracing`
//! Layer's fields, OpenTelemetry attributes) where the native API would take `&'static`.
//!
//! Direct-mapped by hash; a value is admitted on its second sighting in its slot, so a
//! stream of unique values (URLs with ids, queries with literals) costs one hash each and
//! never churns the cache. Values longer than [`MAX_LEN`] are not cached.

use std::cell::RefCell;
use std::sync::Arc;

use super::Str;

const SLOTS: usize = 256;
/// Longer values are rarely repeated verbatim; they are not cached.
pub(crate) const MAX_LEN: usize = 96;

#[derive(Default, Clone)]
struct Slot {
    value: Option<Arc<str>>,
    /// Hash of the last value that missed here (admitted when seen again).
    candidate: u64,
}

thread_local! {
    static CACHE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// FxHash-style multiplicative hash over 8-byte words (not DoS-resistant; the cache is
/// bounded and per thread, so a collision only costs an allocation).
pub(crate) fn hash(s: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = s.len() as u64;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
    }
    h
}

/// A shared clone of `s` when this thread saw it recently; `None` (and `s` noted as a
/// candidate) otherwise, for the caller to make its own owned copy.
pub(crate) fn lookup(s: &str) -> Option<Str> {
    if s.is_empty() {
        return Some(Str::EMPTY);
    }
    if s.len() > MAX_LEN {
        return None;
    }
    let h = hash(s);
    CACHE
        .try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if cache.is_empty() {
                cache.resize(SLOTS, Slot::default());
            }
            let slot = cache.get_mut((h >> 56) as usize % SLOTS)?;
            if let Some(v) = &slot.value {
                if &**v == s {
                    return Some(Str::from(Arc::clone(v)));
                }
            }
            if slot.candidate == h {
                let v: Arc<str> = Arc::from(s);
                slot.value = Some(Arc::clone(&v));
                slot.candidate = 0;
                return Some(Str::from(v));
            }
            slot.candidate = h;
            None
        })
        .ok()
        .flatten()
}

/// `s` as a span string, shared when repeated.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn intern(s: &str) -> Str {
    lookup(s).unwrap_or_else(|| Str::from(s.to_owned()))
}

/// `s` as a span string, shared when repeated, else moved in.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn intern_owned(s: String) -> Str {
    lookup(&s).unwrap_or_else(|| Str::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_share_one_allocation() {
        let a = intern("GET");
        assert_eq!(a, "GET");
        let b = intern("GET"); // second sighting: admitted
        let c = intern("GET");
        assert_eq!((b.as_str(), c.as_str()), ("GET", "GET"));
        assert!(std::ptr::eq(b.as_str(), c.as_str()), "shared");
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(intern(&long), long.as_str());
        assert_eq!(intern(""), "");
        // A different value in the same slot replaces nothing until seen twice.
        for i in 0..1000 {
            assert_eq!(intern(&format!("u{i}")).as_str(), format!("u{i}"));
        }
        assert_eq!(intern("GET"), "GET");
    }
}
