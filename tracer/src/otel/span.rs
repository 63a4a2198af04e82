//! [`Span`]: an OpenTelemetry span recorded by this tracer.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{self as otel, SpanKind, Status};

use super::mapping::{self, Pending};
use super::registry;
use crate::clock;

/// An OpenTelemetry span (made by [`super::Tracer`]): attributes, status and exception
/// events go straight into one of this tracer's spans, mapped to Datadog's fields when it
/// ends (see the [module docs](super)). Ends when dropped if not ended before.
pub struct Span {
    span: crate::Span,
    otel_ctx: otel::SpanContext,
    kind: SpanKind,
    status: Status,
    pending: Pending,
    /// In the registry of open spans (it was asked for its span context).
    registered: AtomicBool,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("span", &self.span)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Span {
    pub(super) fn new(span: crate::Span, kind: SpanKind, pending: Pending) -> Self {
        let otel_ctx = if span.is_recording() {
            otel::SpanContext::new(
                otel::TraceId::from(span.trace_id().to_u128()),
                otel::SpanId::from(span.span_id().to_u64()),
                otel::TraceFlags::SAMPLED,
                false,
                otel::TraceState::NONE,
            )
        } else {
            otel::SpanContext::NONE
        };
        Self {
            span,
            otel_ctx,
            kind,
            status: Status::Unset,
            pending,
            registered: AtomicBool::new(false),
        }
    }

    /// The span of this tracer that records this one (for the native API: its context,
    /// its children).
    pub fn inner(&self) -> &crate::Span {
        &self.span
    }

    fn register(&self) {
        if self.registered.load(Ordering::Relaxed) {
            return;
        }
        let (Some(ctx), Some(data)) = (self.span.context(), self.span.data()) else {
            return;
        };
        if registry::insert(ctx, data.parent_id) {
            self.registered.store(true, Ordering::Relaxed);
        }
    }

    fn end_at(&mut self, end: Option<u64>) {
        if !self.span.is_recording() {
            return;
        }
        if self.registered.swap(false, Ordering::Relaxed) {
            registry::remove(self.span.span_id());
        }
        let mut span = std::mem::replace(&mut self.span, crate::Span::noop());
        if let Some(data) = span.data_mut() {
            mapping::finish(data, &self.kind, &self.status, &mut self.pending);
        }
        match end {
            Some(t) => span.finish_at_mono(t),
            None => span.finish(),
        }
    }
}

impl otel::Span for Span {
    fn add_event_with_timestamp<T>(&mut self, name: T, timestamp: SystemTime, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        if !self.span.is_recording() {
            return;
        }
        let name = name.into();
        // An exception also becomes the span's error tags.
        if name.eq_ignore_ascii_case("exception") {
            mapping::exception_event(&mut self.pending, attributes.clone());
        }
        let time = clock::unix_nanos(clock::from_system_time(timestamp));
        self.span.push_event(mapping::event(&name, time, attributes));
    }

    fn record_error(&mut self, err: &dyn std::error::Error) {
        if !self.span.is_recording() {
            return;
        }
        let message = err.to_string();
        let stack = crate::span::error::with_causes(message.clone(), err, crate::span::error::CAUSED_BY);
        self.pending.exception = mapping::Exception {
            message: Some(message.into()),
            kind: None,
            stack: Some(stack.into()),
        };
    }

    fn span_context(&self) -> &otel::SpanContext {
        self.register();
        &self.otel_ctx
    }

    fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(data) = self.span.data_mut() {
            mapping::apply_attribute(data, &mut self.pending, attribute, true);
        }
    }

    fn set_status(&mut self, status: Status) {
        // OpenTelemetry: Ok is final; Error replaces Unset or an earlier Error; Unset is
        // ignored.
        match (&self.status, &status) {
            (Status::Ok, _) | (_, Status::Unset) => {}
            _ => self.status = status,
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.span.set_name(new_name.into());
    }

    fn add_link(&mut self, span_context: otel::SpanContext, attributes: Vec<KeyValue>) {
        if span_context.is_valid() {
            self.span.push_link(mapping::link(&span_context, attributes));
        }
    }

    fn end(&mut self) {
        self.end_at(None);
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.end_at(Some(clock::from_system_time(timestamp)));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end_at(None);
    }
}
