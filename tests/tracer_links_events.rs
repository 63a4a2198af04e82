//! Span links and span events through the native API, the OpenTelemetry bridge and the
//! `tracing` layer (opt-in events), sent to Datadog's `ddapm-test-agent`: v0.4 carries them
//! natively (`span_links`; `span_events` because the test agent's `/info` says
//! `span_events: true`), v0.5 as the JSON tags the Datadog tracers use (`_dd.span_links`,
//! `events`).

#[path = "support/local_agent.rs"]
mod local_agent;
#[path = "support/runtime.rs"]
mod runtime;
#[path = "support/test_agent.rs"]
mod test_agent;

use std::collections::HashMap;
use std::time::Duration;

use local_agent::{local_config, web_addr};
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use runtime::runtime;
use serde_json::{Value, json};
use test_agent::{assert_no_check_failed, session_requests, session_traces, start_in_session};
use tracer::{AttributeValue, TraceApi, Tracer, TracerConfig};
use tracing_subscriber::prelude::*;

struct Sent {
    linked_trace: u128,
    linked_span: u64,
    remote_trace: u128,
    remote_span: u64,
}

/// Makes the spans; returns the ids the links point at.
fn make_spans(tracer: Tracer) -> Sent {
    let first = tracer.span("batch.item").start();
    let first_ctx = first.context().expect("recording");
    let sent = Sent {
        linked_trace: first.trace_id().to_u128(),
        linked_span: first.span_id().to_u64(),
        remote_trace: 0x1234_5678_9abc_def0_0fed_cba9_8765_4321,
        remote_span: 0x0102_0304_0506_0708,
    };
    drop(first);

    // Native API: a link at start, one added later (array attributes flattened), an event.
    let mut consumer = tracer
        .span("batch.process")
        .link(&first_ctx, [("link.kind", "follows_from")])
        .start();
    consumer.add_link(&first_ctx, [("array", AttributeValue::from(vec!["a", "b"]))]);
    consumer.add_event(
        "cache.miss",
        [
            ("key", AttributeValue::from("user:1")),
            ("attempt", AttributeValue::from(2)),
            ("hit", AttributeValue::from(false)),
            ("ratio", AttributeValue::from(0.5)),
            ("tags", AttributeValue::from(vec!["x", "y"])),
        ],
    );
    drop(consumer);

    // OpenTelemetry bridge: a link at start (a remote context with flags and tracestate),
    // one added later, an event and an exception event.
    let otel = tracer::otel::TracerProvider::new(tracer).tracer("links-test");
    let remote = SpanContext::new(
        TraceId::from(sent.remote_trace),
        SpanId::from(sent.remote_span),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("dd", "s:2;o:rum")]).expect("tracestate"),
    );
    let mut span = otel
        .span_builder("otel.op")
        .with_links(vec![Link::with_context(remote.clone())])
        .start(&otel);
    span.add_link(remote, vec![KeyValue::new("peer", "queue")]);
    span.add_event("retry", vec![KeyValue::new("attempt", 3)]);
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "Timeout"),
            KeyValue::new("exception.message", "took too long"),
        ],
    );
    span.set_status(opentelemetry::trace::Status::error("timed out"));
    span.end();

    // The tracing layer, with span events on: an info! inside a span becomes its event.
    let subscriber =
        tracing_subscriber::registry().with(tracer::layer::DatadogLayer::new(tracer).with_span_events(true));
    tracing::subscriber::with_default(subscriber, || {
        let s = tracing::info_span!("tracing.op");
        let _e = s.enter();
        tracing::info!(user = "u1", count = 3, "user logged in");
    });
    sent
}

