//! The proxy routes against a loopback intake: with an API key `/evp_proxy/v2/…` and
//! `/telemetry/proxy/…` are forwarded with the key and the agent's headers, bodies are bounded,
//! the intake's errors and network failures reach the client; without one (local mode) they
//! answer that nothing was delivered, are counted, and `/info` does not list them. The real
//! Python `ddtrace` sends its instrumentation telemetry through the agent.

#[allow(dead_code)] // this binary uses part of the shared intake
mod support;

use std::io::Write;
use std::net::SocketAddr;

use support::intake::Intake;
use support::runtime::runtime;
use trace_agent::config::{AgentConfig, Secret};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn keyed_config(intake: &Intake) -> AgentConfig {
    let mut config = AgentConfig::local(apm::free_port());
    config.api_key = Some(Secret::new(KEY));
    config.upstream.apm_dd_url = Some(intake.url());
    config.proxy.evp_dd_url = Some(intake.url());
    config.proxy.telemetry_dd_url = Some(intake.url());
    config.hostname = "proxy-host".to_owned();
    config.default_env = "proxy-env".to_owned();
    config
}

/// An agent without an API key (local mode, a counting sink) on a free port.
fn keyless_agent(rt: &tokio::runtime::Runtime) -> trace_agent::Agent {
    rt.block_on(trace_agent::start_with_sink(
        AgentConfig::local(apm::free_port()),
        trace_agent::pipeline::CountingSink::new,
    ))
    .expect("agent")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn info_endpoints(addr: SocketAddr) -> Vec<String> {
    let (status, body) = apm::http_get(addr, "/info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (s, b) = apm::http_request(addr, "POST", path, headers, body).expect("exchange with the agent");
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[test]
fn with_an_api_key_evp_and_telemetry_are_forwarded_and_errors_relayed() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let mut config = keyed_config(&intake);
    config.proxy.evp_max_payload_size = 4096;
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let addr = agent.tcp_addr().unwrap();
    let endpoints = info_endpoints(addr);
    for e in [
        "/telemetry/proxy/",
        "/evp_proxy/v1/",
        "/evp_proxy/v2/",
        "/evp_proxy/v3/",
        "/evp_proxy/v4/",
    ] {
        assert!(endpoints.iter().any(|x| x == e), "{e} not in {endpoints:?}");
    }
    assert!(!endpoints.iter().any(|x| x == "/v0.7/config"), "{endpoints:?}");

    // EVP: the allowed headers, the key and the agent's headers go; anything else does not.
    let payload = gzip(b"{\"events\": [1, 2, 3]}");
    let evp_headers = [
        ("X-Datadog-EVP-Subdomain", "citestcycle-intake"),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("X-Private", "not for the intake"),
        ("DD-API-KEY", "the-client-must-not-choose-the-key"),
    ];
    let (s, body) = post(
        addr,
        "/evp_proxy/v2/api/v2/citestcycle?sync=true",
        &evp_headers,
        &payload,
    );
    assert_eq!((s, body.as_str()), (200, "{}"));
    let got = intake.requests_to("/api/v2/citestcycle");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.raw, payload, "the body goes as sent (still compressed)");
    assert_eq!(r.body, b"{\"events\": [1, 2, 3]}");
    assert_eq!(r.header("dd-api-key"), KEY);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("via"),
        format!("trace-agent {}", trace_agent::identity::AGENT_VERSION)
    );
    assert_eq!(r.header("x-datadog-hostname"), "proxy-host");
    assert_eq!(r.header("x-datadog-agentdefaultenv"), "proxy-env");
    assert_eq!(r.header("x-private"), "");

    // The intake's error reaches the client as is.
    intake.fail_next(1, 503);
    let (s, body) = post(addr, "/evp_proxy/v4/api/v2/llmobs", &evp_headers[..2], b"{}");
    assert_eq!(s, 503);
    assert!(body.contains("scripted 503"), "{body}");
    // Bounded bodies and checked inputs: refused before anything is sent.
    let before = intake.requests().len();
    let (s, body) = post(addr, "/evp_proxy/v2/api/v2/x", &evp_headers[..2], &[b'x'; 5000]);
    assert_eq!(s, 413, "{body}");
    let (s, body) = post(
        addr,
        "/evp_proxy/v2/api/v2/x",
        &[("X-Datadog-EVP-Subdomain", "evil.example/")],
        b"{}",
    );
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("invalid subdomain"), "{body}");
    let (s, _) = post(addr, "/evp_proxy/v2/api/v2/x", &[], b"{}");
    assert_eq!(s, 400);
    assert_eq!(intake.requests().len(), before, "nothing refused was sent");

    // Telemetry: the tracer's headers are kept, the key and the agent's identity added.
    let event = br#"{"request_type": "app-started", "api_version": "v2"}"#;
    let (s, _) = post(
        addr,
        "/telemetry/proxy/api/v2/apmtelemetry",
        &[
            ("Content-Type", "application/json"),
            ("DD-Telemetry-Request-Type", "app-started"),
        ],
        event,
    );
    assert_eq!(s, 200);
    let got = intake.requests_to("/api/v2/apmtelemetry");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, event);
    assert_eq!(got[0].header("dd-api-key"), KEY);
    assert_eq!(got[0].header("dd-telemetry-request-type"), "app-started");
    assert_eq!(got[0].header("dd-agent-hostname"), "proxy-host");
    assert_eq!(got[0].header("dd-agent-env"), "proxy-env");

    // Remote Config is not served.
    let (s, body) = post(addr, "/v0.7/config", &[], b"{}");
    assert_eq!(s, 404, "{body}");

    let status = rt.block_on(agent.shutdown());
    let evp = &status.proxy["evp_proxy"];
    assert_eq!((evp.delivered, evp.bytes), (1, payload.len() as u64), "{evp:?}");
    assert_eq!(evp.intake_errors.get(&503), Some(&1), "{evp:?}");
    assert_eq!(evp.refused.get("too_large"), Some(&1), "{evp:?}");
    assert_eq!(evp.refused.get("bad_request"), Some(&2), "{evp:?}");
    assert_eq!(status.proxy["telemetry_proxy"].delivered, 1);
    assert_eq!(status.proxy["remote_config"].refused.get("not_available"), Some(&1));
}

