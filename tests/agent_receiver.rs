//! Our agent's receiver over real HTTP: the bad-input table (each with its status), headers on
//! every reply, rates, limits, overload, timeouts and graceful shutdown.

#[path = "support/gated_sink.rs"]
mod gated_sink;
#[path = "support/runtime.rs"]
mod runtime;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use apm::pb_field;
use gated_sink::GatedSink;
use runtime::runtime;
use sha2_free::sha256_hex;
use trace_agent::config::AgentConfig;

/// A minimal SHA-256 so the test checks `Datadog-Agent-State` independently of the agent's code.
mod sha2_free {
    pub(crate) fn sha256_hex(data: &[u8]) -> String {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(data)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    agent: Option<trace_agent::Agent>,
    addr: SocketAddr,
}

impl Harness {
    fn start(mut config: AgentConfig) -> Self {
        let rt = runtime();
        config.receiver_port = apm::free_port();
        // These tests look at the receiver: no local store or web view.
        config.local.mode = trace_agent::local::LocalMode::Off;
        let agent = rt.block_on(trace_agent::start(config)).unwrap();
        let addr = agent.tcp_addr().unwrap();
        Self {
            rt,
            agent: Some(agent),
            addr,
        }
    }

    fn status(&self) -> trace_agent::status::StatusSnapshot {
        self.agent.as_ref().unwrap().status()
    }

    /// Shuts down (draining the pipeline) and returns the final counters.
    fn shutdown(mut self) -> trace_agent::status::StatusSnapshot {
        let agent = self.agent.take().unwrap();
        self.rt.block_on(agent.shutdown())
    }

    /// Raw exchange returning status, lower-cased head and body.
    fn raw(&self, request: &[u8]) -> (u16, String, Vec<u8>) {
        raw_exchange(self.addr, request)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            self.rt.block_on(a.shutdown());
        }
    }
}

fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    read_response(&mut connect_and_send(addr, Duration::from_secs(20), request))
}

/// A connection to `addr` that has sent `bytes` (maybe a part of a request) and reads with
/// `read_timeout`.
fn connect_and_send(addr: SocketAddr, read_timeout: Duration, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.write_all(bytes).unwrap();
    s
}

fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a full HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A valid v0.4 payload of `traces` one-span traces for `service`.
fn v04(traces: u64, service: &str) -> Vec<u8> {
    let traces: Vec<Vec<serde_json::Value>> = (1..=traces)
        .map(|i| {
            vec![
                serde_json::json!({"service": service, "name": "web.request", "resource": "GET /", "trace_id": i,
                "span_id": i, "start": 1_700_000_000_000_000_000u64, "duration": 10, "meta": {"env": "test"}}),
            ]
        })
        .collect();
    rmp_serde::to_vec_named(&traces).unwrap()
}

/// Appends a msgpack fixstr (tests use short keys only).
fn fixstr(buf: &mut Vec<u8>, s: &str) {
    buf.push(0xa0 | u8::try_from(s.len()).unwrap());
    buf.extend_from_slice(s.as_bytes());
}

/// `(name, path, headers, body, expected status, expected body fragment)`.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

const MSGPACK: (&str, &str) = ("Content-Type", "application/msgpack");

