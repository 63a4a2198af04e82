//! OpenTelemetry → Datadog: code instrumented with the `opentelemetry` API, recorded by
//! our tracer through `tracer::otel::TracerProvider` (no OpenTelemetry SDK), with
//! Datadog's mapping of operation names, resources, span kinds and statuses.
//!
//! ```text
//! DD_SERVICE=otel-demo cargo run --example otel_bridge
//! ```
//!
//! Sends one trace of three spans to the agent at `DD_TRACE_AGENT_URL` (default
//! `http://127.0.0.1:8126`), flushes and exits.
#![allow(clippy::print_stdout)] // a command-line example reports on stdout

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};

/// A "library" instrumented with the global OpenTelemetry tracer only.
fn query_users() {
    let tracer = global::tracer("users-repository");
    let mut span = tracer
        .span_builder("SELECT users")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.statement", "SELECT * FROM users WHERE id = $1"),
            KeyValue::new("service.name", "users-db"),
        ])
        .start(&tracer);
    span.set_attribute(KeyValue::new("db.rows", 1));
    span.end();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tracer = tracer::Tracer::new(tracer::TracerConfig::from_env()?)?;
    let provider = tracer::otel::TracerProvider::new(tracer);
    global::set_tracer_provider(provider);

    let otel = global::tracer("otel-bridge-example");
    let request = otel
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/users/{id}"),
        ]);
    // Operation `http.server.request`, resource `GET /users/{id}`, type `web`.
    otel.in_span_with_builder(request, |cx| {
        query_users(); // a child: the request is current in OpenTelemetry's Context
        otel.in_span("render", |cx| {
            cx.span().set_status(Status::error("template missing"));
        });
        cx.span().set_attribute(KeyValue::new("http.response.status_code", 500));
    });

    tracer.shutdown(Duration::from_secs(5))?;
    let health = tracer.health();
    println!("sent {} spans to {}", health.spans_sent, tracer.config().agent().url());
    Ok(())
}
