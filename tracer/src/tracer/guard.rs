//! `Span`: a started span; finishes when dropped.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use smallvec::SmallVec;

use super::SpanBuilder;
use crate::clock;
use crate::core::TracerInner;
use crate::span::{Entered, SpanBox, SpanContext, SpanData, SpanId, Str, TraceId, TraceState};

/// A span's reference to its trace's shared state.
pub(crate) enum TraceSlot {
    /// A child (or the first local span of a remote trace, or a root whose builder made
    /// the state at start): the state exists.
    Joined(Arc<TraceState>),
    /// A local root: the state is created on first need (a child, or `Span::context`).
    Root(OnceLock<Arc<TraceState>>),
}

impl TraceSlot {
    fn get(&self) -> &Arc<TraceState> {
        match self {
            Self::Joined(t) => t,
            Self::Root(cell) => cell.get_or_init(TraceState::local_root),
        }
    }

    fn into_inner(self) -> Option<Arc<TraceState>> {
        match self {
            Self::Joined(t) => Some(t),
            Self::Root(cell) => cell.into_inner(),
        }
    }
}

pub(crate) struct ActiveSpan {
    pub(crate) tracer: &'static TracerInner,
    pub(crate) data: SpanBox,
    /// Monotonic nanoseconds.
    pub(crate) start: u64,
    /// The trace's shared state; for a local root, created on first need.
    pub(crate) trace: TraceSlot,
}

/// A started span. Dropping it finishes it (records the duration and hands it to the
/// buffer); nothing here blocks or panics.
///
/// A span of a disabled tracer, or one over the per-trace span cap, is a no-op: its
/// setters do nothing and it is never sent.
#[must_use = "a span finishes when dropped: bind it (`let _span = …`) to time a scope"]
pub struct Span {
    active: Option<ActiveSpan>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.active {
            Some(a) => f
                .debug_struct("Span")
                .field("name", &a.data.name)
                .field("trace_id", &a.data.trace_id)
                .field("span_id", &a.data.span_id)
                .finish_non_exhaustive(),
            None => f.write_str("Span(no-op)"),
        }
    }
}

impl Span {
    pub(crate) fn from_active(active: ActiveSpan) -> Self {
        Self { active: Some(active) }
    }

    /// A span that records nothing.
    pub fn noop() -> Self {
        Self { active: None }
    }

    /// Whether this span records anything.
    pub fn is_recording(&self) -> bool {
        self.active.is_some()
    }

    /// The trace id (zero for a no-op span).
    pub fn trace_id(&self) -> TraceId {
        self.active.as_ref().map(|a| a.data.trace_id).unwrap_or_default()
    }

    /// The span id (zero for a no-op span).
    pub fn span_id(&self) -> SpanId {
        self.active.as_ref().map(|a| a.data.span_id).unwrap_or_default()
    }

    /// This span's context, to pass explicitly to children (also across threads), or
    /// `None` for a no-op span.
    pub fn context(&self) -> Option<SpanContext> {
        let a = self.active.as_ref()?;
        let trace = a.trace.get();
        Some(SpanContext {
            trace_id: a.data.trace_id,
            span_id: a.data.span_id,
            service: a.data.service.clone(),
            trace: Arc::clone(trace),
            remote: false,
        })
    }

    /// A builder for a child of this span.
    pub fn child(&self, name: impl Into<Str>) -> SpanBuilder {
        match &self.active {
            Some(a) => SpanBuilder::new(a.tracer, name.into()).with_parent(self.context()),
            None => super::SpanBuilder::new(TracerInner::noop(), name.into()).root(),
        }
    }

    /// Makes this span the current one on this thread until the guard drops: spans
    /// started meanwhile without an explicit parent become its children.
    pub fn enter(&self) -> Entered {
        Entered::new(self.context())
    }

    /// Runs `f` with this span current.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }

    pub(crate) fn data_mut(&mut self) -> Option<&mut SpanData> {
        self.active.as_mut().map(|a| &mut *a.data)
    }

    /// The recorded data so far (`None` for a no-op span).
    pub fn data(&self) -> Option<&SpanData> {
        self.active.as_ref().map(|a| &*a.data)
    }

