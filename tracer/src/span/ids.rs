//! Trace and span identifiers, and their generation.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// A 128-bit trace id.
///
/// On the Datadog wire the low 64 bits travel in `trace_id` and the high 64 bits as
/// 16 lower-case hex digits in the `_dd.p.tid` tag of the chunk's first span.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TraceId(u128);

impl TraceId {
    /// Builds an id from its 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self(v)
    }

    /// Builds an id from its high and low halves.
    pub const fn from_parts(high: u64, low: u64) -> Self {
        Self(((high as u128) << 64) | low as u128)
    }

    /// The 128-bit value.
    pub const fn to_u128(self) -> u128 {
        self.0
    }

    /// The low 64 bits (the wire `trace_id`, the input of the sampling keep rule).
    pub const fn low(self) -> u64 {
        self.0 as u64
    }

    /// The high 64 bits (`_dd.p.tid`); zero for a 64-bit id.
    pub const fn high(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// Zero is never a valid trace id.
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// 32 lower-case hex digits, as W3C `traceparent` and log correlation use it.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses 1 to 32 hex digits; `None` for anything else or an all-zero id.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().filter(|v| *v != 0).map(Self)
    }

    /// A new random id: the high half starts with the unix time in seconds (as Datadog's
    /// tracers do, so the backend can tell when the trace started), the low half is random
    /// and never zero.
    pub fn generate(unix_secs: u64) -> Self {
        let high = (unix_secs & 0xffff_ffff) << 32;
        Self::from_parts(high, random_nonzero_u64())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({:032x})", self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A 64-bit span id (never zero for a real span; zero means "no parent").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SpanId(u64);

impl SpanId {
    /// Builds an id from its value.
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The value.
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// Zero is never a valid span id.
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// 16 lower-case hex digits (W3C `parent-id`, tracestate `p:`).
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// A new random id in `1..=i64::MAX`, so that decoders reading signed integers agree.
    pub fn generate() -> Self {
        Self(random_nonzero_u64() >> 1 | 1)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the standard library's randomly keyed hasher (OS entropy once per
/// process, then a per-thread counter), so ids differ across threads and processes.
fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let here = 0u8;
    h.write_usize(&here as *const u8 as usize);
    h.finish() | 1
}

/// wyrand: a fast, well-distributed 64-bit generator (not cryptographic; ids need
/// uniqueness and uniform low bits for the sampling hash, not secrecy).
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

fn random_nonzero_u64() -> u64 {
    loop {
        let v = next_u64();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_halves_and_hex() {
        let id = TraceId::from_parts(0x6b01_eedd_0000_0000, 42);
        assert_eq!(id.high(), 0x6b01_eedd_0000_0000);
        assert_eq!(id.low(), 42);
        assert_eq!(id.to_hex(), "6b01eedd00000000000000000000002a");
        assert_eq!(TraceId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(TraceId::from_hex("2a"), Some(TraceId::from_u128(42)));
    }

    #[test]
    fn trace_id_hex_rejects_garbage() {
        for bad in [
            "",
            "0",
            "00000000000000000000000000000000",
            "xyz",
            "1234567890abcdef1234567890abcdef0",
        ] {
            assert_eq!(TraceId::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_carry_time_and_are_distinct() {
        let a = TraceId::generate(0x6b01_eedd);
        let b = TraceId::generate(0x6b01_eedd);
        assert_eq!(a.high(), 0x6b01_eedd_0000_0000);
        assert_ne!(a, b);
        assert_ne!(a.low(), 0);
        let s = SpanId::generate();
        assert!(s.is_valid() && s.to_u64() <= i64::MAX as u64);
        assert_eq!(SpanId::from_u64(255).to_hex(), "00000000000000ff");
    }

    #[test]
    fn ids_differ_across_threads() {
        let here = SpanId::generate();
        let there = std::thread::spawn(SpanId::generate)
            .join()
            .map_err(|_| ())
            .unwrap_or_default();
        assert_ne!(here, there);
    }
}
