//! Span links and span events (the OpenTelemetry concepts, as Datadog spans carry them).

use super::{SpanContext, SpanId, TraceId};

/// A typed attribute of a span event (links keep strings only, flattened).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// An array of scalars (nested arrays are flattened to strings).
    Array(Vec<AttributeValue>),
}

impl AttributeValue {
    /// The value as a string (how link attributes and `events` JSON tags carry scalars).
    pub fn to_string_value(&self) -> String {
        match self {
            Self::String(s) => s.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Double(d) => d.to_string(),
            Self::Array(a) => a.iter().map(Self::to_string_value).collect::<Vec<_>>().join(","),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}
impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for AttributeValue {
    fn from(v: i32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<u32> for AttributeValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<f64> for AttributeValue {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}
impl<T: Into<AttributeValue>> From<Vec<T>> for AttributeValue {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

/// A link from a span to another span (of this trace or another).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    /// String attributes; arrays are flattened to `key.0`, `key.1`, … as Datadog does.
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) tracestate: Option<String>,
    /// W3C trace flags (1: sampled), when known.
    pub(crate) flags: Option<u32>,
}

impl SpanLink {
    /// A link to `trace_id`/`span_id` with attributes (arrays flattened to `key.N`).
    pub fn new<K, V>(trace_id: TraceId, span_id: SpanId, attributes: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<AttributeValue>,
    {
        let mut flat = Vec::new();
        for (k, v) in attributes {
            flatten(k.into(), v.into(), &mut flat);
        }
        Self {
            trace_id,
            span_id,
            attributes: flat,
            tracestate: None,
            flags: None,
        }
    }

    /// A link to the span of `ctx`, with its sampling decision as the flags when taken.
    pub fn to_context<K, V>(ctx: &SpanContext, attributes: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<AttributeValue>,
    {
        let mut link = Self::new(ctx.trace_id, ctx.span_id, attributes);
        link.flags = ctx.trace.decision.get().map(|d| u32::from(d.priority > 0));
        link
    }

    /// Sets the W3C `tracestate` of the linked context.
    #[must_use]
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// Sets the W3C trace flags of the linked context.
    #[must_use]
    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = Some(flags);
        self
    }

    /// The linked trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The linked span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The (flattened) attributes.
    pub fn attributes(&self) -> &[(String, String)] {
        &self.attributes
    }

    /// The linked context's `tracestate`.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The linked context's trace flags.
    pub fn flags(&self) -> Option<u32> {
        self.flags
    }
}

fn flatten(key: String, value: AttributeValue, out: &mut Vec<(String, String)>) {
    match value {
        AttributeValue::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                flatten(format!("{key}.{i}"), v, out);
            }
        }
        scalar => out.push((key, scalar.to_string_value())),
    }
}

/// Something that happened during a span, at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub(crate) name: String,
    /// Nanoseconds since the unix epoch.
    pub(crate) time_unix_nano: i64,
    pub(crate) attributes: Vec<(String, AttributeValue)>,
}

impl SpanEvent {
    /// An event at `time_unix_nano`.
    pub fn new<K, V>(name: impl Into<String>, time_unix_nano: i64, attributes: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<AttributeValue>,
    {
        Self {
            name: name.into(),
            time_unix_nano,
            attributes: attributes.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Nanoseconds since the unix epoch.
    pub fn time_unix_nano(&self) -> i64 {
        self.time_unix_nano
    }

    /// The attributes.
    pub fn attributes(&self) -> &[(String, AttributeValue)] {
        &self.attributes
    }
}

/// Links and events kept per span at most (later ones are dropped, counted in no tag:
/// they are programming errors, not traffic).
pub(crate) const MAX_LINKS: usize = 128;
/// See [`MAX_LINKS`].
pub(crate) const MAX_EVENTS: usize = 128;