#[test]
fn bad_input_table() {
    let h = Harness::start(AgentConfig {
        max_payload_size: 64 * 1024,
        ..AgentConfig::default()
    });
    let good = v04(2, "svc");
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut wrong_type = Vec::new();
    wrong_type.push(0x91);
    wrong_type.push(0x91);
    wrong_type.push(0x81);
    fixstr(&mut wrong_type, "span_id");
    fixstr(&mut wrong_type, "nope");
    let absurd = vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x90];
    let mut deep = vec![0x91, 0x91, 0x81, 0xa1, b'x'];
    deep.extend(std::iter::repeat_n(0x91, 5000));
    deep.push(0xc0);
    let mut bad_utf8 = Vec::new();
    bad_utf8.push(0x91);
    bad_utf8.push(0x91);
    bad_utf8.push(0x83);
    fixstr(&mut bad_utf8, "service");
    bad_utf8.push(0xa2);
    bad_utf8.extend_from_slice(&[0xc3, 0x28]);
    for (k, v) in [("trace_id", 7u64), ("span_id", 7)] {
        fixstr(&mut bad_utf8, k);
        bad_utf8.push(u8::try_from(v).unwrap());
    }
    let oversized = vec![0x90; 64 * 1024 + 1];
    // v0.7: {chunks: [{priority: 1, spans: <the two v0.4 spans>}]}, then one with a bad priority.
    let v04_spans: Vec<serde_json::Value> = rmp_serde::from_slice::<Vec<Vec<serde_json::Value>>>(&good)
        .unwrap()
        .into_iter()
        .flatten()
        .filter(|s| s["trace_id"] == 1)
        .collect();
    let v07 = rmp_serde::to_vec_named(&serde_json::json!({
        "language_name": "go", "chunks": [{"priority": 1, "spans": v04_spans}]
    }))
    .unwrap();
    let v07_bad = rmp_serde::to_vec_named(&serde_json::json!({"chunks": [{"priority": "high"}]})).unwrap();
    let json = br#"[[{"service":"j","name":"n","trace_id":3,"span_id":3,"start":1700000000000000000}]]"#.to_vec();

    let table: Vec<Case<'_>> = vec![
        (
            "good v0.4",
            "/v0.4/traces",
            vec![MSGPACK],
            good.clone(),
            200,
            "rate_by_service",
        ),
        (
            "good v0.4 with PUT",
            "/v0.4/traces",
            vec![MSGPACK],
            good.clone(),
            200,
            "rate_by_service",
        ),
        (
            "truncated",
            "/v0.4/traces",
            vec![MSGPACK],
            truncated,
            400,
            "unexpected end of payload",
        ),
        (
            "wrong type",
            "/v0.4/traces",
            vec![MSGPACK],
            wrong_type,
            400,
            "trace 0 span 0: field 'span_id': expected integer, got string",
        ),
        (
            "absurd length",
            "/v0.4/traces",
            vec![MSGPACK],
            absurd,
            400,
            "exceeds the",
        ),
        (
            "deep nesting",
            "/v0.4/traces",
            vec![MSGPACK],
            deep,
            400,
            "nesting deeper than",
        ),
        (
            "invalid utf-8 repaired",
            "/v0.4/traces",
            vec![MSGPACK],
            bad_utf8,
            200,
            "rate_by_service",
        ),
        (
            "oversized",
            "/v0.4/traces",
            vec![MSGPACK],
            oversized,
            413,
            "payload-too-large",
        ),
        (
            "msgpack sent as json",
            "/v0.4/traces",
            vec![("Content-Type", "application/json")],
            good.clone(),
            400,
            "invalid JSON",
        ),
        (
            "json without content type",
            "/v0.4/traces",
            vec![],
            json.clone(),
            200,
            "rate_by_service",
        ),
        (
            "unknown content type: json then msgpack",
            "/v0.4/traces",
            vec![("Content-Type", "text/plain")],
            good.clone(),
            200,
            "rate_by_service",
        ),
        (
            "v0.5 garbage",
            "/v0.5/traces",
            vec![MSGPACK],
            b"\x93\x90\x90\x90".to_vec(),
            400,
            "expected an array of 2 elements, got 3",
        ),
        (
            "v0.1 flat spans",
            "/v0.1/spans",
            vec![("Content-Type", "application/json")],
            br#"[{"service":"a","name":"n","trace_id":5,"span_id":5},{"service":"a","name":"n","trace_id":6,"span_id":6},{"service":"a","name":"c","trace_id":5,"span_id":7,"parent_id":5}]"#.to_vec(),
            200,
            "OK",
        ),
        ("v0.2 json", "/v0.2/traces", vec![], json.clone(), 200, "OK"),
        (
            "v0.2 msgpack",
            "/v0.2/traces",
            vec![MSGPACK],
            good.clone(),
            415,
            "unsupported media type",
        ),
        (
            "good v0.7",
            "/v0.7/traces",
            vec![MSGPACK],
            v07.clone(),
            200,
            "rate_by_service",
        ),
        (
            "v0.7 with a bad chunk",
            "/v0.7/traces",
            vec![MSGPACK],
            v07_bad,
            400,
            "chunk 0: field 'priority'",
        ),
        (
            "v0.3 replies OK",
            "/v0.3/traces",
            vec![MSGPACK],
            good.clone(),
            200,
            "OK",
        ),
        (
            "cross-site",
            "/v0.4/traces",
            vec![MSGPACK, ("Sec-Fetch-Site", "cross-site")],
            good.clone(),
            403,
            "cross-site request rejected",
        ),
        (
            "unknown path",
            "/v0.9/traces",
            vec![],
            vec![],
            404,
            "404 page not found",
        ),
        ("stats", "/v0.6/stats", vec![MSGPACK], vec![0x80], 200, ""),
        (
            "stats that is not a map",
            "/v0.6/stats",
            vec![MSGPACK],
            vec![0x93, 0x01],
            400,
            "client stats payload",
        ),
        // No Remote Config client, no API key: nothing is served or forwarded, and the
        // replies say so (tests/agent_proxy_routes.rs covers forwarding).
        (
            "remote config",
            "/v0.7/config",
            vec![],
            b"{}".to_vec(),
            404,
            "remote configuration is not available",
        ),
        (
            "telemetry",
            "/telemetry/proxy/api/v2/apmtelemetry",
            vec![],
            b"{}".to_vec(),
            404,
            "no API key",
        ),
        (
            "evp proxy",
            "/evp_proxy/v2/api/v2/citestcycle",
            vec![],
            b"{}".to_vec(),
            405,
            "EVPProxy is disabled",
        ),
    ];
    let (_, _, info) = h.raw(&request("GET", "/info", &[], b""));
    let state = sha256_hex(&info);
    for (name, path, headers, body, want_status, want_body) in table {
        let method = if name.contains("PUT") { "PUT" } else { "POST" };
        let (status, head, got) = h.raw(&request(method, path, &headers, &body));
        let got = String::from_utf8_lossy(&got);
        assert_eq!(status, want_status, "{name}: body {got}");
        assert!(got.contains(want_body), "{name}: {got:?} lacks {want_body:?}");
        assert!(
            head.contains(&format!("datadog-agent-state: {state}")),
            "{name}: {head}"
        );
        assert!(head.contains("datadog-agent-version: "), "{name}");
    }
    let s = h.status();
    // Good payloads before and after the bad ones all arrived: 2 + 2 + 1 (utf-8) + 1 (json)
    // + 2 (text/plain) + 2 (v0.1: two trace ids) + 1 (v0.2) + 1 (v0.7) + 2 (v0.3).
    assert_eq!(s.total_received().traces, 14, "{s:#?}");
    assert_eq!(s.total_received().spans, 15, "{s:#?}");
    assert_eq!(s.dropped.get("decode_error").map(|d| d.payloads), Some(8), "{s:#?}");
    assert_eq!(s.dropped.get("payload_too_large").map(|d| d.payloads), Some(1));
    assert_eq!(s.dropped.get("cross_site").map(|d| d.payloads), Some(1));
    assert!(s.last_error.is_some());
}

