//! The span ledger end to end: our tracer reports its counters in `X-Span-Ledger`, our agent
//! (in-process) joins them with its own per-hop counts, and under faults — the agent down for
//! a while, the tracer's queue full, a 413 from the agent, an intake outage — every span is
//! accounted for exactly: created = sent + Σ tracer drops; sent = received + refused by the
//! agent; received = kept + Σ agent drops; kept = delivered + Σ writer drops. The real Python
//! `ddtrace` (no ledger header) still works and its service shows "tracer: not reported".

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::local_agent::{local_config, web_addr};
use support::runtime::runtime;
use trace_agent::config::AgentConfig;
use trace_agent::ledger::ServiceLedger;
use tracer::{Tracer, TracerConfig};

/// Our agent on `port` in local mode (store + web view) in the run directory `name`, its
/// config changed by `tweak` first.
fn start_agent(
    rt: &tokio::runtime::Runtime,
    name: &str,
    port: u16,
    tweak: impl FnOnce(&mut AgentConfig),
) -> trace_agent::Agent {
    let mut config = local_config(&apm::run_dir(name), port);
    tweak(&mut config);
    rt.block_on(trace_agent::start(config)).unwrap()
}

fn tracer_to(service: &str, port: u16, tweak: impl FnOnce(TracerConfig) -> TracerConfig) -> Tracer {
    let config = TracerConfig::default()
        .with_service(service)
        .with_send_retries(1)
        .with_agent_timeout(Duration::from_secs(2))
        .with_agent_url(&format!("http://127.0.0.1:{port}"))
        .unwrap();
    Tracer::new(tweak(config)).unwrap()
}

/// `n` traces of `spans` spans each (a root and children).
fn traces(tracer: &Tracer, n: usize, spans: usize) {
    for _ in 0..n {
        let root = tracer.span("job.run").resource("work").start();
        for _ in 1..spans {
            drop(root.child("job.step").start());
        }
        drop(root);
    }
}

/// Polls the agent's ledger until `service` satisfies `ready` (a readiness probe: the local
/// store and the writers settle asynchronously), or fails with the last snapshot.
fn wait_for(agent: &trace_agent::Agent, service: &str, ready: impl Fn(&ServiceLedger) -> bool) -> ServiceLedger {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = agent.status();
        let found = status.ledger.services.iter().find(|s| s.service == service).cloned();
        if let Some(s) = &found
            && ready(s)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "ledger of {service} never got ready: {found:#?}\n{}",
            trace_agent::status::render(&status)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The four equations of the ledger, for a service whose tracer reports.
fn assert_balances(s: &ServiceLedger) {
    let t = s.tracer.as_ref().expect("the tracer reports");
    let tracer_drops: u64 = t.dropped.values().sum();
    assert_eq!(
        t.created,
        t.earlier_agent + t.sent + tracer_drops,
        "created = sent + Σ tracer drops: {s:#?}"
    );
    assert_eq!(t.pending, 0, "{s:#?}");
    assert_eq!(
        t.sent,
        s.received_from_reporting_tracers + t.refused_by_agent,
        "sent = received + refused: {s:#?}"
    );
    let agent_drops: u64 = s.dropped_processing.values().sum::<u64>() + s.sampled_out;
    assert_eq!(
        s.received,
        s.kept + agent_drops,
        "received = kept + Σ agent drops: {s:#?}"
    );
    for w in &s.writers {
        assert_eq!(
            s.kept,
            w.delivered + w.dropped + w.spooled,
            "kept = delivered + Σ writer drops: {s:#?}"
        );
    }
    assert!(s.balanced, "{s:#?}");
}

#[test]
fn agent_down_for_a_while_then_back() {
    let rt = runtime();
    let port = apm::free_port();
    let tracer = tracer_to("ledger-down", port, |c| c);
    // Nobody listens: 5 traces of 2 spans cannot be delivered.
    traces(&tracer, 5, 2);
    assert!(tracer.flush(Duration::from_secs(20)).is_err(), "no agent yet");
    assert_eq!(tracer.health().spans_dropped_send_failed, 10);
    // The agent comes up on that port; the next payload carries the whole story.
    let agent = start_agent(&rt, "ledger_down", port, |_| {});
    apm::wait_for_tcp(agent.tcp_addr().unwrap(), Duration::from_secs(10));
    traces(&tracer, 3, 2);
    tracer.flush(Duration::from_secs(20)).expect("the agent is back");
    let s = wait_for(&agent, "ledger-down", |s| s.balanced);
    let t = s.tracer.clone().unwrap();
    assert_eq!((t.created, t.sent, t.earlier_agent), (16, 6, 0), "{s:#?}");
    assert_eq!(t.dropped.get("agent_unreachable"), Some(&10), "{s:#?}");
    assert_eq!((s.received, s.kept), (6, 6));
    assert_eq!(s.writers.len(), 1);
    assert_eq!((s.writers[0].writer.as_str(), s.writers[0].delivered), ("local", 6));
    assert_balances(&s);
    // Shown by `status` and the web view.
    let text = trace_agent::status::render(&agent.status());
    assert!(
        text.contains(
            "service \"ledger-down\": created 16 → sent 6 → received 6 → kept 6 → delivered local 6 [balanced]"
        ),
        "{text}"
    );
    assert!(text.contains("dropped agent_unreachable 10"), "{text}");
    let web = web_addr(&agent);
    let (code, page) = apm::http_get(web, "/ledger");
    assert_eq!(code, 200);
    assert!(
        page.contains(">ledger-down</a>") && page.contains("agent_unreachable 10"),
        "{page}"
    );
    let (code, json) = apm::http_get(web, "/api/v1/ledger");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["services"][0]["tracer"]["created"], 16, "{json}");
    tracer.shutdown(Duration::from_secs(10)).unwrap();
    rt.block_on(agent.shutdown());
}

