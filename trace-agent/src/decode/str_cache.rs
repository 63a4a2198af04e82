//! Short strings already validated in this body, found again by content: a tracer repeats the
//! same tag keys and most values (`env`, `version`, `component`, service and operation names)
//! in every span, and checking a short string's UTF-8 (`str::from_utf8`, about 100
//! instructions for a 10–30 byte string) costs more than finding an earlier copy of it.
//!
//! A hit returns the earlier `&'b str`: another view of the same body with the same bytes, so
//! what the decoder produces is unchanged (still borrowed, no copy). A hit is exact: the length,
//! the first and last 8 bytes, and for strings over 16 bytes the bytes between, are equal; a
//! miss validates with `str::from_utf8` and remembers the result.

/// Longest string looked up (fixstrs, up to 31 bytes, and short str8s such as ids and paths).
pub(crate) const MAX_LEN: usize = 64;
/// Slots in the table (direct-mapped: a new string replaces the one in its slot).
const SLOTS: usize = 256;

#[derive(Debug, Clone, Copy, Default)]
struct Slot<'b> {
    head: u64,
    tail: u64,
    s: &'b str,
}

/// The table; allocated on first use.
#[derive(Debug, Default)]
pub(crate) struct StrCache<'b> {
    slots: Vec<Slot<'b>>,
}

#[inline(always)]
fn word8(s: Option<&[u8]>) -> u64 {
    s.and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

#[inline(always)]
fn word4(s: Option<&[u8]>) -> u64 {
    s.and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// The first and last bytes of `raw` as two words: with the length, they determine every
/// byte of a string of up to 16 bytes (the two windows overlap or meet); a longer one also
/// needs its middle compared.
#[inline(always)]
fn head_tail(raw: &[u8]) -> (u64, u64) {
    let n = raw.len();
    if n >= 8 {
        (word8(raw.get(..8)), word8(raw.get(n - 8..)))
    } else if n >= 4 {
        (word4(raw.get(..4)), word4(raw.get(n - 4..)))
    } else {
        let mut a = 0u64;
        for (i, &c) in raw.iter().enumerate() {
            a |= u64::from(c) << (8 * i);
        }
        (a, 0)
    }
}

impl<'b> StrCache<'b> {
    /// `raw` as a string when it is valid UTF-8 (`None` when not), from an earlier identical
    /// string of the body when there is one. `raw` must be at most [`MAX_LEN`] bytes.
    #[inline(always)]
    pub(crate) fn get(&mut self, raw: &'b [u8]) -> Option<&'b str> {
        let n = raw.len();
        let (head, tail) = head_tail(raw);
        let h = (head ^ tail.rotate_left(23) ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 56) as usize;
        if let Some(slot) = self.slots.get(i)
            && slot.head == head
            && slot.tail == tail
            && slot.s.len() == n
            && (n <= 16 || slot.s.as_bytes().get(8..n - 8) == raw.get(8..n - 8))
        {
            return Some(slot.s);
        }
        self.miss(raw, i, head, tail)
    }

    /// Validates `raw` and remembers it in slot `i`.
    #[inline(never)]
    fn miss(&mut self, raw: &'b [u8], i: usize, head: u64, tail: u64) -> Option<&'b str> {
        let s = super::utf8::str_of(raw)?;
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); SLOTS];
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot { head, tail, s };
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever was looked up before, the answer is `str::from_utf8`'s (same bytes, same
        /// validity), for strings of every length up to `MAX_LEN` from a small alphabet (many
        /// repeats and near-repeats) and with invalid UTF-8.
        #[test]
        fn answers_as_from_utf8(
            strings in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(prop::sample::select(b"ab\xc3\xa9\xff_".to_vec()), 0..=MAX_LEN),
                    "[a-d]{0,64}".prop_map(String::into_bytes),
                    // Same length, first and last bytes: only the middle differs.
                    "_dd\\.[ab]{10,50}\\.line".prop_map(String::into_bytes),
                    "\\PC{0,8}".prop_map(String::into_bytes)
                        .prop_filter("fits", |b| b.len() <= MAX_LEN),
                ],
                1..200,
            ),
        ) {
            let mut cache = StrCache::default();
            for raw in &strings {
                let got = cache.get(raw);
                prop_assert_eq!(got, std::str::from_utf8(raw).ok());
            }
            // Second pass: every valid string is now possibly cached.
            for raw in &strings {
                prop_assert_eq!(cache.get(raw), std::str::from_utf8(raw).ok());
            }
        }
    }

    #[test]
    fn a_repeated_string_comes_back_from_its_first_copy() {
        let body = b"service-a service-a";
        let mut cache = StrCache::default();
        let first = cache.get(&body[..9]).map(str::as_ptr);
        let second = cache.get(&body[10..]).map(str::as_ptr);
        assert_eq!(first, Some(body.as_ptr()));
        assert_eq!(second, first, "the second copy reuses the first one's view");
    }
}