#[test]
fn info_lists_what_tracers_read_and_its_hash_is_the_agent_state() {
    let h = Harness::start(AgentConfig::default());
    let (status, head, body) = h.raw(&request("GET", "/info", &[], b""));
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let endpoints: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for e in [
        "/v0.4/traces",
        "/v0.5/traces",
        "/v0.6/stats",
        "/v0.7/traces",
        "/v0.3/traces",
    ] {
        assert!(endpoints.contains(&e), "{e} missing from {endpoints:?}");
    }
    // Not served without an API key / a Remote Config client: not advertised.
    for e in ["/telemetry/proxy/", "/evp_proxy/v2/", "/v0.7/config"] {
        assert!(!endpoints.contains(&e), "{e} listed in {endpoints:?}");
    }
    assert_eq!(info["client_drop_p0s"], true);
    assert_eq!(info["span_meta_structs"], true);
    assert_eq!(info["config"]["max_request_bytes"], 26_214_400);
    assert!(info["version"].as_str().unwrap().starts_with('7'));
    assert!(head.contains(&format!("datadog-agent-state: {}", sha256_hex(&body))));
}

#[test]
fn rates_cover_seen_services_and_honour_the_payload_version() {
    let h = Harness::start(AgentConfig::default());
    let (status, head, body) = h.raw(&request(
        "POST",
        "/v0.4/traces",
        &[MSGPACK, ("Datadog-Rates-Payload-Version", "old")],
        &v04(1, "shop"),
    ));
    assert_eq!(status, 200);
    let rates: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rates["rate_by_service"]["service:,env:"], 1.0);
    assert_eq!(rates["rate_by_service"]["service:shop,env:test"], 1.0);
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("datadog-rates-payload-version: "))
        .expect("version echoed")
        .to_owned();
    // Same rates already known by the tracer: literal `{}`.
    let (_, head2, body2) = h.raw(&request(
        "POST",
        "/v0.4/traces",
        &[MSGPACK, ("Datadog-Rates-Payload-Version", &version)],
        &v04(1, "shop"),
    ));
    assert_eq!(body2, b"{}");
    assert!(head2.contains(&format!("datadog-rates-payload-version: {version}")));
}

#[test]
fn content_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let h = Harness::start(AgentConfig {
        max_payload_size: 1000,
        ..AgentConfig::default()
    });
    // Announce 10 MB and send nothing: the reply must come without the body.
    let mut s = connect_and_send(
        h.addr,
        Duration::from_secs(10),
        b"POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 10000000\r\n\r\n",
    );
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (413, &b"payload-too-large\n"[..]));
}

#[test]
fn chunked_body_over_the_limit_is_cut_while_reading() {
    let h = Harness::start(AgentConfig {
        max_payload_size: 1000,
        ..AgentConfig::default()
    });
    let mut req = b"POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend(std::iter::repeat_n(0x90, 0x200));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = h.raw(&req);
    assert_eq!(status, 413);
}

#[test]
fn slow_body_times_out_with_408() {
    let h = Harness::start(AgentConfig {
        receiver_timeout: Duration::from_millis(300),
        ..AgentConfig::default()
    });
    let mut s = connect_and_send(h.addr, Duration::from_secs(10), b"POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 100\r\n\r\n\x91");
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (408, &b"timeout\n"[..]));
}

/// Polls `ready` until it holds (a readiness probe, bounded at 10 s).
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::yield_now();
    }
}

/// A client that declares a `declared`-byte v0.4 body, sends one byte of it and goes silent.
fn trickle(addr: SocketAddr, path: &str, declared: usize) -> TcpStream {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: {declared}\r\n\r\n"
    );
    let mut s = connect_and_send(addr, Duration::from_secs(30), head.as_bytes());
    s.write_all(&[0x91]).unwrap();
    s
}