#[test]
fn queue_full_in_the_tracer() {
    let rt = runtime();
    let port = apm::free_port();
    let agent = start_agent(&rt, "ledger_queue", port, |_| {});
    let tracer = tracer_to("ledger-queue", port, |c| c.with_queue_capacity(1));
    // Far more single-span traces than a one-chunk queue holds while the worker sleeps.
    traces(&tracer, 20_000, 1);
    tracer.flush(Duration::from_secs(30)).expect("flush");
    let h = tracer.health();
    assert!(h.spans_dropped_queue_full > 0, "the queue never filled: {h:?}");
    let s = wait_for(&agent, "ledger-queue", |s| s.balanced);
    let t = s.tracer.clone().unwrap();
    assert_eq!(t.created, 20_000);
    assert_eq!(t.dropped.get("queue_full"), Some(&h.spans_dropped_queue_full), "{s:#?}");
    assert_eq!(t.sent, h.spans_sent, "{s:#?}");
    assert_eq!(s.writers[0].delivered, h.spans_sent);
    assert_balances(&s);
    tracer.shutdown(Duration::from_secs(10)).unwrap();
    rt.block_on(agent.shutdown());
}

#[test]
fn a_413_from_the_agent_is_named() {
    let rt = runtime();
    let port = apm::free_port();
    let agent = start_agent(&rt, "ledger_413", port, |c| c.max_payload_size = 4096);
    let tracer = tracer_to("ledger-413", port, |c| c);
    // 50 traces of 4 spans: well over 4 KiB in one payload.
    traces(&tracer, 50, 4);
    let err = tracer.flush(Duration::from_secs(20)).expect_err("413");
    assert!(err.to_string().contains("413"), "{err}");
    // A small payload afterwards carries the tracer's account of the refusal.
    traces(&tracer, 1, 3);
    tracer.flush(Duration::from_secs(20)).expect("small payload");
    let s = wait_for(&agent, "ledger-413", |s| s.balanced);
    let t = s.tracer.clone().unwrap();
    assert_eq!((t.created, t.sent, t.refused_by_agent), (203, 203, 200), "{s:#?}");
    assert!(t.dropped.is_empty(), "{s:#?}");
    assert_eq!((s.received, s.kept, s.writers[0].delivered), (3, 3, 3));
    assert_balances(&s);
    let status = agent.status();
    let rt_ledger = &status.ledger.runtimes[0];
    assert_eq!(rt_ledger.runtime_id, tracer.runtime_id());
    assert_eq!(rt_ledger.refused_by_status.get("413"), Some(&200));
    assert!(trace_agent::status::render(&status).contains("refused by the agent by status: 413 200"));
    tracer.shutdown(Duration::from_secs(10)).unwrap();
    rt.block_on(agent.shutdown());
}