    /// Links this span to the span of `ctx` (of this trace or another: a batch job's
    /// inputs, a message's producer), with attributes (arrays flattened to `key.N`).
    pub fn add_link<K, V>(&mut self, ctx: &SpanContext, attributes: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<crate::span::AttributeValue>,
    {
        if let Some(d) = self.data_mut() {
            d.push_link(crate::span::SpanLink::to_context(ctx, attributes));
        }
    }

    /// Adds a link built by hand (e.g. to a context from another tracer).
    pub fn push_link(&mut self, link: crate::span::SpanLink) {
        if let Some(d) = self.data_mut() {
            d.push_link(link);
        }
    }

    /// Records an event (something that happened at this moment) with typed attributes.
    pub fn add_event<K, V>(&mut self, name: impl Into<String>, attributes: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<crate::span::AttributeValue>,
    {
        if let Some(d) = self.data_mut() {
            let now = crate::clock::unix_nanos(crate::clock::now());
            d.push_event(crate::span::SpanEvent::new(name, now, attributes));
        }
    }

    /// Records an event at a given time (nanoseconds since the unix epoch).
    pub fn push_event(&mut self, event: crate::span::SpanEvent) {
        if let Some(d) = self.data_mut() {
            d.push_event(event);
        }
    }

    /// Sets a string tag, replacing any previous value of the key.
    pub fn set_tag(&mut self, key: impl Into<Str>, value: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.set_meta(key.into(), value.into());
        }
    }

    /// Sets a numeric tag, replacing any previous value of the key.
    pub fn set_metric(&mut self, key: impl Into<Str>, value: f64) {
        if let Some(d) = self.data_mut() {
            d.set_metric(key.into(), value);
        }
    }

    /// Sets the resource.
    pub fn set_resource(&mut self, resource: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.resource = Some(resource.into());
        }
    }

    /// Sets the operation name.
    pub fn set_name(&mut self, name: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.name = name.into();
        }
    }

    /// Sets the span type.
    pub fn set_type(&mut self, span_type: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.span_type = Some(span_type.into());
        }
    }

    /// Sets the service. Whether the span is a service entry (`_dd.top_level`) was decided
    /// when it started; prefer [`SpanBuilder::service`].
    pub fn set_service(&mut self, service: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.service = Some(service.into().into_shared());
        }
    }

    /// Marks the span measured (`_dd.measured`).
    pub fn set_measured(&mut self) {
        if let Some(d) = self.data_mut() {
            d.measured = true;
        }
    }

    /// Marks the span as an error (or not), without details.
    pub fn set_error_flag(&mut self, error: bool) {
        if let Some(d) = self.data_mut() {
            d.error = error;
        }
    }

    /// Marks the span as an error with `error.type` (the Rust type name), `error.message`
    /// (its `Display`) and `error.stack` (the error and its chain of sources, one per line),
    /// the three tags Error Tracking needs on a service-entry span.
    pub fn set_error<E: std::error::Error + ?Sized>(&mut self, err: &E) {
        let first = format!("{}: {err}", std::any::type_name::<E>());
        let stack = crate::span::error::with_causes(first, err, crate::span::error::CAUSED_BY);
        self.set_error_tags(std::any::type_name::<E>(), err.to_string(), stack);
    }

    /// Marks the span as an error with explicit `error.type`, `error.message` and `error.stack`.
    pub fn set_error_tags(&mut self, kind: impl Into<Str>, message: impl Into<Str>, stack: impl Into<Str>) {
        if let Some(d) = self.data_mut() {
            d.error = true;
            d.set_meta(Str::from_static("error.type"), kind.into());
            d.set_meta(Str::from_static("error.message"), message.into());
            d.set_meta(Str::from_static("error.stack"), stack.into());
        }
    }

    /// Finishes the span now (dropping it does the same).
    pub fn finish(mut self) {
        self.finish_inner(clock::now());
    }

    /// Finishes the span with an explicit end time.
    pub fn finish_at(mut self, end: Instant) {
        self.finish_inner(clock::from_instant(end));
    }

    /// Finishes the span at a monotonic reading (see `clock`).
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn finish_at_mono(mut self, end: u64) {
        self.finish_inner(end);
    }

    fn finish_inner(&mut self, end: u64) {
        let Some(active) = self.active.take() else {
            return;
        };
        let ActiveSpan {
            tracer,
            mut data,
            start,
            trace,
        } = active;
        data.duration = clock::nanos_between(start, end);
        match trace.into_inner() {
            None => {
                let mut spans = SmallVec::new();
                spans.push(data);
                tracer.emit(spans, None);
            }
            Some(trace) => {
                if let Some(spans) = trace.finish_span(data, tracer.config.partial_flush_min_spans) {
                    tracer.emit(spans, TraceState::release(trace));
                }
            }
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.active.is_some() {
            self.finish_inner(clock::now());
        }
    }
}