/// The bytes of request bodies the agent holds right now.
fn body_bytes(h: &Harness) -> u64 {
    h.status().buffers.map_or(0, |b| b.body_bytes)
}

#[test]
fn overload_answers_429_only_to_tracers_that_ask_for_it() {
    // The body budget is max_payload_size (6 MiB) here: one slow client declaring 6 MiB holds
    // all of it.
    let h = Harness::start(AgentConfig {
        max_payload_size: 6 << 20,
        receiver_max_buffered_bytes: 1,
        decoder_timeout: Duration::from_millis(50),
        receiver_timeout: Duration::from_secs(30),
        ..AgentConfig::default()
    });
    let holder = trickle(h.addr, "/v0.4/traces", 6 << 20);
    wait_until("the slow body holds the budget", || body_bytes(&h) == 6 << 20);
    let real = [
        MSGPACK,
        ("Datadog-Send-Real-Http-Status", "1"),
        ("X-Datadog-Trace-Count", "1"),
    ];
    let (status, _, body) = h.raw(&request("POST", "/v0.4/traces", &real, &v04(1, "a")));
    assert_eq!(status, 429);
    assert!(String::from_utf8_lossy(&body).contains("rate_by_service"));
    let (status, _, body) = h.raw(&request("POST", "/v0.4/traces", &[MSGPACK], &v04(1, "a")));
    assert_eq!(status, 200, "without the header the Go agent answers 200");
    assert!(String::from_utf8_lossy(&body).contains("rate_by_service"));
    let s = h.status();
    assert_eq!(
        s.dropped.get("body_budget").map(|d| d.payloads),
        Some(2),
        "{:?}",
        s.dropped
    );
    assert_eq!(s.total_received().traces, 0);
    drop(holder);
    wait_until("the budget is free again", || body_bytes(&h) == 0);
    let (status, _, _) = h.raw(&request("POST", "/v0.4/traces", &real, &v04(1, "a")));
    assert_eq!(status, 200);
}

/// Slow clients hold their bytes of the body budget, not the decoder: with one decoder slot and
/// 8 connections trickling bodies, a fast client's payload is still decoded and accepted.
/// (Before: the first slow body held the only decoder slot until the read timeout, and the fast
/// client got 429.)
#[test]
fn slow_clients_do_not_block_a_fast_one() {
    let h = Harness::start(AgentConfig {
        decoders: 1,
        decoder_timeout: Duration::from_millis(200),
        receiver_timeout: Duration::from_secs(30),
        ..AgentConfig::default()
    });
    let slow: Vec<TcpStream> = (0..8).map(|_| trickle(h.addr, "/v0.4/traces", 100_000)).collect();
    wait_until("the 8 slow bodies are being read", || body_bytes(&h) == 8 * 100_000);
    assert_eq!(h.status().decoders_busy, 0, "reading a body takes no decoder slot");
    let real = [MSGPACK, ("Datadog-Send-Real-Http-Status", "1")];
    for i in 0..3 {
        let (status, _, _) = h.raw(&request("POST", "/v0.4/traces", &real, &v04(2, "fast")));
        assert_eq!(status, 200, "fast payload {i}");
    }
    let (status, _, _) = h.raw(&request("POST", "/v0.6/stats", &[MSGPACK], &[0x80]));
    assert_eq!(status, 200, "stats too");
    assert_eq!(h.status().total_received().traces, 6);
    assert!(!h.status().dropped.contains_key("overload"));
    drop(slow);
}

