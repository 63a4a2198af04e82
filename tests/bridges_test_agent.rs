//! The `tracing` Layer and the OpenTelemetry bridge against Datadog's reference test
//! agent (`ddapm-test-agent`): the spans arrive mapped as documented, its checks pass, and
//! the tracer does not trace itself (the Layer is the global subscriber here, so the
//! export thread's own `tracing` output goes through it).

#[path = "support/test_agent.rs"]
mod test_agent;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use test_agent::{assert_no_check_failed, session_traces, start_in_session};
use tracer::{Tracer, TracerConfig};

/// Every span the agent received in the session, by name.
fn received(agent: &apm::TestAgent, token: &str) -> (usize, HashMap<String, Value>) {
    let traces = session_traces(agent, token);
    let spans: Vec<&Value> = traces.iter().flatten().collect();
    let by_name = spans
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or_default().to_owned(), (*s).clone()))
        .collect();
    (spans.len(), by_name)
}

fn tracer_for(agent: &apm::TestAgent, service: &str) -> Tracer {
    let config = TracerConfig::default()
        .with_service(service)
        .with_env("test")
        .with_agent_url(&agent.url())
        .expect("agent url");
    Tracer::new(config).expect("tracer")
}

#[test]
fn tracing_layer_spans_reach_the_test_agent_and_the_tracer_does_not_trace_itself() {
    use tracing_subscriber::prelude::*;

    let token = "rust-tracing-layer";
    let agent = start_in_session("bridges-layer", token);
    let tracer = tracer_for(&agent, "layer-svc");
    tracing_subscriber::registry()
        .with(tracer::layer::DatadogLayer::new(tracer))
        .init();

    {
        let request = tracing::info_span!(
            "http.request",
            resource.name = "GET /cart",
            span.type = "web",
            otel.kind = "server",
            http.method = "GET",
        );
        let _r = request.enter();
        // The tracer's own log targets are never spans.
        let _own = tracing::info_span!(target: "tracer::export", "internal").entered();
        let db = tracing::info_span!(
            "db.query",
            service.name = "cart-db",
            resource.name = "SELECT 1",
            rows = 2
        );
        db.in_scope(|| tracing::error!(error = "timeout", "query failed"));
    }
    // Sends through the export thread, whose HTTP client logs through `tracing`.
    tracer.flush(Duration::from_secs(20)).expect("flush");
    tracer
        .flush(Duration::from_secs(20))
        .expect("second flush sends anything the first created");

    assert_no_check_failed(&agent);
    let (count, spans) = received(&agent, token);
    assert_eq!(count, 2, "exactly the two spans the test made: {spans:?}");
    let request = &spans["http.request"];
    assert_eq!(request["resource"], "GET /cart");
    assert_eq!(request["type"], "web");
    assert_eq!(request["service"], "layer-svc");
    assert_eq!(request["meta"]["span.kind"], "server");
    assert_eq!(request["meta"]["http.method"], "GET");
    let db = &spans["db.query"];
    assert_eq!(db["parent_id"], request["span_id"]);
    assert_eq!(db["service"], "cart-db");
    assert_eq!(db["error"], 1);
    assert_eq!(db["meta"]["error.message"], "timeout");
    assert_eq!(db["metrics"]["rows"], 2.0);
    let health = tracer.health();
    assert_eq!((health.spans_created, health.spans_sent), (2, 2), "{health:?}");
    tracer.shutdown(Duration::from_secs(10)).expect("shutdown");
    agent.stop();
}

#[test]
fn otel_bridge_spans_reach_the_test_agent_mapped() {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};

    let token = "rust-otel-bridge";
    let agent = start_in_session("bridges-otel", token);
    let tracer = tracer_for(&agent, "otel-svc");
    let otel = tracer::otel::TracerProvider::new(tracer).tracer("bridge-test");

    let server = otel
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/users/{id}"),
        ])
        .start(&otel);
    let cx = opentelemetry::Context::current_with_span(server);
    {
        let _attached = cx.clone().attach();
        let mut db = otel
            .span_builder("select")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system", "postgresql"),
                KeyValue::new("db.statement", "SELECT * FROM users WHERE id = $1"),
            ])
            .start(&otel);
        db.set_status(Status::error("connection reset"));
        db.end();
    }
    cx.span().set_attribute(KeyValue::new("http.response.status_code", 200));
    cx.span().end();
    tracer.flush(Duration::from_secs(20)).expect("flush");

    assert_no_check_failed(&agent);
    let (count, spans) = received(&agent, token);
    assert_eq!(count, 2, "{spans:?}");
    let server = &spans["http.server.request"];
    assert_eq!(server["resource"], "GET /users/{id}");
    assert_eq!(server["type"], "web");
    assert_eq!(server["service"], "otel-svc");
    assert_eq!(server["meta"]["span.kind"], "server");
    assert_eq!(server["meta"]["http.status_code"], "200");
    assert_eq!(server["meta"]["otel.status_code"], "Unset");
    assert_eq!(server["meta"]["otel.scope.name"], "bridge-test");
    assert_eq!(server["meta"]["env"], "test");
    let db = &spans["postgresql.query"];
    assert_eq!(db["parent_id"], server["span_id"]);
    assert_eq!(db["trace_id"], server["trace_id"]);
    assert_eq!(db["resource"], "SELECT * FROM users WHERE id = $1");
    assert_eq!(db["type"], "sql");
    assert_eq!(db["error"], 1);
    assert_eq!(db["meta"]["error.message"], "connection reset");
    assert_eq!(db["meta"]["span.kind"], "client");
    assert_eq!(db["metrics"]["_dd.measured"], 1.0);
    tracer.shutdown(Duration::from_secs(10)).expect("shutdown");
    agent.stop();
}
