//! `SpanBuilder`: everything known before a span starts.

use std::sync::OnceLock;
use std::time::Instant;

use super::Span;
use super::guard::{ActiveSpan, TraceSlot};
use crate::clock;
use crate::core::TracerInner;
use crate::health::AppCounters;
use crate::span::{SpanBox, SpanContext, SpanData, SpanId, Str, TraceId, TraceState, current_context};

#[derive(Clone, Copy)]
enum Parent {
    /// The current span of this thread/task, if any.
    Current,
    /// Always a new trace.
    Root,
    /// An explicit parent, kept in `SpanData::explicit_parent` so the builder stays small
    /// (it moves at every chained call).
    Explicit,
}

/// Configures a span before it starts; [`SpanBuilder::start`] returns the [`Span`].
#[must_use = "a span builder does nothing until `.start()`"]
pub struct SpanBuilder {
    tracer: &'static TracerInner,
    data: SpanBox,
    parent: Parent,
    /// Monotonic start, when not "now".
    start: Option<u64>,
    /// A root creates its trace's shared state at start rather than on first need (the
    /// caller will ask for its context at once, e.g. the `tracing` Layer's `on_enter`).
    eager_trace: bool,
}

impl std::fmt::Debug for SpanBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanBuilder")
            .field("name", &self.data.name)
            .finish_non_exhaustive()
    }
}

impl SpanBuilder {
    pub(crate) fn new(tracer: &'static TracerInner, name: Str) -> Self {
        Self {
            tracer,
            data: tracer.pool.take(name),
            parent: Parent::Current,
            start: None,
            eager_trace: false,
        }
    }

    /// Sets the service (children inherit it). Defaults to the parent's service, or the
    /// tracer's (`DD_SERVICE`) for a root.
    pub fn service(mut self, service: impl Into<Str>) -> Self {
        self.data.service = Some(service.into().into_shared());
        self
    }

    /// Sets the resource (e.g. `GET /users/{id}`, a SQL query). Defaults to the name.
    #[inline]
    pub fn resource(mut self, resource: impl Into<Str>) -> Self {
        self.data.resource = Some(resource.into());
        self
    }

    /// Sets the span type (`web`, `http`, `sql`, `cache`, `custom`, …).
    #[inline]
    pub fn span_type(mut self, span_type: impl Into<Str>) -> Self {
        self.data.span_type = Some(span_type.into());
        self
    }

    /// Adds a string tag (`meta`).
    #[inline]
    pub fn tag(mut self, key: impl Into<Str>, value: impl Into<Str>) -> Self {
        self.data.push_meta(key.into(), value.into());
        self
    }

    /// Adds a numeric tag (`metrics`).
    #[inline]
    pub fn metric(mut self, key: impl Into<Str>, value: f64) -> Self {
        self.data.push_metric(key.into(), value);
        self
    }

    /// Links the span to the span of `ctx` from the start (OpenTelemetry: links given at
    /// creation are the ones samplers can see), with attributes.
    pub fn link<K, V>(mut self, ctx: &SpanContext, attributes: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<crate::span::AttributeValue>,
    {
        self.data_mut()
            .push_link(crate::span::SpanLink::to_context(ctx, attributes));
        self
    }

    /// Marks the span as measured: the agent computes stats for it even when it is not a
    /// service-entry span (`_dd.measured`).
    pub fn measured(mut self) -> Self {
        self.data.measured = true;
        self
    }

    /// Makes the span a child of `parent` (a local span's context or one extracted from
    /// incoming headers).
    pub fn child_of(mut self, parent: &SpanContext) -> Self {
        self.data.explicit_parent = Some(parent.clone());
        self.parent = Parent::Explicit;
        self
    }

    /// Like [`SpanBuilder::child_of`], taking the context by value.
    pub fn with_parent(mut self, parent: Option<SpanContext>) -> Self {
        self.parent = match parent {
            Some(p) => {
                self.data.explicit_parent = Some(p);
                Parent::Explicit
            }
            None => Parent::Root,
        };
        self
    }

    /// Starts a new trace even if a span is current.
    pub fn root(mut self) -> Self {
        self.parent = Parent::Root;
        self
    }

    /// Uses `start` instead of now as the start time.
    pub fn start_at(mut self, start: Instant) -> Self {
        self.start = Some(clock::from_instant(start));
        self
    }

    /// The span's data before it starts (the `tracing` Layer and the OpenTelemetry bridge
    /// record fields straight into it).
    #[cfg_attr(not(any(feature = "tracing-layer", feature = "opentelemetry")), allow(dead_code))]
    pub(crate) fn data_mut(&mut self) -> &mut SpanData {
        &mut self.data
    }

    /// A root's trace state is made at start: cheaper than on first need when its context
    /// is certainly needed.
    #[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
    pub(crate) fn eager_trace(mut self) -> Self {
        self.eager_trace = true;
        self
    }

    /// Uses a monotonic reading (see `clock`) as the start time.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn start_at_mono(mut self, start: u64) -> Self {
        self.start = Some(start);
        self
    }

    /// Starts the span. It finishes when dropped (or on [`Span::finish`]).
    pub fn start(self) -> Span {
        let tracer = self.tracer;
        if !tracer.config.enabled {
            return Span::noop();
        }
        let start = self.start.unwrap_or_else(clock::now);
        let mut data = self.data;
        let explicit = data.explicit_parent.take();
        data.start = clock::unix_nanos(start);
        data.span_id = SpanId::generate();
        let parent = match self.parent {
            Parent::Current => current_context(),
            Parent::Root => None,
            Parent::Explicit => explicit,
        };
        let trace = match parent {
            None => {
                let secs = u64::try_from(data.start / 1_000_000_000).unwrap_or(0);
                data.trace_id = TraceId::generate(secs);
                data.local_root = true;
                data.top_level = true;
                if self.eager_trace {
                    TraceSlot::Joined(TraceState::local_root())
                } else {
                    TraceSlot::Root(OnceLock::new())
                }
            }
            Some(parent) => {
                if !parent.trace.start_span(tracer.config.max_spans_per_trace) {
                    tracer.span_over_trace_cap();
                    return Span::noop();
                }
                data.trace_id = parent.trace_id;
                data.parent_id = parent.span_id;
                if data.service.is_none() {
                    data.service = parent.service.clone();
                }
                let service_changed = match (&data.service, &parent.service) {
                    (None, None) => false,
                    (mine, theirs) => {
                        mine.as_deref().unwrap_or(&tracer.service) != theirs.as_deref().unwrap_or(&tracer.service)
                    }
                };
                data.local_root = parent.remote;
                data.top_level = parent.remote || service_changed;
                // The context is ours: move its reference to the trace into the span.
                TraceSlot::Joined(parent.trace)
            }
        };
        AppCounters::bump(&tracer.counters.app.local().spans_created, 1);
        Span::from_active(ActiveSpan {
            tracer,
            data,
            start,
            trace,
        })
    }
}
