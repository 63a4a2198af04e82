//! OTLP ingest end to end: the real OpenTelemetry Python SDK and its OTLP exporters (gRPC and
//! HTTP/protobuf, from PyPI, `scripts/otel-venv.sh`) export a known set of spans to the agent's
//! OTLP receivers; the stats the loopback intake gets and the local view's JSON API must count
//! exactly the hits and errors sent, per resource. Then bad input over HTTP: 4xx with a reason,
//! partial success for refused spans, counters per protocol.

#[allow(dead_code)] // this binary uses part of the shared intake (no failure injection)
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use support::gated_sink::GatedSink;
use support::intake::Intake;
use support::local_agent::{local_config, web_addr};
use support::runtime::runtime;
use trace_agent::config::{AgentConfig, Secret};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Server spans per exporter run (and as many client spans).
const REQUESTS: u64 = 40;

/// The venv with the OpenTelemetry SDK and exporters (`scripts/otel-venv.sh`).
fn otel_venv() -> PathBuf {
    let dir = std::env::var_os("APM_OTEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("APM_OTEL_VENV is not set: run the tests through scripts/test.sh"));
    assert!(
        dir.join("bin/python").exists(),
        "{} has no python; run scripts/otel-venv.sh",
        dir.display()
    );
    dir
}

/// Runs `testdata/otel/export_spans.py` and checks that every span was exported.
fn export(protocol: &str, endpoint: &str, service: &str) {
    let out = Command::new(otel_venv().join("bin/python"))
        .arg(apm::testdata_dir().join("otel/export_spans.py"))
        .args([protocol, endpoint, service, &REQUESTS.to_string()])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .output()
        .expect("run the OpenTelemetry exporter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{protocol} export to {endpoint} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the exporter's summary");
    assert_eq!(summary["exported"], 2 * REQUESTS, "{summary}");
}

/// `(hits, errors)` per resource the exporter script sends.
fn expected() -> BTreeMap<(&'static str, &'static str), (u64, u64)> {
    let posts = REQUESTS / 2;
    let errors = (0..REQUESTS).filter(|i| i % 8 == 1).count() as u64;
    BTreeMap::from([
        (("http.server.request", "GET /items/{id}"), (REQUESTS - posts, 0)),
        (("http.server.request", "POST /orders"), (posts, errors)),
        (("postgresql.query", "SELECT * FROM items WHERE id = ?"), (REQUESTS, 0)),
    ])
}

fn otlp_config(config: &mut AgentConfig) {
    config.otlp_receiver.grpc_endpoint = Some(format!("127.0.0.1:{}", apm::free_port()));
    config.otlp_receiver.http_endpoint = Some(format!("127.0.0.1:{}", apm::free_port()));
}

#[test]
fn sdk_spans_over_grpc_and_http_reach_the_intake_stats_exactly() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let mut config = AgentConfig::local(apm::free_port());
    config.api_key = Some(Secret::new(KEY));
    config.upstream.apm_dd_url = Some(intake.url());
    otlp_config(&mut config);
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let grpc = agent.otlp_grpc_addr().expect("gRPC receiver");
    let http = agent.otlp_http_addr().expect("HTTP receiver");
    export("grpc", &format!("http://{grpc}"), "otel-grpc");
    export("http", &format!("http://{http}/v1/traces"), "otel-http");
    let status = rt.block_on(agent.shutdown());
    for (name, p) in [("grpc", &status.otlp.grpc), ("http", &status.otlp.http)] {
        assert_eq!(
            (p.spans_received, p.spans_accepted, p.spans_rejected),
            (2 * REQUESTS, 2 * REQUESTS, 0),
            "{name}: {:#?}",
            status.otlp
        );
        assert!(p.requests >= 1 && p.bytes > 0, "{name}: {p:?}");
        assert!(p.errors.is_empty(), "{name}: {p:?}");
    }
    assert_eq!(status.total_received().spans, 4 * REQUESTS, "{status:#?}");

    // Stats: exact hits and errors per (service, name, resource); server spans are top level.
    let mut got: BTreeMap<(String, String, String), (u64, u64, u64)> = BTreeMap::new();
    for p in intake.stats_payloads() {
        for c in &p.stats {
            for b in &c.stats {
                for g in &b.stats {
                    let e = got
                        .entry((g.service.clone(), g.name.clone(), g.resource.clone()))
                        .or_default();
                    e.0 += g.hits;
                    e.1 += g.errors;
                    e.2 += g.top_level_hits;
                }
            }
        }
    }
    let mut want = BTreeMap::new();
    for service in ["otel-grpc", "otel-http"] {
        for ((name, resource), (hits, errors)) in expected() {
            let top = if name == "http.server.request" { hits } else { 0 };
            want.insert(
                (service.to_owned(), name.to_owned(), resource.to_owned()),
                (hits, errors, top),
            );
        }
    }
    assert_eq!(got, want, "stats the intake got");

    // Traces: every span, with the mapping's fields.
    let mut spans = Vec::new();
    for p in intake.agent_payloads() {
        for tp in &p.tracer_payloads {
            assert_eq!(tp.env, "otel-test");
            assert!(tp.tracer_version.starts_with("otlp-"), "{}", tp.tracer_version);
            assert_eq!(tp.language_name, "python");
            for c in &tp.chunks {
                assert_eq!(c.priority, 1);
                spans.extend(c.spans.iter().cloned());
            }
        }
    }
    assert_eq!(spans.len() as u64, 4 * REQUESTS);
    let failing = spans.iter().filter(|s| s.error == 1).collect::<Vec<_>>();
    assert_eq!(
        failing.len() as u64,
        2 * expected()[&("http.server.request", "POST /orders")].1
    );
    for s in failing {
        assert_eq!(s.meta.get("error.type").map(String::as_str), Some("ValueError"));
        assert!(s.meta["error.msg"].starts_with("order "), "{:?}", s.meta);
        assert_eq!(s.meta.get("span.kind").map(String::as_str), Some("server"));
        assert_eq!(s.metrics.get("http.status_code"), Some(&500.0));
    }
}