#[test]
fn an_intake_outage_is_named_per_service() {
    let rt = runtime();
    let intake = rt.block_on(support::intake::Intake::start());
    let port = apm::free_port();
    let mut config = AgentConfig::local(port);
    config.api_key = Some(trace_agent::config::Secret::new("0123456789abcdef0123456789abcdef"));
    config.upstream.apm_dd_url = Some(intake.url());
    config.upstream.max_sender_retries = 0;
    config.upstream.trace_flush_period = Duration::from_millis(50);
    config.upstream.spool.dir = None;
    let agent = rt.block_on(trace_agent::start(config)).unwrap();
    let tracer = tracer_to("ledger-intake", port, |c| c);
    // The intake refuses everything: the writer drops what the agent kept.
    intake.fail_always(500);
    traces(&tracer, 4, 2);
    tracer.flush(Duration::from_secs(20)).expect("the agent takes them");
    let s = wait_for(&agent, "ledger-intake", |s| {
        s.writers.first().is_some_and(|w| w.dropped == 8)
    });
    assert_eq!((s.kept, s.writers[0].delivered), (8, 0), "{s:#?}");
    // The intake recovers.
    intake.fail_always(200);
    traces(&tracer, 3, 2);
    tracer.flush(Duration::from_secs(20)).expect("flush");
    let s = wait_for(&agent, "ledger-intake", |s| s.balanced);
    assert_eq!(s.writers[0].writer, "datadog");
    assert_eq!(
        (s.kept, s.writers[0].delivered, s.writers[0].dropped),
        (14, 6, 8),
        "{s:#?}"
    );
    assert_balances(&s);
    // The intake's side agrees: 6 spans of this service in the payloads it accepted.
    let accepted: usize = intake
        .requests_to("/api/v0.2/traces")
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| {
            use prost::Message;
            trace_agent::upstream::pb::AgentPayload::decode(r.body.as_slice())
                .unwrap()
                .tracer_payloads
        })
        .flat_map(|p| p.chunks)
        .map(|c| c.spans.len())
        .sum();
    assert_eq!(accepted, 6);
    tracer.shutdown(Duration::from_secs(10)).unwrap();
    rt.block_on(agent.shutdown());
}

#[test]
fn ddtrace_without_a_ledger_shows_not_reported() {
    let rt = runtime();
    let port = apm::free_port();
    let agent = start_agent(&rt, "ledger_ddtrace", port, |_| {});
    let run = apm::run_flask_demo(port, &apm::run_dir("ledger_ddtrace_app"), 8, &[]);
    assert_eq!(run.send_errors, 0, "{}", run.summary);
    // Our tracer next to it.
    let tracer = tracer_to("ledger-rust", port, |c| c);
    traces(&tracer, 2, 2);
    tracer.flush(Duration::from_secs(20)).unwrap();
    let flask = wait_for(&agent, "flask-demo", |s| {
        s.writers.first().is_some_and(|w| w.pending == 0)
    });
    assert!(flask.tracer.is_none(), "{flask:#?}");
    assert_eq!(flask.received, agent.status().total_received().spans - 4);
    assert_eq!(flask.received, flask.kept + flask.sampled_out);
    let ours = wait_for(&agent, "ledger-rust", |s| s.balanced);
    assert_balances(&ours);
    let text = trace_agent::status::render(&agent.status());
    assert!(
        text.contains("service \"flask-demo\": tracer: not reported → received"),
        "{text}"
    );
    assert!(agent.status().ledger.bad_headers == 0);
    tracer.shutdown(Duration::from_secs(10)).unwrap();
    rt.block_on(agent.shutdown());
}

#[test]
fn otlp_spans_are_in_the_ledger_as_not_reported() {
    let rt = runtime();
    let agent = start_agent(&rt, "ledger_otlp", apm::free_port(), |c| {
        c.otlp_receiver.http_endpoint = Some("127.0.0.1:0".to_owned());
    });
    let addr = agent.otlp_http_addr().expect("OTLP/HTTP on");
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otlp-svc"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "root",
             "kind": 2, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"},
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203332", "parentSpanId": "b7ad6b7169203331",
             "name": "child", "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000050000000"}
        ]}]
    }]});
    let (code, reply) = apm::http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&reply));
    let s = wait_for(&agent, "otlp-svc", |s| s.balanced);
    assert!(s.tracer.is_none());
    assert_eq!((s.received, s.kept, s.writers[0].delivered), (2, 2, 2), "{s:#?}");
    rt.block_on(agent.shutdown());
}