/// A body that finds the budget full waits at most `decoder_timeout`, is drained into nothing
/// and counted; memory held stays at the budget.
#[test]
fn bodies_beyond_the_budget_are_refused_and_drained() {
    let h = Harness::start(AgentConfig {
        max_payload_size: 6 << 20,
        receiver_max_buffered_bytes: 1,
        decoder_timeout: Duration::from_millis(50),
        receiver_timeout: Duration::from_secs(30),
        ..AgentConfig::default()
    });
    let _holders: Vec<TcpStream> = (0..6).map(|_| trickle(h.addr, "/v0.6/stats", 1 << 20)).collect();
    wait_until("6 × 1 MiB held", || body_bytes(&h) == 6 << 20);
    // A 2 MiB stats body on a keep-alive connection: refused, drained, and the same
    // connection still answers.
    let big = vec![0x80u8; 2 << 20];
    let head = format!(
        "POST /v0.6/stats HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut s = connect_and_send(h.addr, Duration::from_secs(20), head.as_bytes());
    s.write_all(&big).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 429");
    assert!(body_bytes(&h) <= 6 << 20);
    assert_eq!(h.status().dropped.get("body_budget").map(|d| d.payloads), Some(1));
}

#[test]
fn unix_socket_receiver_accepts_traces() {
    let dir = tempfile_dir();
    let sock = dir.join("apm.socket");
    let h = Harness::start(AgentConfig {
        receiver_socket: Some(sock.clone()),
        ..AgentConfig::default()
    });
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(&request("POST", "/v0.4/traces", &[MSGPACK], &v04(3, "uds")))
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(h.status().total_received().traces, 3);
    assert!(h.status().listening.iter().any(|l| l.starts_with("unix://")));
}

fn tempfile_dir() -> std::path::PathBuf {
    apm::run_dir("agent_uds")
}

#[test]
fn taken_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(trace_agent::start(AgentConfig::local(port)))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    for fix in ["--port", "DD_APM_RECEIVER_PORT", "apm_config.receiver_port"] {
        assert!(err.contains(fix), "{err} lacks {fix}");
    }
    assert!(!err.contains('\n'));
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_and_drains_the_pipeline() {
    let mut h = Harness::start(AgentConfig::default());
    let body = v04(4, "drain");
    let head = format!(
        "POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = connect_and_send(h.addr, Duration::from_secs(10), head.as_bytes());
    s.write_all(&body[..10]).unwrap();
    // The request is in flight once the agent has read its head (readiness probe, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.status().in_flight == 0 {
        assert!(Instant::now() < deadline, "request never reached the handler");
        std::thread::yield_now();
    }
    let agent = h.agent.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    h.rt.spawn(async move {
        let snapshot = agent.shutdown().await;
        let _ = tx.send(snapshot);
    });
    // New connections are refused once the accept loop stopped (readiness probe, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(h.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        std::thread::yield_now();
    }
    s.write_all(&body[10..]).unwrap();
    let (status, _, _) = read_response(&mut s);
    assert_eq!(status, 200, "in-flight request completed");
    let snapshot = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(snapshot.forwarded.traces, 4, "pipeline drained before exit");
}

#[test]
fn live_unix_socket_is_not_stolen_by_a_second_agent() {
    let sock = apm::run_dir("agent_uds_live").join("apm.socket");
    let _first = Harness::start(AgentConfig {
        receiver_socket: Some(sock.clone()),
        ..AgentConfig::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let second = AgentConfig {
        receiver_socket: Some(sock.clone()),
        ..AgentConfig::local(0)
    };
    let err = rt.block_on(trace_agent::start(second)).unwrap_err().to_string();
    assert!(err.contains("already in use") && err.contains("apm.socket"), "{err}");
    assert!(
        std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "first agent still serves"
    );
}

#[test]
fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let h = Harness::start(AgentConfig {
        max_connections: 1,
        ..AgentConfig::default()
    });
    // The first connection holds the only slot (keep-alive, idle).
    let mut first = connect_and_send(
        h.addr,
        Duration::from_secs(10),
        b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // A second client connects at TCP level (backlog) but is not served while the slot is held.
    let mut second = connect_and_send(
        h.addr,
        Duration::from_millis(300),
        b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let mut one = [0u8; 1];
    assert!(second.read(&mut one).is_err(), "served beyond max_connections");
    drop(first);
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (status, _, _) = read_response(&mut second);
    assert_eq!(status, 200, "served once the slot is free");
}

#[test]
fn headers_not_sent_in_time_close_the_connection() {
    let h = Harness::start(AgentConfig {
        receiver_timeout: Duration::from_millis(200),
        ..AgentConfig::default()
    });
    let mut s = connect_and_send(
        h.addr,
        Duration::from_secs(10),
        b"POST /v0.4/traces HTTP/1.1\r\nHost: x\r\n",
    );
    let mut rest = Vec::new();
    // The agent gives up on the unfinished head and closes (EOF, possibly after a 408).
    s.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// An agent whose next stage is a [`GatedSink`], on a runtime of its own.
fn gated_agent(
    config: AgentConfig,
) -> (
    tokio::runtime::Runtime,
    trace_agent::Agent,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let rt = runtime();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open, gate) = std::sync::mpsc::channel();
    let config = AgentConfig {
        receiver_port: apm::free_port(),
        ..config
    };
    let agent = rt
        .block_on(trace_agent::start_with_sink(config, |counters| GatedSink {
            entered: entered_tx,
            gate,
            counters,
        }))
        .unwrap();
    (rt, agent, entered, open)
}

fn post_traces(addr: SocketAddr, real_status: bool) -> u16 {
    let mut headers = vec![MSGPACK, ("X-Datadog-Trace-Count", "1")];
    if real_status {
        headers.push(("Datadog-Send-Real-Http-Status", "1"));
    }
    raw_exchange(addr, &request("POST", "/v0.4/traces", &headers, &v04(1, "bp"))).0
}

/// A full pipeline (items) is a 429 for every tracer, counted: never accepted then dropped.
/// `/v0.6/stats` gets the same push-back (before: 408 after the receiver timeout).
#[test]
fn a_slow_next_stage_backs_up_into_429_with_bounded_memory() {
    let (rt, agent, entered, open) = gated_agent(AgentConfig {
        pipeline_capacity: 1,
        decoder_timeout: Duration::from_millis(50),
        ..AgentConfig::default()
    });
    let addr = agent.tcp_addr().unwrap();
    // 1: taken by the sink, which blocks.
    assert_eq!(post_traces(addr, true), 200);
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    // Then the channel (capacity 1) fills: with the next payload, or with the agent's 1 s tick.
    let mut accepted = 1;
    let refused = loop {
        match post_traces(addr, true) {
            200 if accepted < 3 => accepted += 1,
            code => break code,
        }
    };
    assert_eq!(refused, 429, "no room: 429 (a 200 would hide the loss)");
    assert!(accepted <= 2, "{accepted} accepted with room for 1 queued");
    assert_eq!(post_traces(addr, false), 429, "whatever the tracer asked for");
    let (status, _, _) = raw_exchange(addr, &request("POST", "/v0.6/stats", &[MSGPACK], &[0x80]));
    assert_eq!(status, 429, "stats are pushed back too");
    for _ in 0..accepted {
        open.send(()).unwrap();
    }
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.forwarded.payloads, accepted);
    assert_eq!(
        status.total_received().traces,
        accepted,
        "refused payloads are not counted as received"
    );
    assert_eq!(
        status.dropped.get("pipeline_full").map(|d| (d.payloads, d.traces)),
        Some((2, 2))
    );
    assert_eq!(status.dropped.get("stats_queue_full").map(|d| d.payloads), Some(1));
}

/// The pipeline is bounded in bytes too: with room for 32 payloads but `pipeline_max_bytes` of
/// 1 byte (every payload is charged at least the whole budget), one payload held by the sink
/// makes the next one a 429 until the sink has consumed it.
#[test]
fn the_pipeline_is_bounded_in_bytes_and_frees_them_after_the_stage() {
    let (rt, agent, entered, open) = gated_agent(AgentConfig {
        pipeline_capacity: 32,
        pipeline_max_bytes: 1,
        decoder_timeout: Duration::from_millis(50),
        ..AgentConfig::default()
    });
    let addr = agent.tcp_addr().unwrap();
    assert_eq!(post_traces(addr, true), 200);
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let buffers = agent.status().buffers.unwrap();
    assert_eq!((buffers.pipeline_bytes, buffers.pipeline_bytes_max), (1, 1));
    assert_eq!(post_traces(addr, true), 429, "32 item slots free, no bytes");
    open.send(()).unwrap();
    // Once consumed, the bytes come back (readiness probe on the counter, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.status().buffers.unwrap().pipeline_bytes != 0 {
        assert!(Instant::now() < deadline, "bytes never released");
        std::thread::yield_now();
    }
    assert_eq!(post_traces(addr, true), 200);
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    open.send(()).unwrap();
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.forwarded.payloads, 2);
    assert_eq!(status.dropped.get("pipeline_full").map(|d| d.payloads), Some(1));
}

