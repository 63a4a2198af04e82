//! The upstream writers against a loopback intake (tests/support/intake.rs): what arrives
//! (AgentPayload protobuf + zstd, StatsPayload msgpack + gzip, OTLP protobuf), the headers,
//! retries until recovery without loss or duplicates, permanent rejections (403 logged once
//! with the masked key, queue bounded), 404 not retried, unreachable intake, the OTLP mapping
//! field by field, and the real Python `ddtrace` demo through our agent to both writers.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libdd_trace_protobuf::pb;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::intake::Intake;
use support::runtime::runtime;
use trace_agent::config::{AgentConfig, OtlpExportConfig, Secret};
use trace_agent::pipeline::{ChunkSink, ProcessedPayload, SinkCounters};
use trace_agent::upstream::{
    Backoff, DatadogWriter, DatadogWriterConfig, DropReason, OtlpWriter, OtlpWriterConfig, Upstream, convert,
};

const KEY: &str = "0123456789abcdef0123456789abcdef";

// ---- log capture (one global subscriber; tests use distinct keys/URLs to tell lines apart) ----

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    let buf = LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogBuf(Arc::clone(&buf));
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

// ---- builders ----

fn fast(mut c: DatadogWriterConfig) -> DatadogWriterConfig {
    c.backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    c.request_timeout = Duration::from_secs(5);
    c.flush_period = Duration::from_millis(50);
    c
}

fn agent_config(url: &str, key: &str) -> AgentConfig {
    let mut c = AgentConfig::local(0);
    c.api_key = Some(Secret::new(key));
    c.hostname = "test-host".to_owned();
    c.default_env = "staging".to_owned();
    c.upstream.apm_dd_url = Some(url.to_owned());
    c
}

fn dd_config(url: &str, key: &str) -> DatadogWriterConfig {
    fast(trace_agent::config::compile::datadog_writer(&agent_config(url, key)).unwrap())
}

fn otlp_config(url: &str) -> OtlpWriterConfig {
    let mut c = agent_config("http://unused.invalid", KEY);
    c.upstream.otlp_export = Some(OtlpExportConfig {
        endpoint: url.to_owned(),
        headers: BTreeMap::from([("x-collector-token".to_owned(), Secret::new("tok-123"))]),
    });
    let mut o = trace_agent::config::compile::otlp_writer(&c).unwrap();
    o.backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    o.flush_period = Duration::from_millis(50);
    o
}

fn span(trace_id: u64, span_id: u64, parent_id: u64) -> pb::Span {
    pb::Span {
        service: "checkout".to_owned(),
        name: "http.request".to_owned(),
        resource: "GET /cart".to_owned(),
        trace_id,
        span_id,
        parent_id,
        start: 1_700_000_000_000_000_000,
        duration: 1_500_000,
        error: 0,
        meta: HashMap::from([("http.method".to_owned(), "GET".to_owned())]),
        metrics: HashMap::from([("_sampling_priority_v1".to_owned(), 1.0)]),
        r#type: "web".to_owned(),
        ..Default::default()
    }
}

