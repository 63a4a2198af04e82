//! The v0.5 string table: each distinct string once per payload, in first-use order.
//!
//! Most strings of a span are the same few dozen in every span (tag keys, the service,
//! names, the worker's standard tags), and most of those are `&'static str` literals or
//! shared `Arc<str>`s. Those are found by address in a small direct-mapped cache (a
//! multiply and a compare) before the hash map is consulted; the map hashes with a
//! seeded multiplicative hash (fast for short strings) instead of SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use crate::span::Str;

/// Slots of the address cache (a power of two).
const CACHE_SLOTS: usize = 1024;

#[derive(Debug, Clone, Default)]
struct Slot {
    addr: usize,
    len: usize,
    index: u32,
    /// For a shared string: a clone, so that its address cannot be reused by other text
    /// while the slot names it.
    _keep: Option<Arc<str>>,
}

/// A string as the encoder sees it: its text, and whether its address identifies it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text<'a> {
    /// A literal: the address always holds this text.
    Static(&'static str),
    /// A shared string: the address holds this text while a clone lives.
    Shared(&'a Arc<str>),
    /// Anything else: looked up by content.
    Other(&'a str),
}

impl<'a> Text<'a> {
    pub(crate) fn as_str(self) -> &'a str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
            Self::Other(s) => s,
        }
    }
}

impl<'a> From<&'a Str> for Text<'a> {
    fn from(s: &'a Str) -> Self {
        if let Some(s) = s.as_static() {
            Self::Static(s)
        } else if let Some(a) = s.as_shared() {
            Self::Shared(a)
        } else {
            Self::Other(s.as_str())
        }
    }
}

/// A multiplicative hash over 8-byte words (the `FxHash` scheme), seeded per process so
/// that colliding tag values cannot be prepared in advance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHash {
    seed: u64,
}

impl Default for FastHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Self { seed }
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The string table of one v0.5 payload.
#[derive(Debug)]
pub(crate) struct StringTable {
    index: HashMap<Box<str>, u32, FastHash>,
    cache: Box<[Slot]>,
    /// The strings, msgpack-encoded, in index order.
    pub(crate) encoded: Vec<u8>,
}

impl StringTable {
    pub(crate) fn new() -> Self {
        let mut t = Self {
            index: HashMap::with_capacity_and_hasher(256, FastHash::default()),
            cache: vec![Slot::default(); CACHE_SLOTS].into_boxed_slice(),
            encoded: Vec::with_capacity(4096),
        };
        t.intern("");
        t
    }

