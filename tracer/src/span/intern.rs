//! Repeated tag values without an allocation each: a small per-thread cache of strings,
//! for integrations that receive values as borrowed or owned text (the `tracing` Layer's
//! fields, OpenTelemetry attributes) where the native API would take `&'static`.
//!
//! Two direct-mapped tables per thread:
//! - by **address** (and length): a literal passed as `&str` (an `info_span!` field, a
//!   `KeyValue::new("k", "v")`) has the same address at every call, so it is found with a
//!   multiply and one comparison of its text — no hash over its bytes;
//! - by **content** (a hash of the bytes): the same text at a new address (a value
//!   formatted or copied per call). A value is admitted on its second sighting in its
//!   slot, so a stream of unique values (URLs with ids, queries with literals) costs one
//!   hash each and never churns the cache. Values longer than [`MAX_LEN`] are not cached.
//!
//! An admitted value becomes a `&'static str`, one copy per process for each distinct
//! text, within a process-wide budget of [`STATIC_BUDGET`] bytes (then an `Arc<str>`):
//! the span then holds a plain pointer — no reference count shared between the
//! application thread that sets the tag and the export thread that drops it, and the
//! encoder's string table finds it by address.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::Str;

const SLOTS: usize = 256;
/// Longer values are rarely repeated verbatim; they are not cached.
pub(crate) const MAX_LEN: usize = 96;
/// Bytes of text made static over the process's life (distinct texts only); past it,
/// admitted values are shared `Arc<str>`s instead.
pub(crate) const STATIC_BUDGET: usize = 1 << 20;

#[derive(Default, Clone)]
struct Slot {
    value: Option<Str>,
    /// Hash of the last value that missed here (admitted when seen again).
    candidate: u64,
}

/// A static value last found at this address (plain data: the table needs no destructor,
/// so reaching it is a plain thread-local access).
#[derive(Clone, Copy)]
struct AddrSlot {
    addr: usize,
    text: &'static str,
}

impl AddrSlot {
    const EMPTY: Self = Self { addr: 0, text: "" };
}

