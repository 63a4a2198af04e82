//! What `span_cost` and `span_load` both run, so that their figures are of the same work:
//! the workloads (a root span with 5 tags; a 4-span tree) in each API — ours, the
//! OpenTelemetry API, `tracing` — and the two `tracing` subscribers compared.
//! (`mod common;` in each bench; not a bench target itself.)
#![allow(dead_code)] // each bench uses its own part

use std::hint::black_box;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;

/// A root span with 5 tags.
pub(crate) fn ours_root(t: &tracer::Tracer) {
    let span = t
        .span("http.request")
        .resource("GET /api/trace")
        .span_type("web")
        .tag("http.method", "GET")
        .tag("http.route", "/api/trace")
        .tag("http.url", "http://127.0.0.1:5050/api/trace")
        .tag("span.kind", "server")
        .tag("component", "axum")
        .start();
    drop(black_box(span));
}

/// A 4-span tree: root, handler → db.query, render.
pub(crate) fn ours_tree(t: &tracer::Tracer) {
    let root = t
        .span("http.request")
        .resource("GET /api/trace")
        .span_type("web")
        .tag("http.method", "GET")
        .start();
    {
        let child = root.child("handler").start();
        drop(child.child("db.query").resource("SELECT 1").span_type("sql").start());
    }
    drop(root.child("render").start());
    drop(black_box(root));
}

/// [`ours_root`] through the OpenTelemetry API.
pub(crate) fn otel_root<T: opentelemetry::trace::Tracer>(t: &T) {
    let mut span = t
        .span_builder("http.request")
        .with_attributes([
            KeyValue::new("http.method", "GET"),
            KeyValue::new("http.route", "/api/trace"),
            KeyValue::new("http.url", "http://127.0.0.1:5050/api/trace"),
            KeyValue::new("span.kind", "server"),
            KeyValue::new("component", "axum"),
        ])
        .start(t);
    span.end();
}

/// [`ours_tree`] through the OpenTelemetry API.
pub(crate) fn otel_tree<T>(t: &T)
where
    T: opentelemetry::trace::Tracer,
    T::Span: Send + Sync + 'static,
{
    use opentelemetry::Context;
    use opentelemetry::trace::TraceContextExt;
    let root = t
        .span_builder("http.request")
        .with_attributes([KeyValue::new("http.method", "GET")])
        .start(t);
    let cx = Context::new().with_span(root);
    {
        let child = t.start_with_context("handler", &cx);
        let ccx = cx.with_span(child);
        let mut db = t.start_with_context("db.query", &ccx);
        db.end();
        ccx.span().end();
    }
    let mut render = t.start_with_context("render", &cx);
    render.end();
    cx.span().end();
}

/// [`ours_root`] as a `tracing` span: 5 fields, entered, exited, closed.
pub(crate) fn tracing_root() {
    let span = tracing::info_span!(
        "http.request",
        http.method = "GET",
        http.route = "/api/trace",
        http.url = "http://127.0.0.1:5050/api/trace",
        span.kind = "server",
        component = "axum",
    );
    drop(black_box(span.enter()));
    drop(span);
}

/// [`ours_tree`] as `tracing` spans.
pub(crate) fn tracing_tree() {
    let root = tracing::info_span!("http.request", http.method = "GET");
    let _r = root.enter();
    {
        let handler = tracing::info_span!("handler");
        let _h = handler.enter();
        let db = tracing::info_span!("db.query", resource.name = "SELECT 1");
        drop(black_box(db.enter()));
    }
    let render = tracing::info_span!("render");
    drop(black_box(render.enter()));
}

/// A `tracing` dispatcher recording into our tracer.
pub(crate) fn our_layer(t: tracer::Tracer) -> tracing::Dispatch {
    use tracing_subscriber::prelude::*;
    tracing::Dispatch::new(tracing_subscriber::registry().with(tracer::layer::DatadogLayer::new(t)))
}

/// A `tracing` dispatcher recording through `tracing-opentelemetry` into `t`.
pub(crate) fn tracing_otel_layer(t: opentelemetry_sdk::trace::SdkTracer) -> tracing::Dispatch {
    use tracing_subscriber::prelude::*;
    tracing::Dispatch::new(tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(t)))
}
