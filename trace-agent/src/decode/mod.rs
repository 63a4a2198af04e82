//! Decoders for the trace payload versions tracers send (spec section 2).
//!
//! All are lenient like the Go agent (unknown keys skipped, `nil` = zero, any number width,
//! invalid UTF-8 repaired) and strict about bounds: every length is checked against the bytes
//! left before anything is allocated, and nesting is capped. What one payload may allocate is
//! bounded by [`DecodeLimits`] (spans per payload, decoded bytes relative to the body size),
//! charged from the array and map headers before the allocation they would cause.

#[doc(hidden)]
pub mod captures;
mod client_stats;
mod error;
pub mod json;
mod reader;
mod str_cache;
mod utf8;

/// Capacity of a span's metrics list of `n` entries: two slots more when it has any, for the
/// two the agent may add (`_top_level` on a top-level span, the samplers' rate on a chunk's
/// root, both `tag_set`); growing the list then would copy it. A span without metrics (most
/// children) allocates nothing.
fn metrics_capacity(n: usize) -> usize {
    if n == 0 { 0 } else { n + 2 }
}

/// Room for `n` more entries in a span's tag list: a new list is allocated at that size
/// (`Vec::with_capacity`, cheaper than growing an empty one with `reserve_exact`); a list
/// already holding entries (the field repeated in the span map) keeps them and grows.
#[inline]
fn reserve_tags<T>(tags: &mut Vec<T>, n: usize) {
    if tags.capacity() == 0 {
        *tags = Vec::with_capacity(n);
    } else {
        tags.reserve_exact(n);
    }
}
pub mod v04;
pub mod v05;
pub mod v07;

pub use client_stats::{decode_client_stats, decode_client_stats_with};
pub use error::{DecodeError, ReadError, ReadErrorKind};

use crate::span::TracerPayload;

/// Default `apm_config.max_spans_per_payload`.
pub const DEFAULT_MAX_SPANS_PER_PAYLOAD: usize = 1_000_000;
/// Default `apm_config.max_decoded_ratio`: decoded memory allowed per body byte.
pub const DEFAULT_MAX_DECODED_RATIO: usize = 16;
/// Decoded memory always allowed, whatever the body size (small bodies of real spans).
pub const MIN_DECODED_BYTES: usize = 4 << 20;

/// Bounds on what decoding one payload may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Spans in the whole payload (`apm_config.max_spans_per_payload`).
    pub max_spans: usize,
    /// Estimated bytes of decoded structures (spans, tags, chunks, copied strings).
    pub max_decoded_bytes: usize,
}

impl DecodeLimits {
    /// The default limits for a body of `body_len` bytes.
    pub fn for_body(body_len: usize) -> Self {
        Self::new(body_len, DEFAULT_MAX_SPANS_PER_PAYLOAD, DEFAULT_MAX_DECODED_RATIO)
    }

    /// `max_spans` spans and `ratio` decoded bytes per body byte (at least
    /// [`MIN_DECODED_BYTES`]).
    pub fn new(body_len: usize, max_spans: usize, ratio: usize) -> Self {
        Self {
            max_spans,
            max_decoded_bytes: body_len.saturating_mul(ratio).max(MIN_DECODED_BYTES),
        }
    }
}

/// Checks that a `/v0.6/stats` body is a well-formed `ClientStatsPayload`
/// ([`decode_client_stats`] without keeping the result).
///
/// # Errors
/// A [`DecodeError`] saying what was wrong and where.
pub fn validate_client_stats(body: &[u8]) -> Result<(), DecodeError> {
    decode_client_stats(body).map(|_| ())
}

/// Trace endpoint versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `/spans`, `/v0.1/spans`: a flat JSON array of spans, grouped by `trace_id`; replies `OK`.
    V01,
    /// `/v0.2/traces`: JSON array of traces; replies `OK`.
    V02,
    /// `/v0.3/traces`: v0.4 shape, replies `OK`.
    V03,
    /// `/v0.4/traces`.
    V04,
    /// `/v0.5/traces`.
    V05,
    /// `/v0.7/traces`.
    V07,
}

