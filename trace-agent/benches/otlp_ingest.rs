//! OTLP ingest cost per span: protobuf decoding of an `ExportTraceServiceRequest`, the mapping
//! to Datadog spans (`otlp_in::mapping`), and the agent's processing (normalize, obfuscate,
//! top level) on a request like an instrumented web service exports: 100 traces of 10 spans
//! (an HTTP server span, 6 PostgreSQL client spans with their statements, 2 HTTP client spans,
//! 1 internal span), typical semantic-convention attributes, one resource.
//!
//! There is no Rust peer to run next to it (libdatadog has no OTLP → Datadog mapping; the
//! Datadog agent's is Go): the figures are absolute.
//!
//! `cargo bench -p trace-agent --bench otlp_ingest -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use trace_agent::config::AgentConfig;
use trace_agent::otlp_in::mapping::build::{kv, request, s};
use trace_agent::otlp_in::mapping::{MapOptions, map_request};
use trace_agent::process::{RequestFacts, process_payload};

/// Same allocator as the `trace-agent` binary.
#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

fn shop_request() -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for t in 0..100u64 {
        let mut trace_id = vec![0u8; 8];
        trace_id.extend_from_slice(&(t + 1).to_be_bytes());
        let root_id = ((t + 1) << 8).to_be_bytes().to_vec();
        let start = 1_700_000_000_000_000_000u64 + t * 1_000_000;
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: "GET /items/{id}".to_owned(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5_000_000,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s("/items/{id}")),
                kv("url.path", s("/items/42")),
                kv("url.scheme", s("http")),
                kv("server.address", s("shop.local")),
                kv("client.address", s("10.1.2.3")),
                kv("user_agent.original", s("curl/8.5.0")),
                kv("http.response.status_code", Value::IntValue(200)),
            ],
            status: Some(Status::default()),
            ..Default::default()
        });
        for c in 1..10u64 {
            let (kind, name, attributes) = match c {
                1..=6 => (
                    3,
                    "SELECT shop",
                    vec![
                        kv("db.system", s("postgresql")),
                        kv("db.name", s("shop")),
                        kv(
                            "db.statement",
                            s(&format!(
                                "SELECT id, name, price FROM items WHERE id = {} AND shop = 'main'",
                                t * 10 + c
                            )),
                        ),
                        kv("server.address", s("db.local")),
                        kv("server.port", Value::IntValue(5432)),
                    ],
                ),
                7 | 8 => (
                    3,
                    "GET",
                    vec![
                        kv("http.request.method", s("GET")),
                        kv("url.full", s("http://pricing.local/prices/42?currency=EUR")),
                        kv("server.address", s("pricing.local")),
                        kv("http.response.status_code", Value::IntValue(200)),
                    ],
                ),
                _ => (1, "render", vec![kv("template", s("item.html"))]),
            };
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: (((t + 1) << 8) + c).to_be_bytes().to_vec(),
                parent_span_id: root_id.clone(),
                name: name.to_owned(),
                kind,
                start_time_unix_nano: start + c * 100_000,
                end_time_unix_nano: start + c * 100_000 + 80_000,
                attributes,
                ..Default::default()
            });
        }
    }
    request(
        vec![
            kv("service.name", s("shop")),
            kv("service.version", s("1.4.2")),
            kv("deployment.environment.name", s("prod")),
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.version", s("1.45.2")),
            kv("host.name", s("web-1")),
            kv("process.pid", Value::IntValue(4242)),
        ],
        ("opentelemetry.instrumentation.flask", "0.59b0"),
        spans,
    )
}

fn benches(c: &mut Criterion) {
    let body = shop_request().encode_to_vec();
    let spans = 1000u64;
    let config = AgentConfig::default();
    let process = trace_agent::config::compile::process(&config).expect("default config compiles");
    let opts = MapOptions {
        default_env: "none",
        hostname: "agent-host",
        ..MapOptions::default()
    };
    let mut g = c.benchmark_group("otlp_ingest");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(ExportTraceServiceRequest::decode(black_box(body.as_slice())).ok()));
    });
    g.bench_function("decode+map", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(body.as_slice())).ok();
            black_box(req.map(|r| map_request(&r, &opts)))
        });
    });
    g.bench_function("decode+map+process", |b| {
        b.iter(|| {
            let Ok(req) = ExportTraceServiceRequest::decode(black_box(body.as_slice())) else {
                return;
            };
            let mapped = map_request(&req, &opts);
            for mut m in mapped.payloads {
                let facts = RequestFacts {
                    lang: "",
                    client_computed_top_level: true,
                };
                black_box(process_payload(
                    &mut m.payload,
                    &facts,
                    &process,
                    1_700_000_000_000_000_000,
                ));
                black_box(m);
            }
        });
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
