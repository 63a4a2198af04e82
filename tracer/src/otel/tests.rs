//! The OpenTelemetry bridge: the OTel→Datadog mapping, parentage through `Context` and
//! with the native API, status and exceptions — observed at the export queue.

use opentelemetry::trace::{
    Span as _, SpanContext as OtelSpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};

use super::{TracerProvider, registry};
use crate::span::find;
use crate::{SpanData, Tracer, TracerConfig};

fn setup() -> (Tracer, super::Tracer) {
    let t = Tracer::without_worker(TracerConfig::default().with_service("web"));
    let otel = TracerProvider::new(t).tracer("test-scope");
    (t, otel)
}

fn one(t: &Tracer) -> SpanData {
    let mut chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(chunk.len(), 1, "{chunk:?}");
    chunk.remove(0)
}

#[test]
fn http_server_span_maps_like_the_agent() {
    let (t, otel) = setup();
    let mut span = otel
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/users/{id}"),
        ])
        .start(&otel);
    span.set_attribute(KeyValue::new("http.response.status_code", 200));
    span.set_attribute(KeyValue::new("cached", true));
    span.end();
    let s = one(&t);
    assert_eq!(
        (s.name(), s.resource(), s.span_type(), s.service()),
        ("http.server.request", "GET /users/{id}", "web", None)
    );
    assert_eq!(s.tag("span.kind"), Some("server"));
    assert_eq!(s.tag("http.status_code"), Some("200"));
    assert_eq!(s.metric("http.response.status_code"), Some(200.0));
    assert_eq!(s.tag("cached"), Some("true"));
    assert_eq!(s.tag("otel.status_code"), Some("Unset"));
    assert_eq!(s.tag("otel.scope.name"), Some("test-scope"));
    assert!(!s.is_error() && !s.measured && s.is_top_level());
}

#[test]
fn operation_resource_and_type_rules() {
    let (t, otel) = setup();
    let cases: Vec<(SpanKind, Vec<KeyValue>, &str, &str, &str)> = vec![
        (
            SpanKind::Client,
            vec![KeyValue::new("http.method", "POST")],
            "http.client.request",
            "POST",
            "http",
        ),
        (
            SpanKind::Server,
            vec![
                KeyValue::new("http.request.method", "_OTHER"),
                KeyValue::new("http.route", "/x"),
            ],
            "http.server.request",
            "HTTP /x",
            "web",
        ),
        (
            SpanKind::Client,
            vec![
                KeyValue::new("db.system", "postgresql"),
                KeyValue::new("db.statement", "SELECT 1"),
            ],
            "postgresql.query",
            "SELECT 1",
            "sql",
        ),
        (
            SpanKind::Client,
            vec![KeyValue::new("db.system.name", "redis")],
            "redis.query",
            "name",
            "redis",
        ),
        (
            SpanKind::Producer,
            vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation", "publish"),
                KeyValue::new("messaging.destination.name", "orders"),
            ],
            "kafka.publish",
            "publish orders",
            "custom",
        ),
        (
            SpanKind::Server,
            vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.method", "Get"),
                KeyValue::new("rpc.service", "Users"),
            ],
            "grpc.server.request",
            "Get Users",
            "web",
        ),
        (
            SpanKind::Client,
            vec![
                KeyValue::new("rpc.system", "aws-api"),
                KeyValue::new("rpc.service", "S3"),
            ],
            "aws.s3.request",
            "name",
            "http",
        ),
        (
            SpanKind::Internal,
            vec![KeyValue::new("graphql.operation.type", "query")],
            "graphql.server.request",
            "query",
            "custom",
        ),
        (
            SpanKind::Server,
            vec![KeyValue::new("network.protocol.name", "AMQP")],
            "amqp.server.request",
            "name",
            "web",
        ),
        (SpanKind::Client, vec![], "client.request", "name", "http"),
        (SpanKind::Consumer, vec![], "consumer", "name", "custom"),
        (SpanKind::Internal, vec![], "internal", "name", "custom"),
        (
            SpanKind::Internal,
            vec![
                KeyValue::new("operation.name", "my.op"),
                KeyValue::new("resource.name", "my resource"),
                KeyValue::new("span.type", "worker"),
                KeyValue::new("service.name", "billing"),
            ],
            "my.op",
            "my resource",
            "worker",
        ),
    ];
    for (kind, attrs, name, resource, span_type) in cases {
        otel.span_builder("name")
            .with_kind(kind.clone())
            .with_attributes(attrs.clone())
            .start(&otel)
            .end();
        let s = one(&t);
        assert_eq!(
            (s.name(), s.resource(), s.span_type()),
            (name, resource, span_type),
            "{kind:?} {attrs:?}"
        );
        assert_eq!(s.measured, matches!(kind, SpanKind::Client | SpanKind::Producer));
    }
}

