//! The real Python `ddtrace` Flask demo (testdata/peer/flask_app.py) against our agent, started in-process
//! on a free port: v0.5 (default), v0.4, and with client-side stats.

#[path = "support/runtime.rs"]
mod runtime;

use runtime::runtime;
use trace_agent::config::AgentConfig;
use trace_agent::status::StatusSnapshot;

/// 8 requests: every 4th is `/api/error` (11 spans), the others 9 spans.
const REQUESTS: usize = 8;
const EXPECTED_SPANS: u64 = 6 * 9 + 2 * 11;

/// Our agent, in-process on a free port, on its own runtime.
fn start_agent() -> (tokio::runtime::Runtime, u16, trace_agent::Agent) {
    start_agent_with(|_| {})
}

fn start_agent_with(edit: impl FnOnce(&mut AgentConfig)) -> (tokio::runtime::Runtime, u16, trace_agent::Agent) {
    let rt = runtime();
    let port = apm::free_port();
    let mut config = AgentConfig::local(port);
    edit(&mut config);
    let agent = rt.block_on(trace_agent::start(config)).unwrap();
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

/// The rates feedback loop with the real tracer: a target of 0 traces/s makes the priority
/// sampler feed back rate 0, so ddtrace (stats on) drops P0 traces itself and reports them;
/// every trace is accounted for.
#[test]
fn ddtrace_honours_rate_by_service_and_reports_its_p0_drops() {
    let (rt, port, agent) = start_agent_with(|c| c.max_traces_per_second = 0.0);
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

/// ddtrace with client-side stats sends its own stats to `/v0.6/stats` and its traces (flagged
/// `Datadog-Client-Computed-Stats`) to the pipeline. Running our concentrator on those same
/// traces anyway must give ddtrace's numbers, and ddtrace's DDSketches must decode with ours.
#[test]
fn ddtrace_client_stats_agree_with_our_concentrator() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;
    use trace_agent::identity::AgentIdentity;
    use trace_agent::pipeline::{ChunkSink, ProcessedPayload};
    use trace_agent::stats::sketch::Sketch;
    use trace_agent::stats::{ClientStatsInput, Concentrator, pb};

    type Captured = Arc<Mutex<(Vec<pb::StatsPayload>, Vec<pb::ClientStatsPayload>, usize)>>;
    struct StatsSink {
        concentrator: Concentrator,
        out: Captured,
    }
    impl ChunkSink for StatsSink {
        fn consume(&mut self, p: ProcessedPayload) {
            assert!(
                p.client_computed_stats,
                "ddtrace flags payloads whose stats it computed"
            );
            // Deliberately ignore the flag: compute stats on the same spans.
            self.concentrator.add_payload(p.payload.get(), p.received_at);
            self.out.lock().unwrap().2 += 1;
        }
        fn consume_client_stats(&mut self, input: ClientStatsInput) {
            self.out.lock().unwrap().1.push(input.payload);
        }
        fn flush(&mut self) {
            if let Some(s) = self.concentrator.flush(SystemTime::now(), true) {
                self.out.lock().unwrap().0.push(s);
            }
        }
    }

    let rt = runtime();
    let port = apm::free_port();
    let config = AgentConfig::local(port);
    let out: Captured = Arc::default();
    let sink = StatsSink {
        concentrator: Concentrator::new(&config.stats, AgentIdentity::default(), SystemTime::now()),
        out: Arc::clone(&out),
    };
    let agent = rt.block_on(trace_agent::start_with_sink(config, |_| sink)).unwrap();
    let run = apm::run_flask_demo(
        port,
        &apm::run_dir("agent_peer_stats_agree"),
        REQUESTS,
        &[("STATS", "true")],
    );
    let status = rt.block_on(agent.shutdown());
    assert_eq!(run.send_errors, 0, "tracer send errors:\n{}", run.summary);
    assert_eq!(status.total_received().traces, REQUESTS as u64, "{status:#?}");
    let (ours, theirs, trace_payloads) = std::mem::take(&mut *out.lock().unwrap());
    assert!(
        trace_payloads > 0 && !theirs.is_empty(),
        "{trace_payloads} trace payloads, {} stats payloads",
        theirs.len()
    );

    // (service, name, resource, status) → (hits, errors, top-level hits, duration), ok sketch
    type Totals = BTreeMap<String, ((u64, u64, u64, u64), Sketch)>;
    fn add<'a>(totals: &mut Totals, groups: impl Iterator<Item = &'a pb::ClientGroupedStats>) {
        for g in groups {
            let key = format!("{}|{}|{}|{}", g.service, g.name, g.resource, g.http_status_code);
            let ok = Sketch::decode(&g.ok_summary).expect("ok summary decodes with our DDSketch");
            let err = Sketch::decode(&g.error_summary).expect("error summary decodes with our DDSketch");
            assert_eq!(
                ok.count() + err.count(),
                g.hits as f64,
                "{key}: one sketch value per hit"
            );
            assert_eq!(err.count(), g.errors as f64, "{key}");
            match totals.get_mut(&key) {
                None => {
                    totals.insert(key, ((g.hits, g.errors, g.top_level_hits, g.duration), ok));
                }
                Some((t, sketch)) => {
                    t.0 += g.hits;
                    t.1 += g.errors;
                    t.2 += g.top_level_hits;
                    t.3 += g.duration;
                    sketch.merge(&ok).expect("same mapping within one side");
                }
            }
        }
    }
    let mut ours_totals = Totals::new();
    add(
        &mut ours_totals,
        ours.iter()
            .flat_map(|p| &p.stats)
            .flat_map(|c| &c.stats)
            .flat_map(|b| &b.stats),
    );
    let mut theirs_totals = Totals::new();
    add(
        &mut theirs_totals,
        theirs.iter().flat_map(|c| &c.stats).flat_map(|b| &b.stats),
    );
    // The demo's four routes, each a top-level flask.request (errors on /api/error).
    assert_eq!(ours_totals.len(), 4, "{:?}", ours_totals.keys());
    assert_eq!(
        ours_totals.values().map(|(t, _)| t.0).sum::<u64>(),
        REQUESTS as u64,
        "every request's root span counted once"
    );
    let counts = |t: &Totals| t.iter().map(|(k, (c, _))| (k.clone(), *c)).collect::<BTreeMap<_, _>>();
    assert_eq!(
        counts(&ours_totals),
        counts(&theirs_totals),
        "our concentrator vs ddtrace's client stats"
    );
    for (key, (_, ours_sketch)) in &ours_totals {
        let theirs_sketch = &theirs_totals[key].1;
        assert_eq!(ours_sketch.count(), theirs_sketch.count(), "{key}");
        for q in [0.0, 0.5, 1.0] {
            if let (Some(o), Some(t)) = (ours_sketch.quantile(q), theirs_sketch.quantile(q)) {
                // Each within ~1 % of the true latency (ours after 10-bit truncation).
                assert!((o / t - 1.0).abs() <= 0.025, "{key} q{q}: ours {o} vs ddtrace {t}");
            }
        }
    }
}