#[test]
fn status_counts_each_service_of_a_mixed_payload() {
    let h = Harness::start(AgentConfig::default());
    let traces = vec![
        vec![
            serde_json::json!({"service": "web", "name": "r", "trace_id": 1, "span_id": 1, "start": 1_700_000_000_000_000_000u64}),
        ],
        vec![
            serde_json::json!({"service": "worker", "name": "j", "trace_id": 2, "span_id": 2, "start": 1_700_000_000_000_000_000u64}),
            serde_json::json!({"service": "db", "name": "q", "trace_id": 2, "span_id": 3, "parent_id": 2, "start": 1_700_000_000_000_000_000u64}),
        ],
    ];
    let body = rmp_serde::to_vec_named(&traces).unwrap();
    let (status, _, _) = h.raw(&request(
        "POST",
        "/v0.4/traces",
        &[MSGPACK, ("Datadog-Meta-Lang", "go")],
        &body,
    ));
    assert_eq!(status, 200);
    let s = h.status();
    let by_service: std::collections::HashMap<&str, &trace_agent::status::ReceivedCounts> =
        s.received.iter().map(|(k, c)| (k.service.as_str(), c)).collect();
    assert_eq!(
        (
            by_service["web"].traces,
            by_service["web"].spans,
            by_service["web"].payloads
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            by_service["worker"].traces,
            by_service["worker"].spans,
            by_service["worker"].payloads
        ),
        (1, 2, 0)
    );
    assert_eq!(s.total_received().payloads, 1);
}

#[test]
fn client_dropped_p0_counts_are_reported_even_for_an_empty_payload() {
    let h = Harness::start(AgentConfig::default());
    // ddtrace sends `[[""],[]]` just to carry the P0 drop counts.
    let headers = [
        MSGPACK,
        ("Datadog-Client-Dropped-P0-Traces", "6"),
        ("Datadog-Client-Dropped-P0-Spans", "54"),
        ("X-Datadog-Trace-Count", "0"),
    ];
    let (status, _, _) = h.raw(&request("POST", "/v0.5/traces", &headers, &[0x92, 0x91, 0xa0, 0x90]));
    assert_eq!(status, 200);
    let s = h.status();
    assert_eq!(s.client_dropped_p0, (6, 54));
    assert_eq!(s.total_received().traces, 0);
    assert!(s.dropped.is_empty());
}

