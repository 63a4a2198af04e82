//! The span model the decoders produce and the processing stages transform.
//!
//! Strings are [`Str`]: views into the request body (`'a`), so decoding a payload copies no
//! string and touches no reference count; a stage that rewrites a value stores an owned one.
//! [`OwnedPayload`] keeps a decoded payload together with the body it borrows from, so it can
//! travel to the next stage.

mod owned;
mod text;

use std::borrow::Cow;

pub use owned::OwnedPayload;
pub use text::Str;

/// An ordered list of `key → value` pairs (tracers send ~5–30 tags per span, so a vector beats
/// a hash map for both building and lookup). Later duplicates win on lookup, like a map.
pub type Tags<'a, V> = Vec<(Str<'a>, V)>;

/// Raw bytes borrowed from the body (or owned).
pub type RawBytes<'a> = Cow<'a, [u8]>;

/// Returns the last value stored under `key`.
pub fn tag_get<'t, 'a, V>(tags: &'t [(Str<'a>, V)], key: &str) -> Option<&'t V> {
    tags.iter().rev().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

/// Sets `key` to `value`, replacing every existing entry for it.
pub fn tag_set<'a, V>(tags: &mut Tags<'a, V>, key: &str, value: V) {
    tags.retain(|(k, _)| k.as_str() != key);
    tags.push((Str::from(key.to_owned()), value));
}

/// Removes every entry for `key`; returns whether one existed.
pub fn tag_remove<V>(tags: &mut Tags<'_, V>, key: &str) -> bool {
    let before = tags.len();
    tags.retain(|(k, _)| k.as_str() != key);
    before != tags.len()
}

/// One span, with the wire field names of section 2.1 of the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span<'a> {
    /// Service name.
    pub service: Str<'a>,
    /// Operation name.
    pub name: Str<'a>,
    /// Resource (e.g. `GET /api/apm`, a SQL query).
    pub resource: Str<'a>,
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
    pub meta: Tags<'a, Str<'a>>,
    /// Numeric tags.
    pub metrics: Tags<'a, f64>,
    /// Span type (`web`, `sql`, `redis`, …); drives obfuscation.
    pub r#type: Str<'a>,
    /// `meta_struct`: msgpack blobs kept as received.
    pub meta_struct: Tags<'a, RawBytes<'a>>,
    /// `span_links` and `span_events`, kept as their raw msgpack (or JSON) encoding.
    pub raw_fields: Tags<'a, RawBytes<'a>>,
}

impl Span<'_> {
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
pub struct TraceChunk<'a> {
    /// Sampling priority ([`PRIORITY_NONE`] when unknown).
    pub priority: i32,
    /// Origin (`synthetics`, `lambda`, …).
    pub origin: Str<'a>,
    /// The spans.
    pub spans: Vec<Span<'a>>,
    /// Chunk tags (e.g. `_dd.p.dm`).
    pub tags: Tags<'a, Str<'a>>,
    /// Whether the tracer already dropped it.
    pub dropped_trace: bool,
}

impl<'a> TraceChunk<'a> {
    /// A chunk of `spans` with no priority, origin or tags (v0.3–v0.5 payloads).
    pub fn from_spans(spans: Vec<Span<'a>>) -> Self {
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
#[derive(Debug, Clone, Default, PartialEq, yoke::Yokeable)]
pub struct TracerPayload<'a> {
    /// Container id (origin detection).
    pub container_id: Str<'a>,
    /// Tracer language (`python`, …).
    pub language_name: Str<'a>,
    /// Language version.
    pub language_version: Str<'a>,
    /// Tracer version.
    pub tracer_version: Str<'a>,
    /// Tracer runtime id.
    pub runtime_id: Str<'a>,
    /// Trace chunks.
    pub chunks: Vec<TraceChunk<'a>>,
    /// Payload-wide tags.
    pub tags: Tags<'a, Str<'a>>,
    /// Env.
    pub env: Str<'a>,
    /// Hostname.
    pub hostname: Str<'a>,
    /// Application version.
    pub app_version: Str<'a>,
}

impl TracerPayload<'_> {
    /// Total number of spans in all chunks.
    pub fn span_count(&self) -> usize {
        self.chunks.iter().map(|c| c.spans.len()).sum()
    }
}