thread_local! {
    static BY_ADDR: [Cell<AddrSlot>; SLOTS] = const { [const { Cell::new(AddrSlot::EMPTY) }; SLOTS] };
    static BY_CONTENT: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Byte equality without a call to `memcmp` (the strings here are short): lengths, then
/// overlapping words.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    #[inline]
    fn word(s: &[u8], at: usize) -> u64 {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    }
    #[inline]
    fn half(s: &[u8], at: usize) -> u32 {
        s.get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, u32::from_le_bytes)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
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

#[inline]
fn addr_index(addr: usize, len: usize) -> usize {
    ((addr ^ len.rotate_left(48)) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize >> 56
}

/// The texts made static so far (one copy per distinct text) and their total size.
struct Statics {
    texts: Mutex<HashSet<&'static str>>,
    bytes: AtomicUsize,
}

fn statics() -> &'static Statics {
    static STATICS: OnceLock<Statics> = OnceLock::new();
    STATICS.get_or_init(|| Statics {
        texts: Mutex::new(HashSet::new()),
        bytes: AtomicUsize::new(0),
    })
}

/// `s` as an admitted cache value: the process's static copy of the text, made now if
/// the budget allows; else a shared string. `None` when the lock is taken (admission is
/// rare — a slot's second sighting of a text it does not hold — and never waits: the
/// caller shares the value this time and admits it at a later sighting).
fn admit(s: &str) -> Option<Str> {
    let statics = statics();
    let mut texts = statics.texts.try_lock().ok()?;
    if let Some(t) = texts.get(s) {
        return Some(Str::from_static(t));
    }
    if statics.bytes.load(Ordering::Relaxed) + s.len() <= STATIC_BUDGET {
        statics.bytes.fetch_add(s.len(), Ordering::Relaxed);
        let t: &'static str = Box::leak(Box::<str>::from(s));
        texts.insert(t);
        return Some(Str::from_static(t));
    }
    Some(Str::from(Arc::<str>::from(s)))
}

/// `s` as a span string that is cloned without a reference count: the process's static
/// copy of the text (within [`STATIC_BUDGET`]), for the few strings an integration repeats
/// on every span (an instrumentation scope's name and version).
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
pub(crate) fn permanent(s: &str) -> Str {
    if s.is_empty() {
        return Str::EMPTY;
    }
    admit(s).unwrap_or_else(|| Str::from(Arc::<str>::from(s)))
}

/// A cached copy of `s` (static or shared) when this thread saw it recently; `None` (and
/// `s` noted as a candidate) otherwise, for the caller to make its own owned copy.
#[inline]
pub(crate) fn lookup(s: &str) -> Option<Str> {
    if s.is_empty() {
        return Some(Str::EMPTY);
    }
    if s.len() > MAX_LEN {
        return None;
    }
    let addr = s.as_ptr() as usize;
    let i = addr_index(addr, s.len()) % SLOTS;
    // The text is compared too: the address may since hold other text.
    let by_addr = BY_ADDR
        .try_with(|t| {
            t.get(i)
                .map(Cell::get)
                .filter(|a| a.addr == addr && same_bytes(a.text.as_bytes(), s.as_bytes()))
        })
        .ok()
        .flatten();
    if let Some(a) = by_addr {
        return Some(Str::from_static(a.text));
    }
    lookup_slow(s, addr, i)
}

/// [`lookup`] when the address table does not have `s`.
#[inline(never)]
fn lookup_slow(s: &str, addr: usize, i: usize) -> Option<Str> {
    let found = by_content(s)?;
    if let Some(text) = found.as_static() {
        let _ = BY_ADDR.try_with(|t| t.get(i).map(|slot| slot.set(AddrSlot { addr, text })));
    }
    Some(found)
}

/// [`lookup`] by the text's hash.
fn by_content(s: &str) -> Option<Str> {
    let h = hash(s);
    BY_CONTENT
        .try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if cache.is_empty() {
                cache.resize(SLOTS, Slot::default());
            }
            let slot = cache.get_mut((h >> 56) as usize % SLOTS)?;
            match &slot.value {
                Some(v) if v.as_str() == s => Some(v.clone()),
                _ if slot.candidate == h => match admit(s) {
                    Some(v) => {
                        slot.value = Some(v.clone());
                        slot.candidate = 0;
                        Some(v)
                    }
                    None => Some(Str::from(Arc::<str>::from(s))),
                },
                _ => {
                    slot.candidate = h;
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// `s` as a span string, shared when repeated.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
#[inline]
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

    #[test]
    fn text_at_a_reused_address_is_never_mistaken_for_the_old_text() {
        // Same buffer, new text each time: found by address only when the text matches.
        let mut buf = String::from("aaaa");
        for _ in 0..3 {
            assert_eq!(intern(&buf), "aaaa");
        }
        let before = buf.as_ptr();
        buf.clear();
        buf.push_str("bbbb");
        assert_eq!(buf.as_ptr(), before, "same allocation");
        assert_eq!(intern(&buf), "bbbb");
        assert_eq!(intern(&buf), "bbbb");
        assert_eq!(intern(&buf), "bbbb");
        // Same text at another address: found by content.
        let other = String::from("aaaa");
        assert_eq!(intern(&other), "aaaa");
    }

    #[test]
    fn admitted_values_are_static_and_one_copy_per_process() {
        let text = "admitted-once-per-process";
        // Seen three times at new addresses: admitted by content on the second.
        fn thrice(text: &str) -> Str {
            let _ = intern(&String::from(text));
            let _ = intern(&String::from(text));
            intern(&String::from(text))
        }
        // (Other tests admit values meanwhile: a contended admission is retried later. A
        // test thread preempted while it holds the admission lock keeps it for a whole
        // time slice on a loaded machine, longer than a hundred tries: each try that is
        // not admitted yields to it.)
        let settled = |text: &str| {
            for _ in 0..10_000 {
                let v = thrice(text);
                if v.as_static().is_some() {
                    return Some(v);
                }
                std::thread::yield_now();
            }
            None
        };
        let here = settled(text);
        let there = std::thread::spawn(move || settled(text)).join().ok().flatten();
        let (Some(here), Some(there)) = (here, there) else {
            panic!("no value");
        };
        assert!(here.as_static().is_some(), "made static");
        assert!(std::ptr::eq(here.as_str(), there.as_str()), "one copy for both threads");
    }
}