#[test]
fn ignore_resources_and_invalid_traces_are_dropped_with_reasons() {
    let config = trace_agent::config::load(
        None,
        &std::collections::HashMap::from([(
            "DD_APM_IGNORE_RESOURCES".to_owned(),
            "(GET|POST) /healthcheck".to_owned(),
        )]),
    )
    .unwrap();
    let h = Harness::start(config);
    let span = |trace_id: u64, resource: &str| {
        serde_json::json!({"service": "web", "name": "req", "resource": resource, "trace_id": trace_id,
            "span_id": trace_id + 100, "start": 1_700_000_000_000_000_000u64})
    };
    let traces = vec![
        vec![span(1, "GET /healthcheck")],
        vec![span(0, "GET /")],
        vec![span(2, "GET /api")],
    ];
    let body = rmp_serde::to_vec_named(&traces).unwrap();
    let (status, _, _) = h.raw(&request("POST", "/v0.4/traces", &[MSGPACK], &body));
    assert_eq!(status, 200, "dropping traces is not a request error");
    let s = h.status();
    assert_eq!(s.total_received().traces, 3);
    assert_eq!(s.dropped_traces("ignore_resources"), 1);
    assert_eq!(s.dropped_traces("trace_id_zero"), 1);
    assert!(s.last_error.unwrap().1.contains("trace_id_zero"));
    assert_eq!(
        h.shutdown().forwarded.traces,
        1,
        "only the valid, unfiltered trace goes on"
    );
}

#[test]
fn chunked_bodies_within_the_limit_are_accepted() {
    let h = Harness::start(AgentConfig::default());
    let body = v04(3, "chunked");
    let mut req = b"POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(7) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = h.raw(&req);
    assert_eq!(status, 200);
    assert_eq!(h.status().total_received().traces, 3);
}

/// Records what the next stage receives.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Option<String>, usize)>>>;

struct CapturingSink(Seen);

impl trace_agent::pipeline::ChunkSink for CapturingSink {
    fn consume(&mut self, p: trace_agent::pipeline::ProcessedPayload) {
        let pl = p.payload.get();
        let process_tags = trace_agent::span::tag_get(&pl.tags, "_dd.tags.process").map(|t| t.to_string());
        self.0.lock().unwrap().push((
            pl.language_name.to_string(),
            pl.container_id.to_string(),
            pl.env.to_string(),
            process_tags,
            pl.span_count(),
        ));
    }
}

#[test]
fn the_next_stage_gets_the_tracer_identity_and_payload_fields() {
    let rt = runtime();
    let seen = Seen::default();
    let sink_seen = seen.clone();
    let config = AgentConfig {
        receiver_port: apm::free_port(),
        ..AgentConfig::default()
    };
    let agent = rt
        .block_on(trace_agent::start_with_sink(config, move |_| CapturingSink(sink_seen)))
        .unwrap();
    let headers = [
        MSGPACK,
        ("Datadog-Meta-Lang", "ruby"),
        ("Datadog-Container-ID", "abc123"),
        ("X-Datadog-Process-Tags", "entrypoint.name:app"),
    ];
    let (status, _, _) = raw_exchange(
        agent.tcp_addr().unwrap(),
        &request("POST", "/v0.4/traces", &headers, &v04(2, "id")),
    );
    assert_eq!(status, 200);
    rt.block_on(agent.shutdown());
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.as_slice(),
        [(
            "ruby".to_owned(),
            "abc123".to_owned(),
            "test".to_owned(),
            Some("entrypoint.name:app".to_owned()),
            2
        )]
    );
}

