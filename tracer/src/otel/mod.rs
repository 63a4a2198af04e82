//! OpenTelemetry bridge: the `opentelemetry` 0.33 trace API ([`TracerProvider`],
//! [`Tracer`], [`Span`]) recorded by this tracer, so crates instrumented with
//! OpenTelemetry send their spans through the same buffer, sampler and exporter as native
//! spans — without the OpenTelemetry SDK.
//!
//! ```no_run
//! use opentelemetry::KeyValue;
//! use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tracer = tracer::Tracer::from_env()?;
//! let provider = tracer::otel::TracerProvider::new(tracer);
//! let otel = provider.tracer("checkout");
//! let mut span = otel
//!     .span_builder("GET /cart/{id}")
//!     .with_kind(SpanKind::Server)
//!     .with_attributes([KeyValue::new("http.request.method", "GET"), KeyValue::new("http.route", "/cart/{id}")])
//!     .start(&otel);
//! span.set_attribute(KeyValue::new("http.response.status_code", 200));
//! span.end(); // name http.server.request, resource "GET /cart/{id}", type web
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping to Datadog spans
//!
//! The rules of the Datadog agent's OTLP intake (`pkg/trace/traceutil/otel_util.go`,
//! operation and resource names "v2"), applied when the span ends; the first rule that
//! matches wins.
//!
//! | Datadog | from |
//! |---|---|
//! | operation name | attribute `operation.name`; `http.server.request` / `http.client.request` for Server/Client spans with `http.request.method` (or `http.method`); `<db.system>.query` (Client); `<messaging.system>.<messaging.operation>`; `<rpc.system>.server.request` / `.client.request`, `aws.<rpc.service>.request`; `<faas.invoked_provider>.<faas.invoked_name>.invoke`, `<faas.trigger>.invoke`; `graphql.server.request`; `<network.protocol.name>.server.request` / `.client.request`, `server.request` / `client.request`; else the kind: `internal`, `producer`, `consumer` |
//! | resource | attribute `resource.name`; `<METHOD> <http.route>` for Server spans (`_OTHER` → `HTTP`), else the method; `<messaging.operation> <messaging.destination>`; `<rpc.method> <rpc.service>`; `<graphql.operation.type> <graphql.operation.name>`; `db.statement` / `db.query.text` of a database span; else the OpenTelemetry span name |
//! | type | attribute `span.type`; Server → `web`; Client → the database's type (`sql`, `redis`, `mongodb`, …, `db`) or `http`; else `custom` |
//! | service | attribute `service.name`; else [`TracerProvider::with_service`]; else the tracer's (`DD_SERVICE`) |
//! | `span.kind` tag | the span kind, lower case (`server`, `client`, `internal`, …) |
//! | error | attribute `datadog.error`; else status `Error` → error, with `error.message` / `error.type` / `error.stack` from the last `exception` event (or [`record_error`](opentelemetry::trace::Span::record_error)), `error.message` falling back to the status description |
//! | `otel.status_code` tag | `Unset`, `Ok` or `Error` (and `otel.status_description`) |
//! | `http.status_code` tag | from `http.response.status_code` / `http.status_code` |
//! | `_dd.measured` | Client and Producer spans |
//! | tags | string, boolean and array attributes → `meta`; integer and float attributes → `metrics`; `otel.scope.name` / `otel.scope.version` from the instrumentation scope |
//!
//! Overrides in the `datadog.*` namespace are honoured: `datadog.service`, `.name`,
//! `.resource`, `.type`, `.span.kind`, `.error`, `.error.msg`, `.error.type`,
//! `.error.stack`, `.http_status_code`, `.env`, `.version`; other `datadog.*` attributes
//! are dropped. Not recorded: span links, events other than `exception`, the semantic
//! convention key renames of the agent (e.g. `http.response.status_code` also stays a
//! metric), `otel.trace_id` (the 128-bit id travels in `_dd.p.tid`).
//!
//! # Context and parentage
//!
//! A span's parent is the span of the OpenTelemetry `Context` it starts with
//! (`start_with_context`, `build_with_context`, `in_span_with_context`); with `start`,
//! `build` and `in_span`, it is the current span — the innermost of the current
//! OpenTelemetry span and this tracer's current span (a native span, an entered `tracing`
//! span with the `tracing-layer` feature). Native spans started while a bridge span is
//! current in OpenTelemetry's `Context` (e.g. inside `in_span`) become its children. A
//! parent from another process (`with_remote_span_context`, a propagator's extraction)
//! continues its trace; the sampled flag becomes the sampling priority.
//!
//! The OpenTelemetry span context of a bridge span always has the sampled flag: the
//! Datadog sampling decision is taken later (when the trace ends or is propagated). To
//! propagate downstream, inject [`context_of_otel`]'s result with
//! [`crate::propagation::Propagator`] (which takes the decision first) rather than with an
//! OpenTelemetry propagator.
//!
//! A `Context` only carries ids, so open spans that entered a `Context` are kept in a
//! small sharded map by span id until they end. A child of a span that already ended (or
//! of another SDK's span) still gets the right trace and parent ids, in a chunk of its own.

mod mapping;
mod provider;
mod registry;
mod span;
#[cfg(test)]
mod tests;

use opentelemetry::trace::{SpanContext as OtelSpanContext, TraceContextExt};

pub use provider::{Tracer, TracerProvider};
pub use span::Span;

use crate::sampling::{AUTO_KEEP, AUTO_REJECT, Mechanism, SamplingDecision};
use crate::span::native_current_context;
use crate::{SpanContext, SpanId, TraceId};

/// Our context for the span an OpenTelemetry span context names: the open bridge span,
/// or else (a remote parent, another SDK's span, a span that ended) a context continuing
/// its trace under its id.
fn context_of(sc: &OtelSpanContext) -> Option<SpanContext> {
    if !sc.is_valid() {
        return None;
    }
    let trace_id = TraceId::from_u128(u128::from_be_bytes(sc.trace_id().to_bytes()));
    let span_id = SpanId::from_u64(u64::from_be_bytes(sc.span_id().to_bytes()));
    if !sc.is_remote() {
        if let Some(entry) = registry::get(span_id).filter(|e| e.ctx.trace_id == trace_id) {
            return Some(entry.ctx);
        }
    }
    let priority = if sc.is_sampled() { AUTO_KEEP } else { AUTO_REJECT };
    Some(SpanContext::remote(
        trace_id,
        span_id,
        Some(SamplingDecision::new(priority, Mechanism::Propagated(0))),
        None,
        Vec::new(),
    ))
}

/// This tracer's context for the span of an OpenTelemetry `Context` (to inject it with
/// [`crate::propagation::Propagator`], or to parent native spans explicitly); `None` when
/// the `Context` has no valid span.
pub fn context_of_otel(cx: &opentelemetry::Context) -> Option<SpanContext> {
    if cx.has_active_span() {
        context_of(cx.span().span_context())
    } else {
        None
    }
}

/// The span of OpenTelemetry's current `Context`, as our context.
fn current_otel_span() -> Option<SpanContext> {
    opentelemetry::Context::map_current(context_of_otel)
}

/// The innermost current span: this tracer's current span or OpenTelemetry's current
/// span, whichever was entered last — the OpenTelemetry one when it descends from ours.
pub(crate) fn innermost_current() -> Option<SpanContext> {
    let native = native_current_context();
    let Some(otel) = current_otel_span() else {
        return native;
    };
    match native {
        None => Some(otel),
        Some(n) if n.span_id == otel.span_id || registry::descends_from(otel.span_id, n.span_id) => Some(otel),
        Some(n) => Some(n),
    }
}