/// One tracer payload with one chunk of two spans of trace `trace_id`.
fn payload(trace_id: u64) -> Arc<pb::TracerPayload> {
    Arc::new(pb::TracerPayload {
        language_name: "rust".to_owned(),
        tracer_version: "0.1.0".to_owned(),
        env: "prod".to_owned(),
        chunks: vec![pb::TraceChunk {
            priority: 1,
            spans: vec![
                span(trace_id, trace_id * 10, 0),
                span(trace_id, trace_id * 10 + 1, trace_id * 10),
            ],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn trace_ids(payloads: &[pb::AgentPayload]) -> Vec<u64> {
    payloads
        .iter()
        .flat_map(|a| &a.tracer_payloads)
        .flat_map(|t| &t.chunks)
        .map(|c| c.spans[0].trace_id)
        .collect()
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_payload_carries_the_tracer_payloads_with_headers_to_every_endpoint() {
    let main = Intake::start().await;
    let extra = Intake::start().await;
    let mut cfg = agent_config(&main.url(), KEY);
    cfg.upstream.additional_endpoints = BTreeMap::from([(
        extra.url(),
        vec![Secret::new("extra-key-one-11111"), Secret::new("extra-key-two-22222")],
    )]);
    let writer = DatadogWriter::start(fast(trace_agent::config::compile::datadog_writer(&cfg).unwrap())).unwrap();
    let mut python = (*payload(1)).clone();
    python.language_name = "python".to_owned();
    let sent = [payload(7), Arc::new(python)];
    for p in &sent {
        writer.send_traces(Arc::clone(p));
    }
    let status = writer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        status.traces.payloads_sent, 3,
        "one batch to 3 (url, key) pairs: {status:#?}"
    );
    assert_eq!(status.traces.items_sent, 6);
    assert!(status.traces.dropped_payloads.is_empty(), "{status:#?}");

    let by_key = |intake: &Intake| -> Vec<String> {
        intake
            .requests_to("/api/v0.2/traces")
            .iter()
            .map(|r| r.header("dd-api-key"))
            .collect()
    };
    assert_eq!(by_key(&main), vec![KEY.to_owned()]);
    let mut extra_keys = by_key(&extra);
    extra_keys.sort();
    assert_eq!(extra_keys, vec!["extra-key-one-11111", "extra-key-two-22222"]);

    let req = &main.requests_to("/api/v0.2/traces")[0];
    assert_eq!(req.header("content-type"), "application/x-protobuf");
    assert_eq!(req.header("content-encoding"), "zstd");
    assert_eq!(req.header("content-length"), req.raw.len().to_string());
    assert_eq!(
        req.header("user-agent"),
        format!(
            "Datadog Trace Agent/{}/trace-agent-rs-0.1.0",
            trace_agent::identity::AGENT_VERSION
        )
    );
    assert_eq!(req.header("x-datadog-reported-languages"), "python|rust");

    let ap = &main.agent_payloads()[0];
    assert_eq!(ap.host_name, "test-host");
    assert_eq!(ap.env, "staging");
    assert_eq!(ap.agent_version, trace_agent::identity::AGENT_VERSION);
    assert_eq!(ap.target_tps, 10.0);
    assert_eq!(ap.error_tps, 10.0);
    assert!(!ap.rare_sampler_enabled);
    let got: Vec<pb::TracerPayload> = ap.tracer_payloads.clone();
    let want: Vec<pb::TracerPayload> = sent.iter().map(|p| (**p).clone()).collect();
    assert_eq!(got, want, "tracer payloads arrive unchanged, in order");
    assert_eq!(extra.agent_payloads()[0].tracer_payloads, want);
}

#[tokio::test]
async fn stats_are_msgpack_gzip_with_the_go_agent_field_names() {
    let intake = Intake::start().await;
    let writer = DatadogWriter::start(dd_config(&intake.url(), KEY)).unwrap();
    let group = pb::ClientGroupedStats {
        service: "checkout".to_owned(),
        name: "http.request".to_owned(),
        resource: "GET /cart".to_owned(),
        http_status_code: 200,
        r#type: "web".to_owned(),
        hits: 10,
        errors: 1,
        duration: 12345,
        ok_summary: vec![1, 2, 3],
        error_summary: vec![4],
        top_level_hits: 10,
        span_kind: "server".to_owned(),
        is_trace_root: 1,
        grpc_status_code: "0".to_owned(),
        ..Default::default()
    };
    let stats = pb::StatsPayload {
        agent_hostname: "test-host".to_owned(),
        agent_env: "staging".to_owned(),
        agent_version: "7.70.0".to_owned(),
        stats: vec![pb::ClientStatsPayload {
            hostname: "h".to_owned(),
            env: "prod".to_owned(),
            runtime_id: "rid".to_owned(),
            stats: vec![pb::ClientStatsBucket {
                start: 1_700_000_000_000_000_000,
                duration: 10_000_000_000,
                stats: vec![group],
                agent_time_shift: 0,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    writer.send_stats(Arc::new(stats.clone()));
    assert!(
        intake
            .wait_until(Duration::from_secs(5), |r| r
                .iter()
                .any(|r| r.path == "/api/v0.2/stats"))
            .await,
        "stats are sent when handed over, without waiting for a flush"
    );
    let status = writer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (status.stats.payloads_sent, status.stats.items_sent),
        (1, 1),
        "{status:#?}"
    );
    let req = &intake.requests_to("/api/v0.2/stats")[0];
    assert_eq!(req.header("content-type"), "application/msgpack");
    assert_eq!(req.header("content-encoding"), "gzip");
    assert_eq!(req.header("dd-api-key"), KEY);
    assert_eq!(intake.stats_payloads(), vec![stats]);
    // Field names as the Go agent's msgp encoding writes them; sketches as msgpack bin.
    let value = rmpv::decode::read_value(&mut req.body.as_slice()).unwrap();
    let keys = |v: &rmpv::Value| -> Vec<String> {
        v.as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect()
    };
    let get = |v: &rmpv::Value, key: &str| -> rmpv::Value {
        v.as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    let top = keys(&value);
    for k in [
        "AgentHostname",
        "AgentEnv",
        "Stats",
        "AgentVersion",
        "ClientComputed",
        "SplitPayload",
    ] {
        assert!(top.iter().any(|t| t == k), "{k} missing in {top:?}");
    }
    let client = get(&value, "Stats").as_array().unwrap()[0].clone();
    assert_eq!(get(&client, "RuntimeID").as_str(), Some("rid"));
    let bucket = get(&client, "Stats").as_array().unwrap()[0].clone();
    let group = get(&bucket, "Stats").as_array().unwrap()[0].clone();
    let gkeys = keys(&group);
    for k in [
        "Service",
        "Name",
        "Resource",
        "HTTPStatusCode",
        "Type",
        "DBType",
        "Hits",
        "Errors",
        "Duration",
        "OkSummary",
        "ErrorSummary",
        "Synthetics",
        "TopLevelHits",
        "SpanKind",
        "PeerTags",
        "IsTraceRoot",
        "GRPCStatusCode",
    ] {
        assert!(gkeys.iter().any(|g| g == k), "{k} missing in {gkeys:?}");
    }
    assert_eq!(get(&group, "OkSummary"), rmpv::Value::Binary(vec![1, 2, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_recovery_without_loss_or_duplicates() {
    let intake = Intake::start().await;
    intake.fail_next(2, 500);
    intake.fail_next(2, 503);
    intake.fail_next(1, 408);
    let mut cfg = dd_config(&intake.url(), KEY);
    cfg.max_batch_bytes = 1; // one tracer payload per request
    cfg.max_retries = 10;
    cfg.traces.connection_limit = 2;
    let writer = DatadogWriter::start(cfg).unwrap();
    for id in 1..=20 {
        writer.send_traces(payload(id));
    }
    let status = writer.shutdown(Duration::from_secs(10)).await;
    let mut ids = trace_ids(&intake.agent_payloads());
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<u64>>(), "each trace exactly once");
    let t = &status.traces;
    assert_eq!(t.payloads_sent, 20, "{status:#?}");
    assert_eq!(t.retries, 5);
    assert_eq!(
        t.failures,
        BTreeMap::from([("408".to_owned(), 1), ("500".to_owned(), 2), ("503".to_owned(), 2)])
    );
    assert!(t.dropped_payloads.is_empty(), "{status:#?}");
    assert_eq!(intake.requests_to("/api/v0.2/traces").len(), 25);
    assert!(t.last_success.is_some());
    assert!(t.last_error.as_ref().is_some_and(|(_, e)| !e.contains(KEY)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_403_is_counted_logged_once_with_the_masked_key_and_stays_bounded() {
    let key = "forbidden-key-0000000000000abcde";
    logs(); // install the capturing subscriber before anything logs
    let intake = Intake::start().await;
    intake.fail_always(403);
    let mut cfg = dd_config(&intake.url(), key);
    cfg.max_batch_bytes = 1;
    cfg.traces.connection_limit = 1;
    cfg.traces.queue_size = 4;
    cfg.traces.max_queue_bytes = 1 << 20;
    let writer = DatadogWriter::start(cfg).unwrap();
    const N: u64 = 3000;
    let mut max_depth = 0;
    for id in 1..=N {
        writer.send_traces(payload(id));
        let s = writer.status().traces;
        max_depth = max_depth.max(s.queue_depth);
        assert!(s.queue_bytes <= 1 << 20);
    }
    assert!(max_depth <= 4, "queue depth {max_depth} above its bound of 4");
    assert!(intake.wait_until(Duration::from_secs(5), |r| !r.is_empty()).await);
    let status = writer.shutdown(Duration::from_secs(5)).await;
    let t = &status.traces;
    assert_eq!(t.payloads_sent, 0);
    let rejected = t.dropped_payloads.get(&DropReason::Rejected).copied().unwrap_or(0);
    assert!(rejected >= 1, "{status:#?}");
    assert_eq!(
        t.failures,
        BTreeMap::from([("403".to_owned(), rejected)]),
        "{status:#?}"
    );
    assert_eq!(t.retries, 0, "403 is not retried");
    assert_eq!(t.dropped_total(), N, "every payload accounted for: {status:#?}");
    assert_eq!(
        t.dropped_items.values().sum::<u64>(),
        N,
        "every chunk accounted for: {status:#?}"
    );
    assert!(t.dropped_payloads.get(&DropReason::QueueFull).copied().unwrap_or(0) > 0);
    assert_eq!(
        intake.requests().len() as u64,
        rejected,
        "one request per rejected payload"
    );
    let logs = logs();
    let masked = trace_agent::config::mask(key);
    assert_eq!(
        logs.matches(&masked).count(),
        1,
        "logged once with the masked key:\n{logs}"
    );
    assert!(!logs.contains(key), "the raw key never appears in the logs");
    assert!(logs.contains("403"));
}

#[tokio::test]
async fn not_found_is_reported_and_not_retried() {
    let intake = Intake::start().await;
    intake.fail_always(404);
    let writer = DatadogWriter::start(dd_config(&intake.url(), KEY)).unwrap();
    writer.send_traces(payload(1));
    let status = writer.shutdown(Duration::from_secs(5)).await;
    let t = &status.traces;
    assert_eq!(intake.requests().len(), 1, "not retried");
    assert_eq!(t.retries, 0);
    assert_eq!(t.failures, BTreeMap::from([("404".to_owned(), 1)]));
    assert_eq!(t.dropped_payloads, BTreeMap::from([(DropReason::Rejected, 1)]));
    assert_eq!(t.dropped_items, BTreeMap::from([(DropReason::Rejected, 1)]));
    let (_, err) = t.last_error.clone().unwrap();
    assert!(
        err.contains("404") && err.contains("scripted 404"),
        "status and body excerpt: {err}"
    );
}

#[tokio::test]
async fn unreachable_intake_is_retried_then_dropped() {
    let port = apm::free_port(); // nothing listens there
    let mut cfg = dd_config(&format!("http://127.0.0.1:{port}"), KEY);
    cfg.max_retries = 2;
    let writer = DatadogWriter::start(cfg).unwrap();
    writer.send_traces(payload(1));
    let status = writer.shutdown(Duration::from_secs(5)).await;
    let t = &status.traces;
    assert_eq!(t.failures, BTreeMap::from([("network".to_owned(), 3)]), "{status:#?}");
    assert_eq!(t.retries, 2);
    assert_eq!(t.dropped_payloads, BTreeMap::from([(DropReason::RetriesExhausted, 1)]));
}

#[tokio::test]
async fn a_timed_out_request_is_retried() {
    let intake = Intake::start().await;
    intake.stall_next(1, Duration::from_secs(3));
    let mut cfg = dd_config(&intake.url(), KEY);
    cfg.request_timeout = Duration::from_millis(300);
    let writer = DatadogWriter::start(cfg).unwrap();
    writer.send_traces(payload(1));
    let status = writer.shutdown(Duration::from_secs(5)).await;
    let t = &status.traces;
    assert_eq!(t.failures, BTreeMap::from([("timeout".to_owned(), 1)]), "{status:#?}");
    assert_eq!((t.retries, t.payloads_sent), (1, 1));
    assert!(t.dropped_payloads.is_empty());
}

#[tokio::test]
async fn batches_flush_on_the_period_and_at_the_size_limit() {
    let intake = Intake::start().await;
    let mut cfg = dd_config(&intake.url(), KEY);
    cfg.flush_period = Duration::from_millis(100);
    let one = {
        use prost::Message;
        payload(1).encoded_len()
    };
    cfg.max_batch_bytes = one * 3;
    let writer = DatadogWriter::start(cfg).unwrap();
    // 3 payloads fill a batch exactly: sealed at once; the 4th waits for the period.
    for id in 1..=4 {
        writer.send_traces(payload(id));
    }
    assert!(
        intake.wait_until(Duration::from_secs(5), |r| r.len() == 2).await,
        "a full batch and, after the flush period, the rest"
    );
    let batches: Vec<Vec<u64>> = intake
        .agent_payloads()
        .iter()
        .map(|a| trace_ids(std::slice::from_ref(a)))
        .collect();
    assert!(
        batches.contains(&vec![1, 2, 3]) && batches.contains(&vec![4]),
        "{batches:?}"
    );
    writer.shutdown(Duration::from_secs(5)).await;
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_owned())
}

#[tokio::test]
async fn otlp_export_maps_a_span_field_by_field() {
    let intake = Intake::start().await;
    let writer = OtlpWriter::start(otlp_config(&intake.url())).unwrap();
    let mut root = span(0x1122, 0xaa, 0);
    root.meta.insert("_dd.p.tid".to_owned(), "6958d2b500000000".to_owned());
    root.meta.insert("span.kind".to_owned(), "client".to_owned());
    let mut child = span(0x1122, 0xbb, 0xaa);
    child.error = 1;
    child.meta.insert("error.message".to_owned(), "boom".to_owned());
    child.meta.insert("version".to_owned(), "1.2.3".to_owned());
    child.metrics.insert("http.status_code".to_owned(), 500.0);
    child.span_links = vec![pb::SpanLink {
        trace_id: 5,
        trace_id_high: 6,
        span_id: 7,
        attributes: HashMap::from([("link.kind".to_owned(), "follows".to_owned())]),
        tracestate: "dd=s:1".to_owned(),
        flags: 0x8000_0001,
    }];
    child.span_events = vec![pb::SpanEvent {
        time_unix_nano: 42,
        name: "exception".to_owned(),
        attributes: HashMap::from([(
            "attempt".to_owned(),
            pb::AttributeAnyValue {
                r#type: 2,
                int_value: 3,
                ..Default::default()
            },
        )]),
    }];
    let tp = pb::TracerPayload {
        language_name: ".NET".to_owned(),
        language_version: "8.0".to_owned(),
        tracer_version: "3.1.0".to_owned(),
        runtime_id: "rid-1".to_owned(),
        hostname: "web-1".to_owned(),
        container_id: "cid-1".to_owned(),
        env: "prod".to_owned(),
        tags: HashMap::from([("_dd.apm.mode".to_owned(), "edge".to_owned())]),
        chunks: vec![pb::TraceChunk {
            priority: 2,
            spans: vec![root, child],
            ..Default::default()
        }],
        ..Default::default()
    };
    writer.send_traces(Arc::new(tp));
    writer.send_stats(Arc::new(pb::StatsPayload::default()));
    let status = writer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(status.traces.payloads_sent, 1, "{status:#?}");
    assert_eq!(status.stats.payloads_sent, 0, "no stats over OTLP");
    let reqs = intake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/traces");
    assert_eq!(reqs[0].header("content-type"), "application/x-protobuf");
    assert_eq!(reqs[0].header("x-collector-token"), "tok-123");

    let export = &intake.otlp_requests()[0];
    assert_eq!(export.resource_spans.len(), 1, "one service");
    let rs = &export.resource_spans[0];
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "service.name"), Some(&s("checkout")));
    assert_eq!(attr(res, "deployment.environment.name"), Some(&s("prod")));
    assert_eq!(attr(res, "telemetry.sdk.language"), Some(&s("dotnet")));
    assert_eq!(attr(res, "telemetry.sdk.name"), Some(&s("datadog")));
    assert_eq!(attr(res, "telemetry.sdk.version"), Some(&s("3.1.0")));
    assert_eq!(attr(res, "process.runtime.version"), Some(&s("8.0")));
    assert_eq!(attr(res, "host.name"), Some(&s("web-1")));
    assert_eq!(attr(res, "container.id"), Some(&s("cid-1")));
    assert_eq!(attr(res, "service.instance.id"), Some(&s("rid-1")));
    assert_eq!(attr(res, "_dd.apm.mode"), Some(&s("edge")));
    let scope = &rs.scope_spans[0];
    assert_eq!(scope.scope.as_ref().map(|s| s.name.as_str()), Some("datadog"));
    let spans = &scope.spans;
    assert_eq!(spans.len(), 2);
    let (r, c) = (&spans[0], &spans[1]);
    let mut tid = 0x6958_d2b5_0000_0000u64.to_be_bytes().to_vec();
    tid.extend_from_slice(&0x1122u64.to_be_bytes());
    assert_eq!(r.trace_id, tid, "128-bit id from _dd.p.tid + low 64");
    assert_eq!(c.trace_id, tid, "the child gets the chunk's high bits too");
    assert_eq!(r.span_id, 0xaau64.to_be_bytes().to_vec());
    assert!(r.parent_span_id.is_empty(), "root has no parent");
    assert_eq!(c.parent_span_id, 0xaau64.to_be_bytes().to_vec());
    assert_eq!(r.name, "http.request");
    assert_eq!(r.kind, SpanKind::Client as i32, "from span.kind");
    assert_eq!(c.kind, SpanKind::Server as i32, "type web without span.kind");
    assert_eq!(r.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(r.end_time_unix_nano, 1_700_000_000_001_500_000);
    assert_eq!(r.flags, 1, "sampled");
    assert!(r.status.is_none(), "unset when no error");
    let st = c.status.as_ref().unwrap();
    assert_eq!((st.code, st.message.as_str()), (StatusCode::Error as i32, "boom"));
    assert_eq!(attr(&r.attributes, "resource.name"), Some(&s("GET /cart")));
    assert_eq!(attr(&r.attributes, "operation.name"), Some(&s("http.request")));
    assert_eq!(attr(&r.attributes, "span.type"), Some(&s("web")));
    assert_eq!(attr(&r.attributes, "http.method"), Some(&s("GET")));
    assert_eq!(attr(&c.attributes, "version"), Some(&s("1.2.3")));
    assert_eq!(
        attr(&c.attributes, "http.status_code"),
        Some(&any_value::Value::DoubleValue(500.0))
    );
    assert_eq!(
        attr(&r.attributes, "_sampling_priority_v1"),
        Some(&any_value::Value::DoubleValue(1.0))
    );
    let keys: Vec<&str> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), keys.iter().collect::<HashSet<_>>().len(), "unique keys");
    let l = &c.links[0];
    let mut ltid = 6u64.to_be_bytes().to_vec();
    ltid.extend_from_slice(&5u64.to_be_bytes());
    assert_eq!(
        (l.trace_id.clone(), l.span_id.clone()),
        (ltid, 7u64.to_be_bytes().to_vec())
    );
    assert_eq!((l.trace_state.as_str(), l.flags), ("dd=s:1", 1));
    assert_eq!(attr(&l.attributes, "link.kind"), Some(&s("follows")));
    let e = &c.events[0];
    assert_eq!((e.time_unix_nano, e.name.as_str()), (42, "exception"));
    assert_eq!(attr(&e.attributes, "attempt"), Some(&any_value::Value::IntValue(3)));
}

// ---- the real ddtrace demo through our agent to both writers ----

/// Converts every chunk and hands it to the writers (stands in for samplers + stats).
struct ForwardSink {
    writers: Vec<Arc<dyn Upstream>>,
    counters: Arc<SinkCounters>,
}

impl ChunkSink for ForwardSink {
    fn consume(&mut self, p: ProcessedPayload) {
        let tp = Arc::new(convert::tracer_payload(p.payload.get()));
        self.counters
            .traces
            .fetch_add(tp.chunks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for w in &self.writers {
            w.send_traces(Arc::clone(&tp));
        }
    }

    fn flush(&mut self) {
        for w in &self.writers {
            w.flush();
        }
    }
}

/// 8 Flask requests: every 4th is `/api/error` (11 spans), the others 9 spans.
const REQUESTS: usize = 8;
const EXPECTED_SPANS: usize = 6 * 9 + 2 * 11;

#[test]
fn real_ddtrace_traces_arrive_complete_in_agent_payload_and_otlp() {
    let rt = runtime();
    let port = apm::free_port();
    let (intake, dd, otlp, agent) = rt.block_on(async {
        let intake = Intake::start().await;
        let dd = DatadogWriter::start(dd_config(&intake.url(), KEY)).unwrap();
        let otlp = OtlpWriter::start(otlp_config(&intake.url())).unwrap();
        let writers: Vec<Arc<dyn Upstream>> = vec![Arc::new(dd.clone()), Arc::new(otlp.clone())];
        let agent = trace_agent::start_with_sink(AgentConfig::local(port), move |counters| ForwardSink {
            writers,
            counters,
        })
        .await
        .unwrap();
        (intake, dd, otlp, agent)
    });
    let run = apm::run_flask_demo(port, &apm::run_dir("agent_upstream_ddtrace"), REQUESTS, &[]);
    assert_eq!(run.send_errors, 0, "{}", run.summary);
    let (dd_status, otlp_status) = rt.block_on(async {
        agent.shutdown().await;
        (
            dd.shutdown(Duration::from_secs(5)).await,
            otlp.shutdown(Duration::from_secs(5)).await,
        )
    });
    assert!(dd_status.traces.dropped_payloads.is_empty(), "{dd_status:#?}");
    assert!(otlp_status.traces.dropped_payloads.is_empty(), "{otlp_status:#?}");

    let aps = intake.agent_payloads();
    let chunks: Vec<&pb::TraceChunk> = aps
        .iter()
        .flat_map(|a| &a.tracer_payloads)
        .flat_map(|t| &t.chunks)
        .collect();
    assert_eq!(chunks.len(), REQUESTS, "every trace arrives");
    let spans: Vec<&pb::Span> = chunks.iter().flat_map(|c| &c.spans).collect();
    assert_eq!(spans.len(), EXPECTED_SPANS, "every span arrives");
    let ids: HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), EXPECTED_SPANS, "no span duplicated");
    for c in &chunks {
        let root = c.spans.iter().find(|s| s.parent_id == 0).expect("a root per trace");
        assert!(root.resource.starts_with("GET /"), "{}", root.resource);
        assert!(c.spans.iter().all(|s| s.trace_id == root.trace_id));
    }
    let errors = spans
        .iter()
        .filter(|s| s.error == 1 && s.meta.contains_key("error.message"));
    assert!(errors.count() >= 2, "the /api/error spans carry their error");
    let tp = &aps[0].tracer_payloads[0];
    assert_eq!(tp.language_name, "python");
    assert!(!tp.tracer_version.is_empty());
    let req = &intake.requests_to("/api/v0.2/traces")[0];
    assert_eq!(req.header("x-datadog-reported-languages"), "python");

    let otlp_spans: Vec<_> = intake
        .otlp_requests()
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|rs| {
            let lang = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "telemetry.sdk.language").cloned());
            assert_eq!(lang, Some(s("python")));
            rs.scope_spans.into_iter().flat_map(|ss| ss.spans)
        })
        .collect();
    assert_eq!(otlp_spans.len(), EXPECTED_SPANS, "every span exported over OTLP");
    let otlp_ids: HashSet<Vec<u8>> = otlp_spans.iter().map(|s| s.span_id.clone()).collect();
    let dd_ids: HashSet<Vec<u8>> = ids.iter().map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(otlp_ids, dd_ids, "the same spans on both upstreams");
    drop(intake);
}
