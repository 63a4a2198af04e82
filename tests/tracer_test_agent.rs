//! Our tracer against Datadog's reference test agent (`ddapm-test-agent` from PyPI):
//! every enabled check passes and the spans it decoded equal what the test created.

#[path = "support/test_agent.rs"]
mod test_agent;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use test_agent::{assert_every_check_passed, session_requests, session_traces, start_in_session};
use tracer::{TraceApi, Tracer, TracerConfig};

#[derive(Debug, thiserror::Error)]
#[error("connection pool exhausted")]
struct PoolError {
    #[source]
    source: std::io::Error,
}

fn by_name(traces: &[Vec<Value>]) -> HashMap<String, Value> {
    traces
        .iter()
        .flatten()
        .map(|s| (s["name"].as_str().unwrap_or_default().to_owned(), s.clone()))
        .collect()
}

#[test]
fn test_agent_accepts_and_decodes_our_v04_spans() {
    check_against_test_agent(TraceApi::V04, "/v0.4/traces");
}

#[test]
fn test_agent_accepts_and_decodes_our_v05_spans() {
    // The test agent's /info lists /v0.5/traces: the default picks it.
    check_against_test_agent(TraceApi::Auto, "/v0.5/traces");
}

fn check_against_test_agent(api: TraceApi, expected_path: &str) {
    let token = "rust-tracer-core";
    let agent = start_in_session("tracer-test-agent", token);

    let config = TracerConfig::default()
        .with_service("rust-demo")
        .with_env("test")
        .with_version("1.0")
        .with_global_tag("team", "apm")
        .with_agent_url(&agent.url())
        .expect("agent url")
        .with_trace_api(api);
    let tracer = Tracer::new(config).expect("tracer");

    let (trace_id, root_id, db_id);
    {
        let root = tracer
            .span("http.request")
            .resource("GET /api/trace")
            .span_type("web")
            .measured()
            .tag("http.method", "GET")
            .tag("http.route", "/api/trace")
            .tag("http.url", "http://127.0.0.1:5050/api/trace")
            .tag("span.kind", "server")
            .tag("component", "axum")
            .start();
        trace_id = root.trace_id();
        root_id = root.span_id();
        let mut db = root
            .child("postgres.query")
            .service("postgres")
            .resource("SELECT 1")
            .span_type("sql")
            .start();
        db_id = db.span_id();
        db.set_metric("db.row_count", 3.0);
        db.set_error(&PoolError {
            source: std::io::Error::other("connection refused"),
        });
        let cache = db.child("cache.get").resource("GET user:1").start();
        drop(cache);
        drop(db);
        let mut root = root;
        root.set_tag("http.status_code", "500");
        root.set_error_flag(true);
    }
    {
        let _other = tracer.span("worker.job").resource("cleanup").start();
    }
    tracer.flush(Duration::from_secs(20)).expect("flush to the test agent");

    let health = tracer.health();
    assert_eq!(
        (health.spans_sent, health.traces_sent, health.payloads_failed),
        (4, 2, 0),
        "{health:?}"
    );

    assert_every_check_passed(&agent);

    let traces = session_traces(&agent, token);
    assert_eq!(traces.len(), 2, "{traces:?}");
    let spans = by_name(&traces);
    assert_eq!(spans.len(), 4);

    let root = &spans["http.request"];
    assert_eq!(root["trace_id"].as_u64(), Some(trace_id.low()));
    assert_eq!(root["span_id"].as_u64(), Some(root_id.to_u64()));
    assert_eq!(root["parent_id"].as_u64(), Some(0));
    assert_eq!(root["service"], "rust-demo");
    assert_eq!(root["resource"], "GET /api/trace");
    assert_eq!(root["type"], "web");
    assert_eq!(root["error"], 1);
    let meta = &root["meta"];
    for (k, v) in [
        ("http.method", "GET"),
        ("http.route", "/api/trace"),
        ("http.status_code", "500"),
        ("span.kind", "server"),
        ("component", "axum"),
        ("env", "test"),
        ("version", "1.0"),
        ("team", "apm"),
        ("language", "rust"),
        ("_dd.p.dm", "-0"),
    ] {
        assert_eq!(meta[k], v, "root meta {k}: {meta}");
    }
    assert_eq!(
        meta["_dd.p.tid"].as_str(),
        Some(format!("{:016x}", trace_id.high()).as_str())
    );
    assert_eq!(meta["runtime-id"].as_str(), Some(tracer.runtime_id()));
    let metrics = &root["metrics"];
    assert_eq!(metrics["_dd.top_level"], 1.0);
    assert_eq!(metrics["_dd.measured"], 1.0);
    assert_eq!(metrics["_sampling_priority_v1"], 1.0);
    assert_eq!(metrics["process_id"].as_f64(), Some(f64::from(std::process::id())));

    let db = &spans["postgres.query"];
    assert_eq!(db["parent_id"].as_u64(), Some(root_id.to_u64()));
    assert_eq!(db["trace_id"].as_u64(), Some(trace_id.low()));
    assert_eq!(db["service"], "postgres");
    assert_eq!(db["resource"], "SELECT 1");
    assert_eq!(db["type"], "sql");
    assert_eq!(db["error"], 1);
    assert_eq!(db["meta"]["error.message"], "connection pool exhausted");
    assert!(
        db["meta"]["error.type"]
            .as_str()
            .is_some_and(|t| t.ends_with("PoolError")),
        "{db}"
    );
    assert!(
        db["meta"]["error.stack"]
            .as_str()
            .is_some_and(|s| s.contains("caused by: connection refused")),
        "{db}"
    );
    assert_eq!(db["meta"]["env"], "test");
    assert!(
        db["meta"].get("version").is_none(),
        "version only on rust-demo spans: {db}"
    );
    assert_eq!(
        db["metrics"]["_dd.top_level"], 1.0,
        "service change makes a service entry"
    );
    assert_eq!(db["metrics"]["db.row_count"], 3.0);

    let cache = &spans["cache.get"];
    assert_eq!(cache["parent_id"].as_u64(), Some(db_id.to_u64()));
    assert_eq!(cache["service"], "postgres", "children inherit the parent's service");
    assert!(cache["metrics"].get("_dd.top_level").is_none(), "{cache}");
    assert_eq!(cache["error"], 0);

    let other = &spans["worker.job"];
    assert_ne!(other["trace_id"], root["trace_id"]);
    assert_eq!(other["resource"], "cleanup");

    let requests = session_requests(&agent, token);
    assert!(!requests.is_empty());
    for r in &requests {
        let url = r["url"].as_str().unwrap_or_default();
        assert!(url.ends_with(expected_path), "sent to {url}, expected {expected_path}");
    }

    tracer.shutdown(Duration::from_secs(10)).expect("shutdown");
    agent.stop();
}