    /// Empties the table for the next payload, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.cache.fill(Slot::default());
        self.encoded.clear();
        self.intern("");
    }

    /// Strings in the table.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The index of `s`, adding it if new.
    #[inline(never)]
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = u32::try_from(self.index.len()).unwrap_or(u32::MAX);
        super::mp::str(&mut self.encoded, s);
        self.index.insert(s.into(), i);
        i
    }

    /// The index of `t`, by address when it has a stable one. The hit is inlined into the
    /// encoder (a multiply and two compares); the rest is out of line.
    #[inline(always)]
    pub(crate) fn intern_text(&mut self, t: Text<'_>) -> u32 {
        let (addr, len) = match t {
            Text::Other(s) => return self.intern(s),
            Text::Static(s) => (s.as_ptr() as usize, s.len()),
            Text::Shared(s) => (s.as_ptr() as usize, s.len()),
        };
        let slot = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 20) & (CACHE_SLOTS - 1);
        // Two ways (`slot` and its neighbour): two strings whose addresses collide (an
        // accident of the binary's layout, about one build in five for twenty literals)
        // both stay cached instead of evicting each other at every span.
        for way in [slot, slot ^ 1] {
            if let Some(hit) = self.cache.get(way) {
                if hit.addr == addr && hit.len == len && addr != 0 {
                    return hit.index;
                }
            }
        }
        self.intern_missed(t, slot)
    }

    /// [`StringTable::intern_text`] when the address cache does not know `t`.
    #[inline(never)]
    fn intern_missed(&mut self, t: Text<'_>, slot: usize) -> u32 {
        let index = self.intern(t.as_str());
        let (addr, len) = (t.as_str().as_ptr() as usize, t.as_str().len());
        // The first way if free, else the second (which a third colliding string takes).
        let slot = match self.cache.get(slot) {
            Some(first) if first.addr != 0 => slot ^ 1,
            _ => slot,
        };
        if let Some(entry) = self.cache.get_mut(slot) {
            *entry = Slot {
                addr,
                len,
                index,
                _keep: match t {
                    Text::Shared(s) => Some(Arc::clone(s)),
                    _ => None,
                },
            };
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_string_once_whatever_its_form() {
        let mut t = StringTable::new();
        let shared: Arc<str> = Arc::from("web");
        let owned = String::from("web");
        let a = t.intern_text(Text::Static("web"));
        assert_eq!(a, 1);
        assert_eq!(t.intern_text(Text::Shared(&shared)), a);
        assert_eq!(t.intern_text(Text::Other(&owned)), a);
        assert_eq!(t.intern_text(Text::Static("web")), a, "cached by address");
        assert_eq!(t.intern_text(Text::Static("")), 0);
        assert_eq!(t.intern_text(Text::Other("db")), 2);
        assert_eq!(t.len(), 3);
        let decoded: Vec<String> = {
            let mut body = Vec::new();
            let _ = rmp::encode::write_array_len(&mut body, 3);
            body.extend_from_slice(&t.encoded);
            rmp_serde::from_slice(&body).unwrap_or_default()
        };
        assert_eq!(decoded, ["", "web", "db"]);
    }

    #[test]
    fn a_shared_address_is_not_reused_while_cached() {
        let mut t = StringTable::new();
        let first: Arc<str> = Arc::from("alpha");
        let i = t.intern_text(Text::Shared(&first));
        drop(first);
        // The table holds a clone: a new string cannot take the cached address.
        let second: Arc<str> = Arc::from("betaa");
        let j = t.intern_text(Text::Shared(&second));
        assert_ne!(i, j);
        assert_eq!(t.intern_text(Text::Other("alpha")), i);
    }

    #[test]
    fn colliding_addresses_both_stay_cached() {
        let mut t = StringTable::new();
        let texts: Vec<Arc<str>> = (0..64).map(|i| Arc::from(format!("s{i}").as_str())).collect();
        let slot = |a: &Arc<str>| {
            ((a.as_ptr() as usize).wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 20) & (CACHE_SLOTS - 1)
        };
        // Two of them in one slot, if the allocator gave such addresses; else any two.
        let (a, b) = (0..texts.len())
            .flat_map(|i| (i + 1..texts.len()).map(move |j| (i, j)))
            .find(|&(i, j)| slot(&texts[i]) == slot(&texts[j]))
            .unwrap_or((0, 1));
        let (ia, ib) = (
            t.intern_text(Text::Shared(&texts[a])),
            t.intern_text(Text::Shared(&texts[b])),
        );
        let cached = |t: &StringTable, s: &Arc<str>| t.cache.iter().any(|c| c.addr == s.as_ptr() as usize);
        assert!(cached(&t, &texts[a]) && cached(&t, &texts[b]), "both in the cache");
        assert_eq!(t.intern_text(Text::Shared(&texts[a])), ia);
        assert_eq!(t.intern_text(Text::Shared(&texts[b])), ib);
        t.clear();
        assert_eq!(t.len(), 1, "only the empty string after a clear");
        assert!(!cached(&t, &texts[a]));
    }

    #[test]
    fn many_distinct_strings_keep_distinct_indices() {
        let mut t = StringTable::new();
        let texts: Vec<String> = (0..2000).map(|i| format!("value-{i}")).collect();
        let idx: Vec<u32> = texts.iter().map(|s| t.intern(s)).collect();
        for (n, (s, i)) in texts.iter().zip(&idx).enumerate() {
            assert_eq!(*i as usize, n + 1);
            assert_eq!(t.intern(s), *i);
        }
    }
}