/// `/v0.6/stats` payloads reach the next stage decoded and processed (env default, headers,
/// obfuscated SQL resources); bad ones are 400.
#[test]
fn client_stats_reach_the_next_stage_processed() {
    use trace_agent::stats::{ClientStatsInput, pb};
    struct StatsSink(std::sync::Arc<std::sync::Mutex<Vec<pb::ClientStatsPayload>>>);
    impl trace_agent::pipeline::ChunkSink for StatsSink {
        fn consume(&mut self, _p: trace_agent::pipeline::ProcessedPayload) {}
        fn consume_client_stats(&mut self, input: ClientStatsInput) {
            self.0.lock().unwrap().push(input.payload);
        }
    }
    let rt = runtime();
    let seen = std::sync::Arc::default();
    let sink = StatsSink(std::sync::Arc::clone(&seen));
    let config = AgentConfig {
        receiver_port: apm::free_port(),
        ..AgentConfig::default()
    };
    let agent = rt
        .block_on(trace_agent::start_with_sink(config, move |_| sink))
        .unwrap();
    let payload = pb::ClientStatsPayload {
        hostname: "h".into(),
        stats: vec![pb::ClientStatsBucket {
            start: 1_700_000_000_000_000_000,
            duration: 10_000_000_000,
            stats: vec![pb::ClientGroupedStats {
                service: "db".into(),
                name: "postgres.query".into(),
                resource: "SELECT * FROM t WHERE id = 42".into(),
                r#type: "sql".into(),
                hits: 3,
                ..Default::default()
            }],
            agent_time_shift: 0,
        }],
        ..Default::default()
    };
    let body = rmp_serde::to_vec_named(&payload).unwrap();
    let headers = [
        MSGPACK,
        ("Datadog-Meta-Lang", "python"),
        ("Datadog-Meta-Tracer-Version", "4.16.0"),
    ];
    let addr = agent.tcp_addr().unwrap();
    let (status, _, _) = raw_exchange(addr, &request("POST", "/v0.6/stats", &headers, &body));
    assert_eq!(status, 200);
    let (status, _, reply) = raw_exchange(addr, &request("POST", "/v0.6/stats", &headers, &body[..body.len() / 2]));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    let snapshot = rt.block_on(agent.shutdown());
    assert_eq!(snapshot.client_stats_payloads, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let p = &seen[0];
    assert_eq!(
        (p.env.as_str(), p.lang.as_str(), p.tracer_version.as_str()),
        ("none", "python", "4.16.0")
    );
    assert_eq!(p.stats[0].stats[0].resource, "SELECT * FROM t WHERE id = ?");
    assert_eq!(p.stats[0].stats[0].hits, 3);
}

/// OTLP/HTTP: a small protobuf body of 100 000 empty spans (200 KB on the wire, tens of MB once
/// decoded) is refused before decoding: 413 with a `google.rpc.Status` naming the limit,
/// counted. A normal request still gets 200. (Before: decoded and accepted.)
#[test]
fn otlp_http_bodies_that_would_decode_too_large_get_413_naming_the_limit() {
    let mut config = AgentConfig::default();
    config.otlp_receiver.http_endpoint = Some("127.0.0.1:0".to_owned());
    let h = Harness::start(config);
    let otlp = h.agent.as_ref().unwrap().otlp_http_addr().unwrap();
    let proto = [("Content-Type", "application/x-protobuf")];
    let spans: Vec<u8> = [0x12u8, 0x00].repeat(100_000);
    let bomb = pb_field(1, &pb_field(2, &spans));
    let (status, _, body) = raw_exchange(otlp, &request("POST", "/v1/traces", &proto, &bomb));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("apm_config.max_decoded_ratio"), "{text}");
    let mut span = pb_field(1, &[7u8; 16]);
    span.extend(pb_field(2, &[9u8; 8]));
    span.extend(pb_field(5, b"GET /"));
    let one = pb_field(1, &pb_field(2, &pb_field(2, &span)));
    let (status, _, body) = raw_exchange(otlp, &request("POST", "/v1/traces", &proto, &one));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let s = h.status();
    assert_eq!(
        s.otlp.http.errors.get("decoded_too_large"),
        Some(&1),
        "{:?}",
        s.otlp.http
    );
    assert_eq!(s.otlp.http.spans_received, 1);
}

/// The proxy routes read their bodies under the same byte budget: with the budget held by a
/// slow trace body, an EVP request is refused (503, counted `overload`) without being read or
/// forwarded. (Before: proxies buffered up to 5 MiB each outside any budget.)
#[test]
fn proxy_bodies_share_the_body_budget() {
    let closed = format!("http://127.0.0.1:{}", apm::free_port());
    let mut config = AgentConfig {
        max_payload_size: 6 << 20,
        receiver_max_buffered_bytes: 1,
        decoder_timeout: Duration::from_millis(50),
        receiver_timeout: Duration::from_secs(30),
        ..AgentConfig::default()
    };
    config.api_key = Some(trace_agent::config::Secret::new("proxykey0000000000000000000000000"));
    config.upstream.apm_dd_url = Some(closed.clone());
    config.proxy.evp_dd_url = Some(closed);
    let h = Harness::start(config);
    let holder = trickle(h.addr, "/v0.4/traces", 6 << 20);
    wait_until("the slow body holds the budget", || body_bytes(&h) == 6 << 20);
    let evp = [("X-Datadog-EVP-Subdomain", "citestcycle-intake")];
    let (status, _, body) = h.raw(&request(
        "POST",
        "/evp_proxy/v2/api/v2/citestcycle",
        &evp,
        &[b'x'; 1000],
    ));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("receiver_max_buffered_bytes"), "{text}");
    assert_eq!(h.status().proxy["evp_proxy"].refused.get("overload"), Some(&1));
    drop(holder);
    wait_until("the budget is free again", || body_bytes(&h) == 0);
    // With room, the body is read and forwarded (here to a closed port: 502, not delivered).
    let (status, _, _) = h.raw(&request(
        "POST",
        "/evp_proxy/v2/api/v2/citestcycle",
        &evp,
        &[b'x'; 1000],
    ));
    assert_eq!(status, 502);
}