fn api_get(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = apm::http_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

#[test]
fn sdk_spans_show_up_exactly_in_the_local_view() {
    let rt = runtime();
    let dir = apm::run_dir("otlp-local");
    let mut config = local_config(&dir, apm::free_port());
    otlp_config(&mut config);
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let web = web_addr(&agent);
    export(
        "grpc",
        &format!("http://{}", agent.otlp_grpc_addr().unwrap()),
        "otel-local",
    );
    export(
        "http",
        &format!("http://{}/v1/traces", agent.otlp_http_addr().unwrap()),
        "otel-local",
    );
    // Readiness: the store's stats rows reach what was sent (stats leave every second).
    let want = expected();
    let server_hits: u64 = want
        .iter()
        .filter(|((n, _), _)| *n == "http.server.request")
        .map(|(_, (h, _))| 2 * h)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc = loop {
        // 404 until the store has the service: not ready yet.
        let (code, body) = apm::http_get(
            web,
            "/api/v1/services/otel-local?window=1h&operation=http.server.request",
        );
        let doc: serde_json::Value = if code == 200 {
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
        } else {
            serde_json::Value::Null
        };
        let hits: u64 = doc["resources"]
            .as_array()
            .map_or(0, |r| r.iter().map(|x| x["hits"].as_u64().unwrap_or(0)).sum());
        if hits >= server_hits {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the local view did not get everything: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut got = BTreeMap::new();
    for r in doc["resources"].as_array().unwrap() {
        got.insert(
            r["resource"].as_str().unwrap().to_owned(),
            (r["hits"].as_u64().unwrap(), r["errors"].as_u64().unwrap()),
        );
    }
    let mut wanted = BTreeMap::new();
    for ((name, resource), (hits, errors)) in &want {
        if *name == "http.server.request" {
            wanted.insert((*resource).to_owned(), (2 * hits, 2 * errors));
        }
    }
    assert_eq!(got, wanted, "{doc:#}");
    let db = api_get(web, "/api/v1/services/otel-local?window=1h&operation=postgresql.query");
    assert_eq!(
        db["resources"][0]["resource"], "SELECT * FROM items WHERE id = ?",
        "{db:#}"
    );
    assert_eq!(db["resources"][0]["hits"], 2 * REQUESTS, "{db:#}");
    let status = rt.block_on(agent.shutdown());
    assert_eq!(
        status.otlp.grpc.spans_accepted + status.otlp.http.spans_accepted,
        4 * REQUESTS
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A JSON export of `n` spans of one trace; `bad_id` gives the last one a 4-byte span id.
fn json_export(n: usize, bad_id: bool) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let span_id = if bad_id && i == n - 1 {
                "00000001".to_owned()
            } else {
                format!("{:016x}", i + 1)
            };
            serde_json::json!({
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "work",
                "kind": 2, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000001000000",
                "attributes": [{"key": "http.request.method", "value": {"stringValue": "GET"}}]
            })
        })
        .collect();
    serde_json::json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"spans": spans}]}]})
    .to_string()
    .into_bytes()
}