impl ApiVersion {
    /// `v0.4` etc.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V01 => "v0.1",
            Self::V02 => "v0.2",
            Self::V03 => "v0.3",
            Self::V04 => "v0.4",
            Self::V05 => "v0.5",
            Self::V07 => "v0.7",
        }
    }
}

/// How the body is encoded, from `Content-Type` (spec 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/msgpack`.
    Msgpack,
    /// `application/json`, `text/json`, missing or unparsable.
    Json,
    /// Anything else: try JSON, then msgpack.
    Unknown,
}

impl Encoding {
    /// Classifies a `Content-Type` header value.
    pub fn from_content_type(value: Option<&str>) -> Self {
        let Some(v) = value else { return Self::Json };
        let media = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => Self::Msgpack,
            "application/json" | "text/json" | "" => Self::Json,
            _ => Self::Unknown,
        }
    }
}

/// Decodes a trace payload of `version` in `encoding` within the default [`DecodeLimits`].
///
/// v0.5 and v0.7 are always msgpack. For v0.3/v0.4 JSON is decoded when the content type says so;
/// an unknown content type tries JSON first, then msgpack.
///
/// # Errors
/// A [`DecodeError`] saying what was wrong and where.
pub fn decode_payload(version: ApiVersion, encoding: Encoding, body: &[u8]) -> Result<TracerPayload<'_>, DecodeError> {
    decode_payload_with(version, encoding, body, DecodeLimits::for_body(body.len()))
}

