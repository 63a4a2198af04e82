//! [`TracerProvider`] and [`Tracer`]: the OpenTelemetry entry points.

use std::sync::Arc;

use opentelemetry::trace::{self as otel, SpanBuilder, SpanKind, TraceContextExt};
use opentelemetry::{Context, InstrumentationScope};

use super::mapping::{self, Pending};
use super::{Span, context_of};
use crate::export::on_export_thread;
use crate::span::intern::permanent;
use crate::span::native_current_context;
use crate::{Str, clock};

#[derive(Debug)]
struct ProviderInner {
    tracer: crate::Tracer,
    /// The `service.name` resource attribute, when it differs from the tracer's service.
    service: Option<Str>,
}

/// An OpenTelemetry [`TracerProvider`](otel::TracerProvider) whose spans are recorded by
/// a [`crate::Tracer`]: they share its buffer, sampling and export with native spans.
///
/// ```no_run
/// use opentelemetry::trace::{Tracer as _, TracerProvider as _};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tracer = tracer::Tracer::from_env()?;
/// let provider = tracer::otel::TracerProvider::new(tracer);
/// opentelemetry::global::set_tracer_provider(provider.clone());
/// provider.tracer("my-library").in_span("work", |_cx| { /* ... */ });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TracerProvider {
    inner: Arc<ProviderInner>,
}

impl TracerProvider {
    /// A provider recording into `tracer`.
    pub fn new(tracer: crate::Tracer) -> Self {
        // From now on a native span's parent is the innermost of our current span and
        // OpenTelemetry's current span.
        crate::span::set_current_hook(super::innermost_current);
        Self {
            inner: Arc::new(ProviderInner { tracer, service: None }),
        }
    }

    /// Sets the service of spans that do not name one (OpenTelemetry's `service.name`
    /// resource attribute); by default the tracer's (`DD_SERVICE`).
    #[must_use]
    pub fn with_service(self, service: impl Into<Str>) -> Self {
        Self {
            inner: Arc::new(ProviderInner {
                tracer: self.inner.tracer,
                service: Some(service.into().into_shared()),
            }),
        }
    }
}

impl otel::TracerProvider for TracerProvider {
    type Tracer = Tracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> Tracer {
        // Static copies: cloned onto every span without touching a reference count.
        let name = (!scope.name().is_empty()).then(|| permanent(scope.name()));
        let version = scope.version().filter(|v| !v.is_empty()).map(permanent);
        Tracer {
            provider: Arc::clone(&self.inner),
            scope_name: name,
            scope_version: version,
        }
    }
}

/// An OpenTelemetry [`Tracer`](otel::Tracer) of a [`TracerProvider`].
#[derive(Debug, Clone)]
pub struct Tracer {
    provider: Arc<ProviderInner>,
    scope_name: Option<Str>,
    scope_version: Option<Str>,
}

/// Where a new span's parent comes from.
enum ParentFrom<'a> {
    /// The caller's current span: the innermost of the current OpenTelemetry span and
    /// this tracer's current span.
    Current,
    /// An explicit OpenTelemetry context; without a span in it, this tracer's current
    /// span (if any).
    Context(&'a Context),
}

impl Tracer {
    fn start_span(&self, builder: SpanBuilder, parent: ParentFrom<'_>) -> Span {
        let SpanBuilder {
            span_kind,
            name,
            start_time,
            attributes,
            events,
            links,
            ..
        } = builder;
        let kind = span_kind.unwrap_or(SpanKind::Internal);
        let mut pending = Pending::default();
        if on_export_thread() {
            return Span::new(crate::Span::noop(), kind, pending);
        }
        let parent_ctx = match parent {
            ParentFrom::Current => super::innermost_current(),
            ParentFrom::Context(cx) => {
                if cx.has_active_span() {
                    context_of(cx.span().span_context())
                } else {
                    native_current_context()
                }
            }
        };
        let mut b = self.provider.tracer.span(Str::from(name)).with_parent(parent_ctx);
        if let Some(t) = start_time {
            b = b.start_at_mono(clock::from_system_time(t));
        }
        {
            let data = b.data_mut();
            if let Some(attributes) = attributes {
                for kv in attributes {
                    mapping::apply_attribute(data, &mut pending, kv, false);
                }
            }
            if data.service.is_none() {
                data.service.clone_from(&self.provider.service);
            }
            if let Some(n) = &self.scope_name {
                data.push_meta(Str::from_static("otel.scope.name"), n.clone());
            }
            if let Some(v) = &self.scope_version {
                data.push_meta(Str::from_static("otel.scope.version"), v.clone());
            }
        }
        if let Some(links) = links {
            for link in links {
                if link.span_context.is_valid() {
                    b.data_mut()
                        .push_link(mapping::link(&link.span_context, link.attributes));
                }
            }
        }
        let mut span = b.start();
        for event in events.unwrap_or_default() {
            if event.name.eq_ignore_ascii_case("exception") {
                mapping::exception_event(&mut pending, event.attributes.clone());
            }
            let time = clock::unix_nanos(clock::from_system_time(event.timestamp));
            span.push_event(mapping::event(&event.name, time, event.attributes));
        }
        Span::new(span, kind, pending)
    }
}

impl otel::Tracer for Tracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        self.start_span(builder, ParentFrom::Context(parent_cx))
    }

    fn start<T>(&self, name: T) -> Span
    where
        T: Into<std::borrow::Cow<'static, str>>,
    {
        self.start_span(SpanBuilder::from_name(name), ParentFrom::Current)
    }

    fn build(&self, builder: SpanBuilder) -> Span {
        self.start_span(builder, ParentFrom::Current)
    }
}