/// Spans by resource (the OpenTelemetry bridge names spans as the agent's OTel mapping
/// does; the resource is the span name given), and the raw trace payloads.
fn run(api: TraceApi, token: &str) -> (HashMap<String, Value>, Sent, Vec<u8>) {
    let agent = start_in_session(token, token);
    let tracer = Tracer::new(
        TracerConfig::default()
            .with_service("links-svc")
            .with_env("test")
            .with_agent_url(&agent.url())
            .unwrap()
            .with_trace_api(api),
    )
    .unwrap();
    let sent = make_spans(tracer);
    tracer.flush(Duration::from_secs(10)).expect("delivered");
    let traces = session_traces(&agent, token);
    assert_no_check_failed(&agent);
    let requests = session_requests(&agent, token);
    let raw: Vec<u8> = requests
        .iter()
        .filter(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/traces")))
        .flat_map(|r| apm::base64_decode(r["body"].as_str().unwrap_or_default()))
        .collect();
    agent.stop();
    let by_name = traces
        .into_iter()
        .flatten()
        .map(|s| (s["resource"].as_str().unwrap_or_default().to_owned(), s))
        .collect();
    (by_name, sent, raw)
}

/// What both encodings carry alike: the consumer's two link attribute sets, its event's name
/// and a plausible event time.
fn assert_link_attributes_and_event(links: &[Value], event: &Value) {
    assert_eq!(links[0]["attributes"], json!({"link.kind": "follows_from"}));
    assert_eq!(links[1]["attributes"], json!({"array.0": "a", "array.1": "b"}));
    assert_eq!(event["name"], "cache.miss");
    assert!(
        event["time_unix_nano"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000_000_000)
    );
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn hex32(v: u128) -> String {
    format!("{v:032x}")
}

#[test]
fn v04_carries_links_and_events_natively() {
    let (spans, sent, raw) = run(TraceApi::V04, "links-events-v04");
    assert!(
        contains(&raw, "span_links") && contains(&raw, "span_events"),
        "native fields on the wire"
    );
    assert!(!contains(&raw, "_dd.span_links"));
    let consumer = &spans["batch.process"];
    let links = consumer["span_links"].as_array().expect("span_links");
    assert_eq!(links.len(), 2);
    for l in links {
        assert_eq!(l["trace_id"], json!(sent.linked_trace as u64));
        assert_eq!(l["trace_id_high"], json!((sent.linked_trace >> 64) as u64));
        assert_eq!(l["span_id"], json!(sent.linked_span));
    }
    let events = consumer["span_events"]
        .as_array()
        .expect("span_events (the test agent says span_events: true)");
    assert_eq!(events.len(), 1);
    assert_link_attributes_and_event(links, &events[0]);
    assert_eq!(
        events[0]["attributes"],
        json!({
            "key": {"type": 0, "string_value": "user:1"},
            "attempt": {"type": 2, "int_value": 2},
            "hit": {"type": 1, "bool_value": false},
            "ratio": {"type": 3, "double_value": 0.5},
            "tags": {"type": 4, "array_value": {"values": [
                {"type": 0, "string_value": "x"}, {"type": 0, "string_value": "y"}
            ]}},
        })
    );
    assert!(consumer["meta"].get("events").is_none(), "native, not the tag");

    let otel = &spans["otel.op"];
    let links = otel["span_links"].as_array().expect("otel links");
    assert_eq!(links.len(), 2, "the link at start and the one added");
    for l in links {
        assert_eq!(l["trace_id"], json!(sent.remote_trace as u64));
        assert_eq!(l["trace_id_high"], json!((sent.remote_trace >> 64) as u64));
        assert_eq!(l["span_id"], json!(sent.remote_span));
        assert_eq!(l["flags"], json!(1));
        assert_eq!(l["tracestate"], "dd=s:2;o:rum");
    }
    assert_eq!(links[1]["attributes"], json!({"peer": "queue"}));
    let names: Vec<&str> = otel["span_events"]
        .as_array()
        .expect("otel events")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["retry", "exception"]);
    assert_eq!(otel["error"], 1);
    assert_eq!(
        otel["meta"]["error.type"], "Timeout",
        "the exception event also gives the error tags"
    );
    assert_eq!(otel["meta"]["_dd.span_events.has_exception"], "true");

    let layer = &spans["tracing.op"];
    let events = layer["span_events"].as_array().expect("tracing events");
    assert_eq!(events[0]["name"], "user logged in");
    assert_eq!(
        events[0]["attributes"]["user"],
        json!({"type": 0, "string_value": "u1"})
    );
    assert_eq!(events[0]["attributes"]["count"], json!({"type": 2, "int_value": 3}));
    assert_eq!(
        events[0]["attributes"]["level"],
        json!({"type": 0, "string_value": "INFO"})
    );
}

#[test]
fn v05_carries_links_and_events_as_json_tags() {
    let (spans, sent, raw) = run(TraceApi::V05, "links-events-v05");
    // On the wire: the JSON tags (v0.5 spans have no field for them).
    let trace_json = format!(r#""trace_id":"{}""#, hex32(sent.linked_trace));
    let span_json = format!(r#""span_id":"{:016x}""#, sent.linked_span);
    assert!(
        contains(&raw, "_dd.span_links") && contains(&raw, &trace_json) && contains(&raw, &span_json),
        "_dd.span_links JSON"
    );
    assert!(contains(&raw, r#""name":"cache.miss""#), "events JSON");
    let json_tag = |span: &Value, key: &str| -> Value {
        let text = span["meta"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} tag: {span:#}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {text}"))
    };
    let consumer = &spans["batch.process"];
    assert!(consumer.get("span_links").is_none() && consumer.get("span_events").is_none());
    let links = json_tag(consumer, "_dd.span_links");
    let links = links.as_array().expect("an array");
    assert_eq!(links.len(), 2);
    for l in links {
        assert_eq!(l["trace_id"], hex32(sent.linked_trace), "32 hex digits");
        assert_eq!(l["span_id"], format!("{:016x}", sent.linked_span), "16 hex digits");
    }
    let events = json_tag(consumer, "events");
    assert_link_attributes_and_event(links, &events[0]);
    assert_eq!(
        events[0]["attributes"],
        json!({"key": "user:1", "attempt": 2, "hit": false, "ratio": 0.5, "tags": ["x", "y"]})
    );
    let otel = &spans["otel.op"];
    let links = json_tag(otel, "_dd.span_links");
    assert_eq!(links[0]["trace_id"], hex32(sent.remote_trace));
    assert_eq!(links[0]["span_id"], format!("{:016x}", sent.remote_span));
    assert_eq!(links[0]["flags"], 1);
    assert_eq!(links[0]["tracestate"], "dd=s:2;o:rum");
    assert_eq!(links[1]["attributes"], json!({"peer": "queue"}));
    let events = json_tag(otel, "events");
    assert_eq!(events[0]["name"], "retry");
    assert_eq!(events[0]["attributes"]["attempt"], 3);
    assert_eq!(events[1]["name"], "exception");
    assert_eq!(otel["meta"]["_dd.span_events.has_exception"], "true");
    let layer = json_tag(&spans["tracing.op"], "events");
    assert_eq!(layer[0]["name"], "user logged in");
    assert_eq!(layer[0]["attributes"]["user"], "u1");
    assert_eq!(layer[0]["attributes"]["count"], 3);
}

/// Our agent in local mode stores the span's `_dd.span_links` / `events` tags (v0.5, the
/// default with our agent) and its trace page lists them, each link pointing at its trace.
#[test]
fn our_agents_trace_page_lists_links_and_events() {
    let dir = apm::run_dir("links-events-local-web");
    let rt = runtime();
    let config = local_config(&dir, apm::free_port());
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let web = web_addr(&agent);
    let tracer = Tracer::new(
        TracerConfig::default()
            .with_service("links-svc")
            .with_agent_url(&format!("http://{}", agent.tcp_addr().unwrap()))
            .unwrap(),
    )
    .unwrap();
    let first = tracer.span("batch.item").start();
    let first_ctx = first.context().expect("recording");
    let linked_trace = first.trace_id().low();
    drop(first);
    let mut consumer = tracer.span("batch.process").link(&first_ctx, [("k", "v")]).start();
    consumer.add_event("cache.miss", [("attempt", AttributeValue::from(2))]);
    let trace = consumer.trace_id().low();
    drop(consumer);
    tracer.flush(Duration::from_secs(10)).expect("delivered");

    // Readiness: both traces are in the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent.status().local.as_ref().map_or(0, |l| l.store.chunks_written) < 2 {
        assert!(std::time::Instant::now() < deadline, "{:#?}", agent.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, page) = apm::http_get(web, &format!("/traces/{trace}"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-links=\"1\""), "{page}");
    assert!(
        page.contains(&format!("<a href=\"/traces/{linked_trace}\">trace {linked_trace}</a>")),
        "the link points at the linked trace: {page}"
    );
    assert!(
        page.contains("data-event=\"cache.miss\"") && page.contains("attempt=2"),
        "{page}"
    );
    let (status, _) = apm::http_get(web, &format!("/traces/{linked_trace}"));
    assert_eq!(status, 200, "the linked trace is there too");
    drop(rt.block_on(agent.shutdown()));
}
