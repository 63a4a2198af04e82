//! UTF-8 validation of the strings of a body, fast for what tracers send: ASCII.
//!
//! `str::from_utf8` walks a short string a byte at a time (about 100 instructions for the
//! 20–40 byte ids, URLs and values that miss the string cache, callgrind on the
//! `decode_process` bench); `<[u8]>::is_ascii` reads a word at a time. A string with any
//! non-ASCII byte is validated by `str::from_utf8` as before.

/// `raw` as a `&str` when it is valid UTF-8, `None` when not (the same answer as
/// `str::from_utf8(raw).ok()`).
#[inline]
pub(crate) fn str_of(raw: &[u8]) -> Option<&str> {
    if raw.is_ascii() {
        #[allow(unsafe_code)]
        // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(raw) });
    }
    std::str::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same answer as `str::from_utf8`, on ASCII, multi-byte UTF-8, and invalid bytes
        /// at every position and length.
        #[test]
        fn answers_as_from_utf8(
            raw in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..80),
                prop::collection::vec(0u8..0x80, 0..80),
                "\\PC{0,40}".prop_map(String::into_bytes),
            ],
        ) {
            prop_assert_eq!(str_of(&raw), std::str::from_utf8(&raw).ok());
        }
    }

    #[test]
    fn ascii_with_one_high_byte_anywhere_is_checked_in_full() {
        for n in 1..40 {
            for i in 0..n {
                let mut raw = vec![b'a'; n];
                raw[i] = 0xff;
                assert_eq!(str_of(&raw), None, "len {n}, bad byte at {i}");
                let mut ok = vec![b'a'; n + 1];
                ok.splice(i..i + 1, "é".bytes());
                assert_eq!(str_of(&ok).map(str::len), Some(n + 2));
            }
        }
    }
}