#[test]
fn an_unreachable_intake_is_a_502_not_a_success() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let mut config = keyed_config(&intake);
    // Nothing listens there (the port was free a moment ago).
    config.proxy.telemetry_dd_url = Some(format!("http://127.0.0.1:{}", apm::free_port()));
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let (s, body) = post(
        agent.tcp_addr().unwrap(),
        "/telemetry/proxy/api/v2/apmtelemetry",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("cannot reach the intake"), "{body}");
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.proxy["telemetry_proxy"].refused.get("network"), Some(&1));
    assert_eq!(status.proxy["telemetry_proxy"].delivered, 0);
}

#[test]
fn without_an_api_key_nothing_is_advertised_and_refusals_are_counted() {
    let rt = runtime();
    let agent = keyless_agent(&rt);
    let addr = agent.tcp_addr().unwrap();
    let endpoints = info_endpoints(addr);
    assert!(
        !endpoints
            .iter()
            .any(|e| e.starts_with("/evp_proxy") || e.starts_with("/telemetry") || e == "/v0.7/config"),
        "{endpoints:?}"
    );
    let (s, body) = post(
        addr,
        "/evp_proxy/v2/api/v2/citestcycle",
        &[("X-Datadog-EVP-Subdomain", "citestcycle-intake")],
        b"{}",
    );
    assert_eq!(s, 405, "{body}");
    assert!(
        body.contains("EVPProxy is disabled") && body.contains("nothing was forwarded"),
        "{body}"
    );
    let (s, body) = post(addr, "/telemetry/proxy/api/v2/apmtelemetry", &[], b"{}");
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("no API key"), "{body}");
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.proxy["evp_proxy"].refused.get("no_api_key"), Some(&1));
    assert_eq!(status.proxy["telemetry_proxy"].refused.get("no_api_key"), Some(&1));
}