#[test]
fn bad_http_input_gets_a_reason_and_refused_spans_a_partial_success() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let rt = runtime();
    let mut config = AgentConfig::local(apm::free_port());
    config.max_payload_size = 64 * 1024;
    otlp_config(&mut config);
    config.otlp_receiver.grpc_endpoint = None;
    let agent = rt
        .block_on(trace_agent::start_with_sink(config, |c| {
            trace_agent::pipeline::CountingSink::new(c)
        }))
        .expect("agent");
    let addr = agent.otlp_http_addr().unwrap();
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        let (status, body) = apm::http_request(addr, "POST", "/v1/traces", headers, body).expect("exchange");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let json = [("Content-Type", "application/json")];
    let (s, body) = post(&json, &json_export(3, false));
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains("partialSuccess"), "{body}");
    let (s, body) = post(
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        &gzip(&json_export(4, true)),
    );
    assert_eq!(s, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["partialSuccess"]["rejectedSpans"], 1, "{body}");
    assert!(
        reply["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("span_id must be 8 bytes"),
        "{body}"
    );
    let (s, body) = post(&[("Content-Type", "text/plain")], b"hello");
    assert_eq!(s, 415, "{body}");
    assert!(body.contains("application/x-protobuf"), "{body}");
    let (s, body) = post(&json, b"{\"resourceSpans\": 7}");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("OTLP/JSON"), "{body}");
    let proto = [("Content-Type", "application/x-protobuf")];
    let (s, _) = post(&proto, b"\x0a\xff\xff\xff\xff\x0f");
    assert_eq!(s, 400);
    let (s, body) = post(&json, &vec![b' '; 70 * 1024]);
    assert_eq!(s, 413, "{body}");
    // A small gzip body that inflates past max_payload_size.
    let (s, body) = post(
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        &gzip(&vec![b' '; 1 << 20]),
    );
    assert_eq!(s, 413, "{body}");
    let (s, _) = apm::http_request(addr, "GET", "/v1/metrics", &[], b"").unwrap();
    assert_eq!(s, 404);
    // Protobuf round trip: an empty export gets an empty response.
    let (s, body) = apm::http_request(addr, "POST", "/v1/traces", &proto, b"").unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        ExportTraceServiceResponse::decode(body.as_slice()).unwrap(),
        ExportTraceServiceResponse::default()
    );
    let status = rt.block_on(agent.shutdown());
    let h = &status.otlp.http;
    assert_eq!(
        (h.spans_received, h.spans_accepted, h.spans_rejected),
        (7, 6, 1),
        "{h:#?}"
    );
    let errors: Vec<(&str, u64)> = h.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        errors,
        vec![
            ("decode_json", 1),
            ("decode_proto", 1),
            ("too_large", 2),
            ("unsupported_media_type", 1)
        ]
    );
    assert_eq!(status.forwarded.spans, 6, "{status:#?}");
}

