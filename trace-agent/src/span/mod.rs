//! The span model the decoders produce and the processing stages transform.
//!
//! Strings are [`Str`]: short ones inline, long ones UTF-8 views into the request body's
//! reference-counted buffer, so decoding a payload allocates little and copies little. Stages
//! that rewrite a value replace it with an owned one.

mod text;

use bytes::Bytes;

pub use text::{INLINE_CAP, Str};

/// An ordered list of `key → value` pairs (tracers send ~5–30 tags per span, so a vector beats
/// a hash map for both building and lookup). Later duplicates win on lookup, like a map.
pub type Tags<V> = Vec<(Str, V)>;

/// Returns the last value stored under `key`.
pub fn tag_get<'a, V>(tags: &'a [(Str, V)], key: &str) -> Option<&'a V> {
    tags.iter().rev().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

/// Sets `key` to `value`, replacing every existing entry for it.
pub fn tag_set<V>(tags: &mut Tags<V>, key: &str, value: V) {
    tags.retain(|(k, _)| k.as_str() != key);
    tags.push((Str::from(key.to_owned()), value));
}

/// Removes every entry for `key`; returns whether one existed.
pub fn tag_remove<V>(tags: &mut Tags<V>, key: &str) -> bool {
    let before = tags.len();
    tags.retain(|(k, _)| k.as_str() != key);
    before != tags.len()
}

/// One span, with the wire field names of section 2.1 of the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// Service name.
    pub service: Str,
    /// Operation name.
    pub name: Str,
    /// Resource (e.g. `GET /api/apm`, a SQL query).
    pub resource: Str,
    /// Low 64 bits of the trace id (high bits travel in meta `_dd.p.tid`).
    pub trace_id: u64,
    /// Span id.
    pub span_id: u64,
    /// Parent span id, 0 for a root.
    pub parent_id: u64,
    /// Start, ns since the Unix epoch.
    pub start: i64,
    /// Duration in ns.
    pub duration: i64,
    /// 1 when the span is an error.
    pub error: i32,
    /// String tags.
    pub meta: Tags<Str>,
    /// Numeric tags.
    pub metrics: Tags<f64>,
    /// Span type (`web`, `sql`, `redis`, …); drives obfuscation.
    pub r#type: Str,
    /// `meta_struct`: msgpack blobs kept as received.
    pub meta_struct: Tags<Bytes>,
    /// `span_links` and `span_events`, kept as their raw msgpack (or JSON) encoding.
    pub raw_fields: Tags<Bytes>,
}

impl Span {
    /// Meta value for `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        tag_get(&self.meta, key).map(Str::as_str)
    }

    /// Metric value for `key`.
    pub fn metric(&self, key: &str) -> Option<f64> {
        tag_get(&self.metrics, key).copied()
    }
}

/// Sampling priority of a chunk whose tracer said nothing (`math.MinInt8` in the Go agent).
pub const PRIORITY_NONE: i32 = i8::MIN as i32;

/// A trace chunk: the spans of one trace sent together.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceChunk {
    /// Sampling priority ([`PRIORITY_NONE`] when unknown).
    pub priority: i32,
    /// Origin (`synthetics`, `lambda`, …).
    pub origin: Str,
    /// The spans.
    pub spans: Vec<Span>,
    /// Chunk tags (e.g. `_dd.p.dm`).
    pub tags: Tags<Str>,
    /// Whether the tracer already dropped it.
    pub dropped_trace: bool,
}

impl TraceChunk {
    /// A chunk of `spans` with no priority, origin or tags (v0.3–v0.5 payloads).
    pub fn from_spans(spans: Vec<Span>) -> Self {
        Self {
            priority: PRIORITY_NONE,
            origin: Str::new(),
            spans,
            tags: Vec::new(),
            dropped_trace: false,
        }
    }
}

/// A tracer payload: what one request carried, with the tracer's identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracerPayload {
    /// Container id (origin detection).
    pub container_id: Str,
    /// Tracer language (`python`, …).
    pub language_name: Str,
    /// Language version.
    pub language_version: Str,
    /// Tracer version.
    pub tracer_version: Str,
    /// Tracer runtime id.
    pub runtime_id: Str,
    /// Trace chunks.
    pub chunks: Vec<TraceChunk>,
    /// Payload-wide tags.
    pub tags: Tags<Str>,
    /// Env.
    pub env: Str,
    /// Hostname.
    pub hostname: Str,
    /// Application version.
    pub app_version: Str,
}

impl TracerPayload {
    /// Total number of spans in all chunks.
    pub fn span_count(&self) -> usize {
        self.chunks.iter().map(|c| c.spans.len()).sum()
    }
}