#[test]
fn datadog_overrides_and_special_attributes_are_not_tags() {
    let (t, otel) = setup();
    let mut span = otel.start("x");
    for kv in [
        KeyValue::new("datadog.service", "svc"),
        KeyValue::new("datadog.name", "op"),
        KeyValue::new("datadog.resource", "res"),
        KeyValue::new("datadog.type", "cache"),
        KeyValue::new("datadog.span.kind", "client"),
        KeyValue::new("datadog.error", 1),
        KeyValue::new("datadog.error.msg", "bad"),
        KeyValue::new("datadog.unknown", "dropped"),
    ] {
        span.set_attribute(kv);
    }
    drop(span); // ends on drop
    let s = one(&t);
    assert_eq!(
        (s.service(), s.name(), s.resource(), s.span_type()),
        (Some("svc"), "op", "res", "cache")
    );
    assert_eq!(s.tag("span.kind"), Some("client"));
    assert!(s.is_error());
    assert_eq!(s.tag("error.message"), Some("bad"));
    assert!(s.tags().all(|(k, _)| !k.starts_with("datadog.")), "{s:?}");
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

#[test]
fn status_and_exceptions_become_error_tags() {
    let (t, otel) = setup();
    let mut span = otel.start("failing");
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.message", "division by zero"),
            KeyValue::new("exception.type", "ZeroDivision"),
            KeyValue::new("exception.stacktrace", "at main"),
        ],
    );
    span.set_status(Status::error("request failed"));
    span.set_status(Status::Unset); // ignored
    span.end();
    let s = one(&t);
    assert!(s.is_error());
    assert_eq!(
        (s.tag("error.message"), s.tag("error.type"), s.tag("error.stack")),
        (Some("division by zero"), Some("ZeroDivision"), Some("at main"))
    );
    assert_eq!(
        (s.tag("otel.status_code"), s.tag("otel.status_description")),
        (Some("Error"), Some("request failed"))
    );

    let mut span = otel.start("described");
    span.record_error(&Refused);
    span.set_status(Status::error("upstream down"));
    span.end();
    let s = one(&t);
    assert_eq!(s.tag("error.message"), Some("connection refused"));

    let mut span = otel.start("status only");
    span.set_status(Status::error("upstream down"));
    span.end();
    assert_eq!(one(&t).tag("error.message"), Some("upstream down"));

    let mut span = otel.start("exception but ok");
    span.record_error(&Refused);
    span.set_status(Status::Ok);
    span.set_status(Status::error("ignored after Ok"));
    span.end();
    let s = one(&t);
    assert!(!s.is_error(), "an exception event alone is not an error (agent rule)");
    assert_eq!(s.tag("otel.status_code"), Some("Ok"));
}

#[test]
fn parentage_through_context_in_span_and_native_spans() {
    let (t, otel) = setup();
    otel.in_span("root", |cx| {
        assert!(cx.span().is_recording());
        // OTel child through the current Context.
        otel.in_span("otel.child", |_| {
            // A native span inside becomes its child...
            let native = t.span("native").start();
            native.in_scope(|| {
                // ...and an OTel span inside the native one is its child.
                otel.start("otel.grandchild").end();
            });
        });
        // Explicit context.
        let mut s = otel.start_with_context("explicit", &cx);
        s.end();
        let ours = super::context_of_otel(&cx);
        assert_eq!(
            ours.map(|c| c.span_id().to_u64()),
            Some(u64::from_be_bytes(cx.span().span_context().span_id().to_bytes()))
        );
    });
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(chunk.len(), 5, "{chunk:?}");
    let by_resource = |r: &str| {
        chunk
            .iter()
            .find(|s| s.resource() == r)
            .unwrap_or_else(|| panic!("no {r}"))
    };
    let root = by_resource("root");
    let child = by_resource("otel.child");
    let native = find(&chunk, "native");
    let grandchild = by_resource("otel.grandchild");
    let explicit = by_resource("explicit");
    assert!(!root.parent_id().is_valid());
    assert_eq!(child.parent_id(), root.span_id());
    assert_eq!(native.parent_id(), child.span_id());
    assert_eq!(grandchild.parent_id(), native.span_id());
    assert_eq!(explicit.parent_id(), root.span_id());
    assert!(chunk.iter().all(|s| s.trace_id() == root.trace_id()));
    assert!(
        registry::get(root.span_id()).is_none(),
        "ended spans leave the registry"
    );
}

#[test]
fn otel_spans_nest_under_the_native_current_span_and_remote_parents() {
    let (t, otel) = setup();
    let native = t.span("request").start();
    native.in_scope(|| {
        otel.start("inside").end();
        // An explicit empty context still falls back to our current span.
        otel.start_with_context("explicit-empty", &Context::new()).end();
    });
    drop(native);
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(chunk.len(), 3);
    let root = &chunk[0];
    assert!(chunk[1..].iter().all(|s| s.parent_id() == root.span_id()));

    let remote = OtelSpanContext::new(
        opentelemetry::trace::TraceId::from(0x0102_0304_0506_0708_0910_1112_1314_1516_u128),
        opentelemetry::trace::SpanId::from(0x1234_u64),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let cx = Context::new().with_remote_span_context(remote);
    otel.span_builder("continued")
        .with_kind(SpanKind::Server)
        .start_with_context(&otel, &cx)
        .end();
    let s = one(&t);
    assert_eq!(s.trace_id().to_u128(), 0x0102_0304_0506_0708_0910_1112_1314_1516);
    assert_eq!(s.parent_id().to_u64(), 0x1234);
    assert!(s.is_top_level() && s.local_root);
}

#[test]
fn end_with_timestamp_and_start_time_are_kept() {
    let (t, otel) = setup();
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3);
    let mut span = otel.span_builder("timed").with_start_time(start).start(&otel);
    span.end_with_timestamp(start + std::time::Duration::from_millis(1500));
    let s = one(&t);
    assert_eq!(s.duration(), 1_500_000_000);
    let expected = start
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    assert!((s.start() - expected).abs() < 1_000, "{} vs {expected}", s.start());
}
