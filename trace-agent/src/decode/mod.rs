//! Decoders for the trace payload versions tracers send (spec section 2).
//!
//! All are lenient like the Go agent (unknown keys skipped, `nil` = zero, any number width,
//! invalid UTF-8 repaired) and strict about bounds: every length is checked against the bytes
//! left before anything is allocated, and nesting is capped. What one payload may allocate is
//! bounded by [`DecodeLimits`] (spans per payload, decoded bytes relative to the body size),
//! charged from the array and map headers before the allocation they would cause.

mod client_stats;
mod error;
pub mod json;
mod reader;
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
