//! The protobuf wire writers behind [`super::EncodedPayload::from_borrowed`]: scalar and string
//! fields, nested messages written without a length pass, and `map<string, _>` fields from the
//! span model's tag lists (the last entry of a repeated key wins, as in a map).

use prost::encoding::{encoded_len_varint, message};

use crate::span::{self, Str};
use crate::upstream::{convert, pb};

/// `TraceChunk.spans`.
const CHUNK_SPANS: u8 = 3;
/// Wire type of length-delimited fields.
const LEN: u8 = 2;

#[inline]
fn key(tag: u8, wire: u8, buf: &mut Vec<u8>) {
    buf.push((tag << 3) | wire);
}

/// The continuation bit of each of a word's 8 bytes.
const CONTINUATION: u64 = 0x8080_8080_8080_8080;

/// Bits 0–55 of `v` as 8 bytes of 7 bits (a varint's first 8 bytes without their continuation
/// bits): halves into 32-bit lanes, quarters into 16-bit lanes, eighths into bytes.
#[inline(always)]
fn groups(v: u64) -> u64 {
    let x = v & 0x00ff_ffff_ffff_ffff;
    let x = (x & 0x0fff_ffff) | ((x & 0x00ff_ffff_f000_0000) << 4);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x0fff_c000_0fff_c000) << 2);
    (x & 0x007f_007f_007f_007f) | ((x & 0x3f80_3f80_3f80_3f80) << 1)
}

/// A varint written as one 16-byte store (its 7-bit groups spread over the bytes, the
/// continuation bits set from its length) cut to its length: no per-byte loop and one capacity
/// check (ids and timestamps are 9–10 bytes, five per span).
#[inline(always)]
fn varint(v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    let n = encoded_len_varint(v);
    // Every byte but the last has its continuation bit (bytes 0–7 all of them when n ≥ 9).
    let low = groups(v) | CONTINUATION >> (8 * (9 - n.min(9)));
    // Bytes 8 and 9 (n ≥ 9): bits 56–62 with bit 63 as byte 8's continuation bit, then bit 63.
    let top = v >> 56;
    let word = u128::from(low) | u128::from(top) << 64 | u128::from(top >> 7) << 72;
    let start = buf.len();
    buf.extend_from_slice(&word.to_le_bytes());
    buf.truncate(start + n);
}

#[inline]
fn varint_field(tag: u8, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        key(tag, 0, buf);
        varint(v, buf);
    }
}

#[inline]
fn bytes_field(tag: u8, s: &[u8], buf: &mut Vec<u8>) {
    if s.is_empty() {
        return;
    }
    if s.len() < 0x80 {
        // Key and one-byte length in one store.
        buf.extend_from_slice(&[(tag << 3) | LEN, s.len() as u8]);
    } else {
        key(tag, LEN, buf);
        varint(s.len() as u64, buf);
    }
    buf.extend_from_slice(s);
}

/// A `string` field (left out when empty, as proto3 does).
#[inline]
pub(super) fn str_field(tag: u8, s: &str, buf: &mut Vec<u8>) {
    bytes_field(tag, s.as_bytes(), buf);
}

/// `1 + varint + len` of an entry field (0 when left out as a default).
#[inline]
fn inner_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + encoded_len_varint(len as u64) + len
    }
}

