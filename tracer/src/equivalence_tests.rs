//! The same request written with the native API, through the `tracing` Layer and through
//! the OpenTelemetry bridge produces the same spans (names, resources, services, types,
//! parentage, tags, metrics, errors), up to ids and timestamps.

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use tracing_subscriber::prelude::*;

use crate::layer::DatadogLayer;
use crate::otel::TracerProvider;
use crate::{SpanData, Tracer, TracerConfig};

/// Tags the OpenTelemetry bridge adds by design (checked in its own tests).
const OTEL_EXTRAS: [&str; 3] = ["otel.status_code", "otel.status_description", "otel.scope.name"];

/// A span without ids and timestamps; the parent by name.
#[derive(Debug, PartialEq)]
struct Shape {
    name: String,
    resource: String,
    service: Option<String>,
    span_type: String,
    parent: Option<String>,
    error: bool,
    top_level: bool,
    measured: bool,
    meta: Vec<(String, String)>,
    metrics: Vec<(String, String)>,
}

fn shapes(chunk: &[SpanData]) -> Vec<Shape> {
    let mut out: Vec<Shape> = chunk
        .iter()
        .map(|s| {
            let mut meta: Vec<(String, String)> = s
                .tags()
                .filter(|(k, _)| !OTEL_EXTRAS.contains(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            meta.sort();
            let mut metrics: Vec<(String, String)> = s.metrics().map(|(k, v)| (k.to_owned(), v.to_string())).collect();
            metrics.sort();
            Shape {
                name: s.name().to_owned(),
                resource: s.resource().to_owned(),
                service: s.service().map(str::to_owned),
                span_type: s.span_type().to_owned(),
                parent: chunk
                    .iter()
                    .find(|p| p.span_id() == s.parent_id())
                    .map(|p| p.name().to_owned()),
                error: s.is_error(),
                top_level: s.is_top_level(),
                measured: s.measured,
                meta,
                metrics,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn tracer() -> Tracer {
    Tracer::without_worker(TracerConfig::default().with_service("web"))
}

fn chunk(t: &Tracer) -> Vec<SpanData> {
    let c = t.pop_chunk().unwrap_or_default();
    assert!(t.pop_chunk().is_none(), "one trace");
    c
}

fn native() -> Vec<Shape> {
    let t = tracer();
    let root = t
        .span("http.server.request")
        .resource("GET /users/{id}")
        .span_type("web")
        .tag("http.request.method", "GET")
        .tag("http.route", "/users/{id}")
        .tag("span.kind", "server")
        .tag("http.status_code", "200")
        .metric("http.response.status_code", 200.0)
        .start();
    root.in_scope(|| {
        drop(
            t.span("postgresql.query")
                .service("users-db")
                .resource("SELECT * FROM users WHERE id = ?")
                .span_type("sql")
                .tag("db.system", "postgresql")
                .tag("db.statement", "SELECT * FROM users WHERE id = ?")
                .tag("span.kind", "client")
                .measured()
                .start(),
        );
        let mut render = t
            .span("render")
            .span_type("custom")
            .tag("template", "user.html")
            .tag("span.kind", "internal")
            .metric("items", 3.0)
            .start();
        render.set_error_flag(true);
        render.set_tag("error.message", "template missing");
    });
    drop(root);
    shapes(&chunk(&t))
}

fn through_layer() -> Vec<Shape> {
    let t = tracer();
    let subscriber = tracing_subscriber::registry().with(DatadogLayer::new(t));
    tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!(
            "http.server.request",
            resource.name = "GET /users/{id}",
            span.type = "web",
            http.request.method = "GET",
            http.route = "/users/{id}",
            otel.kind = "server",
            http.status_code = "200",
            http.response.status_code = 200,
        );
        let _root = root.enter();
        drop(tracing::info_span!(
            "postgresql.query",
            service.name = "users-db",
            resource.name = "SELECT * FROM users WHERE id = ?",
            span.type = "sql",
            db.system = "postgresql",
            db.statement = "SELECT * FROM users WHERE id = ?",
            otel.kind = "client",
            dd.measured = true,
        ));
        let render = tracing::info_span!(
            "render",
            span.type = "custom",
            template = "user.html",
            otel.kind = "internal",
            items = 3
        );
        let _render = render.enter();
        tracing::error!(error = "template missing");
    });
    shapes(&chunk(&t))
}

fn through_otel() -> Vec<Shape> {
    let t = tracer();
    let otel = TracerProvider::new(t).tracer("equivalence");
    let root = otel
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/users/{id}"),
            KeyValue::new("http.response.status_code", 200),
        ])
        .start(&otel);
    let cx = Context::current_with_span(root);
    {
        let _attached = cx.clone().attach();
        otel.span_builder("query users")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("service.name", "users-db"),
                KeyValue::new("db.system", "postgresql"),
                KeyValue::new("db.statement", "SELECT * FROM users WHERE id = ?"),
            ])
            .start(&otel)
            .end();
        let mut render = otel
            .span_builder("render")
            .with_attributes([
                KeyValue::new("operation.name", "render"),
                KeyValue::new("template", "user.html"),
                KeyValue::new("items", 3),
            ])
            .start(&otel);
        render.set_status(Status::error("template missing"));
        render.end();
    }
    cx.span().end();
    shapes(&chunk(&t))
}

#[test]
fn native_layer_and_otel_bridge_produce_the_same_spans() {
    let native = native();
    assert_eq!(native.len(), 3);
    assert_eq!(through_layer(), native, "tracing Layer");
    assert_eq!(through_otel(), native, "OpenTelemetry bridge");
}