/// [`decode_payload`] within `limits`.
///
/// # Errors
/// A [`DecodeError`] saying what was wrong and where; [`DecodeError::is_limit`] when a limit
/// refused it.
pub fn decode_payload_with(
    version: ApiVersion,
    encoding: Encoding,
    body: &[u8],
    limits: DecodeLimits,
) -> Result<TracerPayload<'_>, DecodeError> {
    let chunks = match (version, encoding) {
        (ApiVersion::V07, _) => return v07::decode_with(body, limits),
        (ApiVersion::V05, _) => v05::decode_with(body, limits)?,
        (ApiVersion::V01, _) => json::decode_flat_spans_with(body, limits)?,
        (ApiVersion::V02, _) => json::decode_with(body, limits)?,
        (_, Encoding::Msgpack) => v04::decode_with(body, limits)?,
        (_, Encoding::Json) => json::decode_with(body, limits)?,
        (_, Encoding::Unknown) => match json::decode_with(body, limits) {
            Ok(c) => c,
            Err(e) if e.is_limit() => return Err(e),
            Err(_) => v04::decode_with(body, limits)?,
        },
    };
    Ok(TracerPayload {
        chunks,
        ..TracerPayload::default()
    })
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn limits(max_spans: usize, max_decoded_bytes: usize) -> DecodeLimits {
        DecodeLimits {
            max_spans,
            max_decoded_bytes,
        }
    }

    fn array32(b: &mut Vec<u8>, n: usize) {
        b.push(0xdd);
        b.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
    }

    /// The smallest decoded budget, in bytes per body byte, each real ddtrace capture needs:
    /// the default ratio must leave a wide margin over it.
    #[test]
    fn real_payloads_need_far_less_than_the_default_ratio() {
        let mut checked = 0;
        for (entry, version) in super::captures::trace_bodies() {
            let body = std::fs::read(&entry).unwrap();
            let need = (1..=DEFAULT_MAX_DECODED_RATIO)
                .find(|&r| {
                    decode_payload_with(version, Encoding::Msgpack, &body, limits(usize::MAX, body.len() * r)).is_ok()
                })
                .unwrap_or_else(|| panic!("{} needs more than the default ratio", entry.display()));
            assert!(need <= DEFAULT_MAX_DECODED_RATIO / 2, "{}: {need}x", entry.display());
            checked += 1;
        }
        assert!(checked >= 3, "captures found: {checked}");
    }

    #[test]
    fn a_span_count_over_the_limit_is_refused_from_the_header() {
        // Claims 10 M spans; only the header is there: refused before any allocation.
        let mut b = vec![0x91];
        array32(&mut b, 10_000_000);
        b.resize(b.len() + 10_000_000, 0x80);
        let e = decode_payload(ApiVersion::V04, Encoding::Msgpack, &b).unwrap_err();
        assert_eq!(
            e.kind,
            ReadErrorKind::TooManySpans {
                max: DEFAULT_MAX_SPANS_PER_PAYLOAD
            }
        );
        assert!(e.is_limit());
        // Spans are counted over the whole payload, not per trace.
        let mut b = Vec::new();
        array32(&mut b, 3);
        for _ in 0..3 {
            b.extend_from_slice(&[0x92, 0x80, 0x80]);
        }
        let e = decode_payload_with(ApiVersion::V04, Encoding::Msgpack, &b, limits(5, usize::MAX)).unwrap_err();
        assert_eq!(e.kind, ReadErrorKind::TooManySpans { max: 5 });
        assert!(decode_payload_with(ApiVersion::V04, Encoding::Msgpack, &b, limits(6, usize::MAX)).is_ok());
    }

    #[test]
    fn tiny_values_that_decode_large_are_refused_in_every_format() {
        let n = 1_000_000;
        let big = limits(usize::MAX, n * 16);
        // v0.4: a million empty traces.
        let mut b = Vec::new();
        array32(&mut b, n);
        b.resize(b.len() + n, 0x90);
        let e = decode_payload_with(ApiVersion::V04, Encoding::Msgpack, &b, big).unwrap_err();
        assert!(matches!(e.kind, ReadErrorKind::DecodedTooLarge { .. }), "{e}");
        // v0.4: one span with a million one-byte-each meta entries (nil keys and values).
        let mut b = vec![0x91, 0x91, 0x81, 0xa4];
        b.extend_from_slice(b"meta");
        b.push(0xdf);
        b.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
        b.resize(b.len() + 2 * n, 0xc0);
        let e = decode_payload_with(ApiVersion::V04, Encoding::Msgpack, &b, big).unwrap_err();
        assert!(matches!(e.kind, ReadErrorKind::DecodedTooLarge { .. }), "{e}");
        // v0.5: a string table of a million empty strings.
        let mut b = vec![0x92];
        array32(&mut b, n);
        b.resize(b.len() + n, 0xa0);
        b.push(0x90);
        let e = decode_payload_with(ApiVersion::V05, Encoding::Msgpack, &b, limits(usize::MAX, n * 8)).unwrap_err();
        assert!(matches!(e.kind, ReadErrorKind::DecodedTooLarge { .. }), "{e}");
        // JSON: `[[{},{},…]]`, refused before parsing.
        let mut j = b"[[".to_vec();
        for _ in 0..n {
            j.extend_from_slice(b"{},");
        }
        j.extend_from_slice(b"{}]]");
        let e = decode_payload_with(ApiVersion::V04, Encoding::Json, &j, big).unwrap_err();
        assert!(matches!(e.kind, ReadErrorKind::DecodedTooLarge { .. }), "{e}");
        // Client stats: a million empty groups.
        let mut s = vec![0x81, 0xa5];
        s.extend_from_slice(b"Stats");
        s.extend_from_slice(&[0x91, 0x81, 0xa5]);
        s.extend_from_slice(b"Stats");
        array32(&mut s, n);
        s.resize(s.len() + n, 0x80);
        let e = decode_client_stats_with(&s, big).unwrap_err();
        assert!(e.is_limit(), "{e}");
        assert!(decode_client_stats(&s).is_err());
    }

    #[test]
    fn json_within_the_limits_still_decodes() {
        let j = br#"[[{"service":"web","name":"op","resource":"/","trace_id":1,"span_id":1,"meta":{"a":"b"}}]]"#;
        let p = decode_payload(ApiVersion::V04, Encoding::Json, j).unwrap();
        assert_eq!(p.span_count(), 1);
        let e = decode_payload_with(ApiVersion::V04, Encoding::Json, j, limits(0, usize::MAX)).unwrap_err();
        assert_eq!(e.kind, ReadErrorKind::TooManySpans { max: 0 });
    }
}