/// A 9-bit fingerprint of a key: equal keys have equal fingerprints (length, first and last
/// 8 or 4 bytes, or every byte of a shorter key, mixed), so keys whose fingerprints all differ are all different.
#[inline]
fn fingerprint(k: &[u8]) -> u32 {
    let n = k.len();
    let word = |s: Option<&[u8]>| {
        s.and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let word4 = |s: Option<&[u8]>| {
        s.and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
    };
    let (a, b) = if n >= 8 {
        (word(k.get(..8)), word(k.get(n - 8..)))
    } else if n >= 4 {
        (word4(k.get(..4)), word4(k.get(n - 4..)))
    } else {
        let mut a = n as u64;
        for &c in k {
            a = (a << 8) | u64::from(c);
        }
        (a, 0)
    };
    let h = (a ^ b.rotate_left(29) ^ (n as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 55) as u32
}

/// Finds the entries of `tags` followed by another entry with the same key: returns `false`
/// when no key repeats (the usual case; `keep` is left as it was), else `true` with `keep[i]`
/// false for each entry a later one overrides. Linear: a 512-bit set of key fingerprints, and
/// an exact comparison with the earlier keys only for a key whose fingerprint was seen.
pub(super) fn repeated_keys<V>(tags: &[(Str<'_>, V)], keep: &mut Vec<bool>) -> bool {
    let mut seen = [0u64; 8];
    let mut repeated = false;
    for (i, (k, _)) in tags.iter().enumerate() {
        let f = fingerprint(k.as_bytes());
        let bit = 1u64 << (f & 63);
        let Some(word) = seen.get_mut((f >> 6) as usize) else {
            continue;
        };
        if *word & bit != 0 {
            for (j, (earlier, _)) in tags.iter().take(i).enumerate() {
                if earlier.as_str() == k.as_str() {
                    if !repeated {
                        keep.clear();
                        keep.resize(tags.len(), true);
                        repeated = true;
                    }
                    if let Some(slot) = keep.get_mut(j) {
                        *slot = false;
                    }
                }
            }
        }
        *word |= bit;
    }
    repeated
}

/// The entries of `tags` a map keeps: each key's last entry, in list order.
#[inline]
fn last_entries<'t, 'a, V>(
    tags: &'t [(Str<'a>, V)],
    keep: &'t mut Vec<bool>,
) -> impl Iterator<Item = &'t (Str<'a>, V)> {
    let repeated = !tags.is_empty() && repeated_keys(tags, keep);
    let keep: &'t Vec<bool> = keep;
    tags.iter()
        .enumerate()
        .filter(move |(i, _)| !repeated || keep.get(*i) != Some(&false))
        .map(|(_, e)| e)
}

/// A `map<string, X>` field from a tag list; `value_len` is an entry's value field length
/// (0: left out), `write_value` writes it.
fn map_field<V>(
    tag: u8,
    tags: &[(Str<'_>, V)],
    buf: &mut Vec<u8>,
    keep: &mut Vec<bool>,
    value_len: impl Fn(&V) -> usize,
    write_value: impl Fn(&V, &mut Vec<u8>),
) {
    for (k, v) in last_entries(tags, keep) {
        let len = inner_len(k.len()) + value_len(v);
        key(tag, LEN, buf);
        varint(len as u64, buf);
        bytes_field(1, k.as_bytes(), buf);
        write_value(v, buf);
    }
}

/// A `map<string, string>` field from a tag list: one pass that writes the entries and checks
/// their keys are distinct (a key whose fingerprint was seen is compared with the earlier keys);
/// a repeated key (rare) has the field written again with each key's last entry.
pub(super) fn str_map_field(tag: u8, tags: &[(Str<'_>, Str<'_>)], buf: &mut Vec<u8>, keep: &mut Vec<bool>) {
    let start = buf.len();
    let mut seen = [0u64; 8];
    for (i, (k, v)) in tags.iter().enumerate() {
        let f = fingerprint(k.as_bytes());
        let bit = 1u64 << (f & 63);
        if let Some(word) = seen.get_mut((f >> 6) as usize) {
            if *word & bit != 0 && tags.iter().take(i).any(|(earlier, _)| earlier.as_str() == k.as_str()) {
                buf.truncate(start);
                for (k, v) in last_entries(tags, keep) {
                    str_entry(tag, k.as_bytes(), v.as_bytes(), buf);
                }
                return;
            }
            *word |= bit;
        }
        str_entry(tag, k.as_bytes(), v.as_bytes(), buf);
    }
}

/// One `map<string, string>` entry (an empty key or value is left out of it, as proto3 does).
#[inline(always)]
fn str_entry(tag: u8, k: &[u8], v: &[u8], buf: &mut Vec<u8>) {
    // Usual tag: non-empty key and value, entry under 128 bytes: every length is one byte.
    let len = k.len() + v.len() + 4;
    if !k.is_empty() && !v.is_empty() && len < 0x80 {
        buf.extend_from_slice(&[(tag << 3) | LEN, len as u8, (1 << 3) | LEN, k.len() as u8]);
        buf.extend_from_slice(k);
        buf.extend_from_slice(&[(2 << 3) | LEN, v.len() as u8]);
        buf.extend_from_slice(v);
        return;
    }
    key(tag, LEN, buf);
    varint((inner_len(k.len()) + inner_len(v.len())) as u64, buf);
    bytes_field(1, k, buf);
    bytes_field(2, v, buf);
}

/// Writes a length-delimited field whose body `body` writes, without knowing its length in
/// advance: two bytes are set aside for the length (bodies of 128 B–16 KiB, most spans) and
/// the body is moved when its length needs fewer or more.
#[inline]
fn nested(tag: u8, buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    key(tag, LEN, buf);
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    body(buf);
    let len = buf.len() - at - 2;
    let n = encoded_len_varint(len as u64);
    if n != 2 {
        let end = buf.len();
        if n > 2 {
            buf.resize(end + n - 2, 0);
        }
        buf.copy_within(at + 2..end, at + n);
        buf.truncate(at + n + len);
    }
    if let Some(slots) = buf.get_mut(at..at + n) {
        let mut v = len as u64;
        for slot in slots.iter_mut() {
            *slot = (v as u8 & 0x7f) | 0x80;
            v >>= 7;
        }
        if let Some(last) = slots.last_mut() {
            *last &= 0x7f;
        }
    }
}

/// An upper estimate of the bytes [`write_borrowed_chunk`] writes for `c` (strings and tags
/// with their usual one-byte lengths; numbers at their widest), so the buffer is allocated once.
pub(super) fn estimated_chunk_len(c: &span::TraceChunk<'_>) -> usize {
    let tags = |t: &[(Str<'_>, Str<'_>)]| t.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
    let spans: usize = c
        .spans
        .iter()
        .map(|s| {
            80 + s.service.len()
                + s.name.len()
                + s.resource.len()
                + s.r#type.len()
                + tags(&s.meta)
                + s.metrics.iter().map(|(k, _)| k.len() + 14).sum::<usize>()
                + s.meta_struct.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
                + s.raw_fields.iter().map(|(_, v)| 2 * v.len()).sum::<usize>()
        })
        .sum();
    spans + 16 + c.origin.len() + tags(&c.tags)
}

/// Writes the body of a `TraceChunk` message from the borrowed span model.
pub(super) fn write_borrowed_chunk(c: &span::TraceChunk<'_>, buf: &mut Vec<u8>, keep: &mut Vec<bool>) {
    // int32: negative values are sign-extended to 64 bits.
    varint_field(1, i64::from(c.priority) as u64, buf);
    str_field(2, &c.origin, buf);
    for s in &c.spans {
        nested(CHUNK_SPANS, buf, |buf| write_borrowed_span(s, buf, keep));
    }
    str_map_field(4, &c.tags, buf, keep);
    if c.dropped_trace {
        key(5, 0, buf);
        buf.push(1);
    }
}

fn write_borrowed_span(s: &span::Span<'_>, buf: &mut Vec<u8>, keep: &mut Vec<bool>) {
    str_field(1, &s.service, buf);
    str_field(2, &s.name, buf);
    str_field(3, &s.resource, buf);
    varint_field(4, s.trace_id, buf);
    varint_field(5, s.span_id, buf);
    varint_field(6, s.parent_id, buf);
    varint_field(7, s.start as u64, buf);
    varint_field(8, s.duration as u64, buf);
    varint_field(9, i64::from(s.error) as u64, buf);
    str_map_field(10, &s.meta, buf, keep);
    map_field(
        11,
        &s.metrics,
        buf,
        keep,
        // proto3 leaves a 0.0 (and -0.0) double out.
        |v| if *v == 0.0 { 0 } else { 9 },
        |v, buf| {
            if *v != 0.0 {
                key(2, 1, buf);
                buf.extend_from_slice(&v.to_le_bytes());
            }
        },
    );
    str_field(12, &s.r#type, buf);
    map_field(
        13,
        &s.meta_struct,
        buf,
        keep,
        |v| inner_len(v.len()),
        |v, buf| bytes_field(2, v, buf),
    );
    if !s.raw_fields.is_empty() {
        // The last `span_links` / `span_events` field wins, as in `convert::span`.
        let last = |name: &str| s.raw_fields.iter().rev().find(|(k, _)| k.as_str() == name);
        if let Some((k, raw)) = last("span_links") {
            for link in convert::raw_list::<pb::SpanLink>(k, raw) {
                message::encode(14, &link, buf);
            }
        }
        if let Some((k, raw)) = last("span_events") {
            for event in convert::raw_list::<pb::SpanEvent>(k, raw) {
                message::encode(15, &event, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: an entry is kept when no later entry has its key.
    fn last_of_each_key_by_scan(keys: &[String]) -> Vec<bool> {
        (0..keys.len())
            .map(|i| !keys.iter().skip(i + 1).any(|l| *l == keys[i]))
            .collect()
    }

    fn tags(keys: &[String]) -> Vec<(Str<'_>, ())> {
        keys.iter().map(|k| (Str::borrowed(k), ())).collect()
    }

    proptest! {
        /// Same decision as the quadratic scan, on lists with and without repeated keys (few
        /// distinct short keys, so repeats and fingerprint collisions are frequent; long keys
        /// sharing their first and last bytes).
        #[test]
        fn repeated_keys_agrees_with_the_scan(
            keys in prop::collection::vec(
                prop_oneof![
                    "[a-c]{0,3}",
                    "_dd\\.[a-z.]{0,20}",
                    "x[a-z0-9]{0,40}y",
                ],
                0..80,
            ),
        ) {
            let reference = last_of_each_key_by_scan(&keys);
            let mut keep = vec![false; 3]; // left over from another list
            let repeated = repeated_keys(&tags(&keys), &mut keep);
            prop_assert_eq!(repeated, reference.contains(&false));
            if repeated {
                prop_assert_eq!(keep, reference);
            }
        }
    }

    /// prost's varint encoding, from either side of every length boundary.
    fn varint_cases() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u32..64, any::<u64>()).prop_map(|(bits, r)| r >> bits),
            (1u32..64).prop_map(|bits| (1u64 << bits) - 1),
            (0u32..64).prop_map(|bits| 1u64 << bits),
        ]
    }

    proptest! {
        #[test]
        fn varint_writes_what_prost_writes(v in varint_cases(), before in 0usize..3) {
            let mut ours = vec![0xaa; before];
            varint(v, &mut ours);
            let mut reference = vec![0xaa; before];
            prost::encoding::encode_varint(v, &mut reference);
            prop_assert_eq!(ours, reference);
        }
    }

    proptest! {
        /// The one-pass map writer: the same bytes as writing the last entry of each key.
        #[test]
        fn str_map_field_writes_each_keys_last_entry(
            entries in prop::collection::vec(
                (prop_oneof!["[a-c]{0,3}", "_dd\\.[a-z.]{0,20}", "x[a-z0-9]{0,140}y"], "[a-z]{0,40}"),
                0..40,
            ),
        ) {
            let tags: Vec<(Str<'_>, Str<'_>)> =
                entries.iter().map(|(k, v)| (Str::borrowed(k), Str::borrowed(v))).collect();
            let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
            let mut expected = vec![7u8];
            for ((k, v), kept) in entries.iter().zip(last_of_each_key_by_scan(&keys)) {
                if kept {
                    let mut entry = Vec::new();
                    bytes_field(1, k.as_bytes(), &mut entry);
                    bytes_field(2, v.as_bytes(), &mut entry);
                    prost::encoding::encode_key(10, prost::encoding::WireType::LengthDelimited, &mut expected);
                    prost::encoding::encode_varint(entry.len() as u64, &mut expected);
                    expected.extend_from_slice(&entry);
                }
            }
            let mut buf = vec![7u8];
            str_map_field(10, &tags, &mut buf, &mut Vec::new());
            prop_assert_eq!(buf, expected);
        }
    }

    #[test]
    fn many_distinct_keys_are_not_repeats_and_a_late_repeat_is_found() {
        let mut keys: Vec<String> = (0..300).map(|i| format!("_dd.code_origin.frames.{i}.line")).collect();
        let mut keep = Vec::new();
        assert!(!repeated_keys(&tags(&keys), &mut keep));
        keys.push("_dd.code_origin.frames.7.line".to_owned());
        assert!(repeated_keys(&tags(&keys), &mut keep));
        assert_eq!(keep.iter().filter(|k| !**k).count(), 1);
        assert!(!keep[7]);
    }
}