/// One OTLP span for the gRPC client test; `span_len` bytes of span id.
fn proto_span(i: u8, span_len: usize) -> opentelemetry_proto::tonic::trace::v1::Span {
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![1; 16],
        span_id: vec![i; span_len],
        name: "rpc".to_owned(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

#[test]
fn grpc_export_reports_partial_success_and_refuses_oversized_messages() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let rt = runtime();
    let mut config = AgentConfig::local(apm::free_port());
    otlp_config(&mut config);
    config.otlp_receiver.http_endpoint = None;
    config.otlp_receiver.grpc_max_recv_msg_size = 64 * 1024;
    let agent = rt
        .block_on(trace_agent::start_with_sink(
            config,
            trace_agent::pipeline::CountingSink::new,
        ))
        .expect("agent");
    let addr = agent.otlp_grpc_addr().unwrap();
    let request = |spans| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to the gRPC receiver");
        let reply = client
            .export(request(vec![proto_span(1, 8), proto_span(2, 8), proto_span(3, 3)]))
            .await
            .expect("export")
            .into_inner();
        let partial = reply.partial_success.expect("one span was refused");
        assert_eq!(partial.rejected_spans, 1);
        assert!(partial.error_message.contains("span_id must be 8 bytes"), "{partial:?}");
        let mut big = proto_span(4, 8);
        big.name = "x".repeat(100 * 1024);
        let err = client.export(request(vec![big])).await.expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        let ok = client
            .export(request(vec![proto_span(5, 8)]))
            .await
            .expect("the channel still works")
            .into_inner();
        assert!(ok.partial_success.is_none());
    });
    let status = rt.block_on(agent.shutdown());
    let g = &status.otlp.grpc;
    assert_eq!(
        (g.spans_received, g.spans_accepted, g.spans_rejected),
        (4, 3, 1),
        "{g:#?}"
    );
    assert_eq!(status.forwarded.spans, 3);
}

/// A slow next stage backs up into the OTLP receiver: a request that finds the pipeline full is
/// refused before its body is read with a retryable 503 naming the bound (spans that cannot be
/// queued at the hand-off are reported in `partial_success`); nothing is answered "accepted"
/// that was not queued.
#[test]
fn a_full_pipeline_is_a_503_or_a_partial_success_never_a_silent_drop() {
    let rt = runtime();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open, gate) = std::sync::mpsc::channel();
    let mut config = AgentConfig::local(apm::free_port());
    config.pipeline_capacity = 1;
    config.decoders = 1;
    config.decoder_timeout = Duration::from_millis(50);
    config.receiver_timeout = Duration::from_secs(1);
    otlp_config(&mut config);
    config.otlp_receiver.grpc_endpoint = None;
    let agent = rt
        .block_on(trace_agent::start_with_sink(config, |counters| GatedSink {
            entered: entered_tx,
            gate,
            counters,
        }))
        .expect("agent");
    let addr = agent.otlp_http_addr().unwrap();
    let post = move || {
        let (s, b) = apm::http_request(
            addr,
            "POST",
            "/v1/traces",
            &[("Content-Type", "application/json")],
            &json_export(1, false),
        )
        .expect("exchange");
        (s, String::from_utf8_lossy(&b).into_owned())
    };
    // 1: taken by the sink, which blocks; then the channel (capacity 1) fills, with the next
    // export or with the agent's 1 s tick.
    assert_eq!(post(), (200, "{}".to_owned()));
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut accepted = 1;
    // Then: the pipeline is full (items): a retryable 503 before the body is read.
    let (s, body) = loop {
        match post() {
            (200, _) if accepted < 3 => accepted += 1,
            other => break other,
        }
    };
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("pipeline is full"), "{body}");
    assert!(accepted <= 2, "{accepted} accepted with room for 1 queued");
    for _ in 0..accepted {
        open.send(()).unwrap();
    }
    let status = rt.block_on(agent.shutdown());
    let h = &status.otlp.http;
    assert_eq!(
        (h.spans_received, h.spans_accepted, h.spans_rejected),
        (accepted, accepted, 0),
        "{h:#?}"
    );
    assert_eq!(h.errors.get("pipeline_full"), Some(&1), "{h:#?}");
    assert_eq!(status.forwarded.spans, accepted);
    assert_eq!(status.dropped.get("otlp_pipeline_full").map(|d| d.payloads), Some(1));
}
