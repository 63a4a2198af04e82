//! The real Python `ddtrace` Flask demo (../shared/peer) against our agent, started in-process
//! on a free port: v0.5 (default), v0.4, and with client-side stats.

use trace_agent::config::AgentConfig;
use trace_agent::status::StatusSnapshot;

/// 8 requests: every 4th is `/api/error` (11 spans), the others 9 spans.
const REQUESTS: usize = 8;
const EXPECTED_SPANS: u64 = 6 * 9 + 2 * 11;

/// Our agent, in-process on a free port, on its own runtime.
fn start_agent() -> (tokio::runtime::Runtime, u16, trace_agent::Agent) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = apm::free_port();
    let agent = rt.block_on(trace_agent::start(AgentConfig::local(port))).unwrap();
    (rt, port, agent)
}

fn run_demo(name: &str, env: &[(&str, &str)]) -> (apm::FlaskDemoRun, StatusSnapshot) {
    let (rt, port, agent) = start_agent();
    let dir = apm::run_dir(name);
    let run = apm::run_flask_demo(port, &dir, REQUESTS, env);
    let status = rt.block_on(agent.shutdown());
    (run, status)
}

fn check(run: &apm::FlaskDemoRun, status: &StatusSnapshot) {
    assert_eq!(run.send_errors, 0, "tracer send errors:\n{}", run.summary);
    let total = status.total_received();
    assert_eq!(
        total.traces, REQUESTS as u64,
        "traces received: {status:#?}\n{}",
        run.summary
    );
    assert_eq!(total.spans, EXPECTED_SPANS, "spans received: {status:#?}");
    assert!(
        status.dropped.is_empty(),
        "nothing may be dropped: {:?}",
        status.dropped
    );
    assert!(
        status.normalized.is_empty(),
        "ddtrace's spans need no correction: {:?}",
        status.normalized
    );
    assert_eq!(status.forwarded.traces, REQUESTS as u64, "forwarded after drain");
    assert_eq!(status.forwarded.spans, EXPECTED_SPANS);
    // ddtrace fetches /info a handful of times at start; a wrong Datadog-Agent-State would make
    // it re-fetch after every trace reply.
    assert!(
        status.info_requests <= 5,
        "/info fetched {} times (re-fetch loop?)",
        status.info_requests
    );
    let (key, counts) = status.received.first().unwrap();
    assert_eq!(key.service, "flask-demo");
    assert_eq!(key.lang, "python");
    assert!(!key.tracer_version.is_empty());
    assert!(counts.bytes > 0);
}

#[test]
fn ddtrace_flask_demo_v05_default() {
    let (run, status) = run_demo("agent_peer_v05", &[]);
    check(&run, &status);
    assert_eq!(status.client_stats_payloads, 0, "stats are off by default");
}

#[test]
fn ddtrace_flask_demo_v04() {
    let (run, status) = run_demo("agent_peer_v04", &[("DD_TRACE_API_VERSION", "v0.4")]);
    check(&run, &status);
}

#[test]
fn ddtrace_flask_demo_with_client_stats() {
    let (run, status) = run_demo("agent_peer_stats", &[("STATS", "true")]);
    check(&run, &status);
    // ddtrace computes stats only when /info lists /v0.6/stats and client_drop_p0s is true.
    assert!(
        status.client_stats_payloads >= 1,
        "ddtrace sent no /v0.6/stats: {status:#?}"
    );
}

/// The rates feedback loop with the real tracer: the agent's rate 0 for the demo service makes
/// ddtrace (stats on) drop P0 traces itself and report them; every trace is accounted for.
#[test]
fn ddtrace_honours_rate_by_service_and_reports_its_p0_drops() {
    let (rt, port, agent) = start_agent();
    agent
        .rates()
        .set_rates([("service:flask-demo,env:demo".to_owned(), 0.0)]);
    let requests = 12;
    let run = apm::run_flask_demo(
        port,
        &apm::run_dir("agent_peer_rates"),
        requests,
        &[("STATS", "true"), ("REQ_INTERVAL", "0.3")],
    );
    let status = rt.block_on(agent.shutdown());
    assert_eq!(run.send_errors, 0, "{}", run.summary);
    let (p0_traces, p0_spans) = status.client_dropped_p0;
    assert!(p0_traces > 0, "ddtrace dropped nothing client-side: {status:#?}");
    assert!(p0_spans >= 9 * p0_traces, "each Flask trace has at least 9 spans");
    assert_eq!(
        status.total_received().traces + p0_traces,
        requests as u64,
        "every trace arrived or was reported dropped: {status:#?}"
    );
    assert!(status.client_stats_payloads >= 1, "stats still count everything");
}
