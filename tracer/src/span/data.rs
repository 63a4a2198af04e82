//! The finished-span model, as Datadog defines a span.

use smallvec::SmallVec;

use super::links::{SpanEvent, SpanLink};
use super::{SpanContext, SpanId, Str, TraceId};

/// String tags (`meta`); the first eight live inline in the span, without allocation.
pub(crate) type Meta = SmallVec<[(Str, Str); 8]>;
/// Numeric tags (`metrics`); the first two live inline.
pub(crate) type Metrics = SmallVec<[(Str, f64); 2]>;

/// Spans travel boxed: moving a pointer instead of ~600 bytes at every hand-over, and the
/// boxes are recycled by the export worker (see `SpanPool`), so steady state allocates
/// nothing per span.
pub(crate) type SpanBox = Box<SpanData>;

/// One span as recorded on the application thread.
///
/// Fields the tracer can derive later (the default service, `env`, `version`,
/// `language`, `runtime-id`, sampling tags) are *not* stored here: the export worker adds
/// them while encoding, off the application thread.
#[derive(Clone, Debug)]
pub struct SpanData {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: SpanId,
    /// `None`: the tracer's service (`DD_SERVICE`).
    pub(crate) service: Option<Str>,
    pub(crate) name: Str,
    /// `None`: the operation name.
    pub(crate) resource: Option<Str>,
    pub(crate) span_type: Option<Str>,
    /// Nanoseconds since the unix epoch.
    pub(crate) start: i64,
    /// Nanoseconds.
    pub(crate) duration: i64,
    pub(crate) error: bool,
    /// Service-entry span: local root, or its service differs from its parent's.
    pub(crate) top_level: bool,
    /// Stats are computed for it even when not top-level.
    pub(crate) measured: bool,
    /// First span of the trace in this process (no parent, or a remote parent).
    pub(crate) local_root: bool,
    pub(crate) meta: Meta,
    pub(crate) metrics: Metrics,
    /// Links to other spans (`span_links`).
    pub(crate) links: Vec<SpanLink>,
    /// Span events (`span_events`, or the `events` tag).
    pub(crate) events: Vec<SpanEvent>,
    /// Only while a builder holds the span: the explicit parent it was given.
    pub(crate) explicit_parent: Option<SpanContext>,
}

impl SpanData {
    pub(crate) fn new(trace_id: TraceId, span_id: SpanId, parent_id: SpanId, name: Str) -> Self {
        Self {
            trace_id,
            span_id,
            parent_id,
            service: None,
            name,
            resource: None,
            span_type: None,
            start: 0,
            duration: 0,
            error: false,
            top_level: false,
            measured: false,
            local_root: false,
            meta: Meta::new(),
            metrics: Metrics::new(),
            links: Vec::new(),
            events: Vec::new(),
            explicit_parent: None,
        }
    }

    /// Clears the span for reuse, keeping any heap capacity its tag lists grew.
    pub(crate) fn reset(&mut self, name: Str) {
        self.trace_id = TraceId::default();
        self.span_id = SpanId::default();
        self.parent_id = SpanId::default();
        self.service = None;
        self.name = name;
        self.resource = None;
        self.span_type = None;
        self.start = 0;
        self.duration = 0;
        self.error = false;
        self.top_level = false;
        self.measured = false;
        self.local_root = false;
        // Tags that are all literals in inline storage own nothing: the lists are
        // emptied without running a destructor per entry (a call per tag pair, the
        // largest part of a reset otherwise).
        let literal = |s: &Str| s.as_static().is_some();
        if !self.meta.spilled() && self.meta.iter().all(|(k, v)| literal(k) && literal(v)) {
            std::mem::forget(std::mem::take(&mut self.meta));
        } else {
            self.meta.clear();
        }
        if !self.metrics.spilled() && self.metrics.iter().all(|(k, _)| literal(k)) {
            std::mem::forget(std::mem::take(&mut self.metrics));
        } else {
            self.metrics.clear();
        }
        self.links.clear();
        self.events.clear();
        if self.explicit_parent.is_some() {
            // (Only then: dropping a `None` is an out-of-line call.)
            self.explicit_parent = None;
        }
    }

    /// Whether the span holds anything on the heap besides its tag lists' capacity (a
    /// non-literal string, links, events): such a span is cleared as soon as it is
    /// encoded, so that the pool never keeps request data alive. Other spans go back to
    /// the pool as they are and are cleared by the thread that takes them next (the
    /// export thread then only reads them: no cache line of theirs comes back to the
    /// application core dirty).
    pub(crate) fn holds_heap(&self) -> bool {
        let heap = |s: &Str| s.as_static().is_none();
        let opt = |s: &Option<Str>| s.as_ref().is_some_and(heap);
        heap(&self.name)
            || opt(&self.service)
            || opt(&self.resource)
            || opt(&self.span_type)
            || !self.links.is_empty()
            || !self.events.is_empty()
            || self.explicit_parent.is_some()
            || self.meta.iter().any(|(k, v)| heap(k) || heap(v))
            || self.metrics.iter().any(|(k, _)| heap(k))
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span id (zero for a root).
    pub fn parent_id(&self) -> SpanId {
        self.parent_id
    }

    /// The service set on this span, `None` when it uses the tracer's service.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The operation name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource (the operation name when none was set).
    pub fn resource(&self) -> &str {
        self.resource.as_deref().unwrap_or(&self.name)
    }

    /// The span type (`web`, `http`, `sql`, …), empty when unset.
    pub fn span_type(&self) -> &str {
        self.span_type.as_deref().unwrap_or("")
    }

    /// Start, nanoseconds since the unix epoch.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Duration in nanoseconds.
    pub fn duration(&self) -> i64 {
        self.duration
    }

    /// Whether the span is an error.
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// Whether the span is a service-entry (top-level) span.
    pub fn is_top_level(&self) -> bool {
        self.top_level
    }

    /// A string tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric tag.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| *v)
    }

    /// All string tags, in insertion order.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Links to other spans.
    pub fn links(&self) -> &[SpanLink] {
        &self.links
    }

    /// Span events, in the order they were added.
    pub fn events(&self) -> &[SpanEvent] {
        &self.events
    }

    pub(crate) fn push_link(&mut self, link: SpanLink) {
        if self.links.len() < super::links::MAX_LINKS {
            self.links.push(link);
        }
    }

    pub(crate) fn push_event(&mut self, event: SpanEvent) {
        if self.events.len() < super::links::MAX_EVENTS {
            self.events.push(event);
        }
    }

    /// All numeric tags, in insertion order.
    pub fn metrics(&self) -> impl Iterator<Item = (&str, f64)> {
        self.metrics.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Appends a tag without looking for an earlier value of the key (the builder's fast
    /// path); the encoder keeps the last value of a repeated key.
    #[inline]
    pub(crate) fn push_meta(&mut self, key: Str, value: Str) {
        self.meta.push((key, value));
    }

    /// Appends a numeric tag; as [`SpanData::push_meta`].
    #[inline]
    pub(crate) fn push_metric(&mut self, key: Str, value: f64) {
        self.metrics.push((key, value));
    }

    pub(crate) fn set_meta(&mut self, key: Str, value: Str) {
        match self.meta.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.meta.push((key, value)),
        }
    }

    pub(crate) fn set_metric(&mut self, key: Str, value: f64) {
        match self.metrics.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metrics.push((key, value)),
        }
    }
}
