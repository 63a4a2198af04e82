//! Decoders for the trace payload versions tracers send (spec section 2).
//!
//! All are lenient like the Go agent (unknown keys skipped, `nil` = zero, any number width,
//! invalid UTF-8 repaired) and strict about bounds: every length is checked against the bytes
//! left before anything is allocated, and nesting is capped.

mod client_stats;
mod error;
pub mod json;
mod reader;
pub mod v04;
pub mod v05;
pub mod v07;

pub use client_stats::decode_client_stats;
pub use error::{DecodeError, ReadError, ReadErrorKind};

use crate::span::TracerPayload;

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

/// Decodes a trace payload of `version` in `encoding`.
///
/// v0.5 and v0.7 are always msgpack. For v0.3/v0.4 JSON is decoded when the content type says so;
/// an unknown content type tries JSON first, then msgpack.
///
/// # Errors
/// A [`DecodeError`] saying what was wrong and where.
pub fn decode_payload(version: ApiVersion, encoding: Encoding, body: &[u8]) -> Result<TracerPayload<'_>, DecodeError> {
    let chunks = match (version, encoding) {
        (ApiVersion::V07, _) => return v07::decode(body),
        (ApiVersion::V05, _) => v05::decode(body)?,
        (ApiVersion::V01, _) => json::decode_flat_spans(body)?,
        (ApiVersion::V02, _) => json::decode(body)?,
        (_, Encoding::Msgpack) => v04::decode(body)?,
        (_, Encoding::Json) => json::decode(body)?,
        (_, Encoding::Unknown) => match json::decode(body) {
            Ok(c) => c,
            Err(_) => v04::decode(body)?,
        },
    };
    Ok(TracerPayload {
        chunks,
        ..TracerPayload::default()
    })
}