/// The real `ddtrace` (8 requests of the Flask demo, run directory `run`) against the agent on
/// `port`, with instrumentation telemetry on and a heartbeat every second.
fn ddtrace_with_telemetry(port: u16, run: &str) -> apm::FlaskDemoRun {
    apm::run_flask_demo(
        port,
        &apm::run_dir(run),
        8,
        &[
            ("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "true"),
            ("DD_TELEMETRY_HEARTBEAT_INTERVAL", "1"),
        ],
    )
}

/// The real `ddtrace` with instrumentation telemetry on: its events reach the intake through
/// the agent with the API key.
#[test]
fn ddtrace_telemetry_goes_through_the_agent_to_the_intake() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let agent = rt.block_on(trace_agent::start(keyed_config(&intake))).expect("agent");
    let port = agent.tcp_addr().unwrap().port();
    let run = ddtrace_with_telemetry(port, "proxy-ddtrace-telemetry");
    let status = rt.block_on(agent.shutdown());
    let got = intake.requests_to("/api/v2/apmtelemetry");
    assert!(
        !got.is_empty(),
        "no telemetry reached the intake: {}\n{status:#?}",
        run.summary
    );
    let mut kinds = Vec::new();
    for r in &got {
        assert_eq!(r.header("dd-api-key"), KEY);
        assert!(r.accepted());
        let event: serde_json::Value = serde_json::from_slice(&r.body).expect("telemetry is JSON");
        kinds.push(event["request_type"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        kinds.iter().any(|k| k == "app-started" || k == "message-batch"),
        "{kinds:?}"
    );
    assert_eq!(
        status.proxy["telemetry_proxy"].delivered,
        got.len() as u64,
        "{status:#?}"
    );
}

/// The real `ddtrace` against an agent without an API key: its telemetry is refused (and
/// counted), its traces still arrive.
#[test]
fn ddtrace_telemetry_without_an_api_key_is_refused_visibly() {
    let rt = runtime();
    let agent = keyless_agent(&rt);
    let port = agent.tcp_addr().unwrap().port();
    let run = ddtrace_with_telemetry(port, "proxy-ddtrace-telemetry-local");
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.total_received().traces, 8, "{}\n{status:#?}", run.summary);
    let t = status.proxy.get("telemetry_proxy").expect("ddtrace sent telemetry");
    assert!(t.refused.get("no_api_key").copied().unwrap_or(0) >= 1, "{t:?}");
    assert_eq!(t.delivered, 0);
}

/// `evp_proxy_config.api_key` and `additional_endpoints`: the main answer is relayed, each
/// (endpoint, key) pair gets a copy, their failures are counted, not relayed.
#[test]
fn evp_copies_go_to_additional_endpoints_with_their_keys() {
    let rt = runtime();
    let main = rt.block_on(Intake::start());
    let other = rt.block_on(Intake::start());
    let mut config = keyed_config(&main);
    config.proxy.evp_api_key = Some(Secret::new("evp-main-key"));
    config.proxy.evp_additional_endpoints =
        std::collections::BTreeMap::from([(other.url(), vec![Secret::new("k2"), Secret::new("k3")])]);
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    other.fail_next(1, 500);
    let (s, body) = post(
        agent.tcp_addr().unwrap(),
        "/evp_proxy/v2/api/v2/citestcycle",
        &[
            ("X-Datadog-EVP-Subdomain", "citestcycle-intake"),
            ("Content-Type", "application/json"),
        ],
        b"{\"n\": 1}",
    );
    assert_eq!((s, body.as_str()), (200, "{}"), "the main intake's answer");
    let got = main.requests_to("/api/v2/citestcycle");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("dd-api-key"), "evp-main-key");
    let mut keys: Vec<String> = other
        .requests_to("/api/v2/citestcycle")
        .iter()
        .map(|r| {
            assert_eq!(r.body, b"{\"n\": 1}");
            r.header("dd-api-key")
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["k2", "k3"]);
    let status = rt.block_on(agent.shutdown());
    let evp = &status.proxy["evp_proxy"];
    assert_eq!(
        (evp.delivered, evp.additional_delivered, evp.additional_failed),
        (1, 1, 1),
        "{evp:?}"
    );
}
