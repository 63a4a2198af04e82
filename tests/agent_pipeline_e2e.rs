//! The whole agent path, as `trace-agent run` builds it from its config (API key + `apm_dd_url`
//! pointing at a loopback intake): tracers → receiver → stats → samplers → Datadog writer.
//! What the intake decodes must hold every kept trace, and stats whose hits, errors and
//! top-level hits equal what was sent exactly, with sketch quantiles within 1% of the exact
//! quantiles of the durations sent (as the agent records them: 10-bit mantissa, see
//! [`recorded`]).

#[allow(dead_code)] // this binary uses part of the shared intake (no failure injection)
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use support::intake::Intake;
use support::runtime::runtime;
use support::sketches::{CheckoutRequest, Sums, assert_within_1pct, exact_quantile, merge, recorded};
use trace_agent::config::{AgentConfig, Secret};
use trace_agent::upstream::pb;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// The agent as `trace-agent run` would start it with `api_key` and `apm_dd_url` set.
fn start_agent(rt: &tokio::runtime::Runtime, intake: &Intake) -> trace_agent::Agent {
    let mut config = AgentConfig::local(apm::free_port());
    config.api_key = Some(Secret::new(KEY));
    config.upstream.apm_dd_url = Some(intake.url());
    config.default_env = "test".to_owned();
    rt.block_on(trace_agent::start(config)).unwrap()
}

fn stats_by_resource(payloads: &[pb::StatsPayload]) -> BTreeMap<(String, String, String), Sums> {
    let mut out: BTreeMap<(String, String, String), Sums> = BTreeMap::new();
    for p in payloads {
        assert!(!p.client_computed, "the agent computed these");
        for c in &p.stats {
            for b in &c.stats {
                assert_eq!(b.duration, 10_000_000_000, "10 s buckets");
                for g in &b.stats {
                    let s = out
                        .entry((g.service.clone(), g.name.clone(), g.resource.clone()))
                        .or_default();
                    s.hits += g.hits;
                    s.errors += g.errors;
                    s.top_level_hits += g.top_level_hits;
                    merge(&mut s.ok, &g.ok_summary);
                    merge(&mut s.err, &g.error_summary);
                }
            }
        }
    }
    out
}

/// Our tracer with durations we choose: exact counts and quantiles are known in advance.
#[test]
fn our_tracer_stats_are_exact_and_quantiles_within_one_percent() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let agent = start_agent(&rt, &intake);
    let tracer = tracer::Tracer::new(
        tracer::TracerConfig::default()
            .with_service("checkout")
            .with_env("test")
            .with_agent_url(&format!("http://{}", agent.tcp_addr().unwrap()))
            .unwrap(),
    )
    .unwrap();
    // 200 requests on two resources; every 10th on /pay fails. Durations 1..=100 ms (distinct).
    let start = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    let mut sent: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for i in 0..200u64 {
        let request = CheckoutRequest::nth(i);
        let span = request.span(&tracer).start_at(start).start();
        request.finish(span, start, sent.entry(request.resource).or_default());
    }
    tracer.flush(Duration::from_secs(20)).expect("flush to our agent");
    let status = rt.block_on(agent.shutdown());
    assert_eq!(status.total_received().traces, 200, "{status:#?}");

    let traces: usize = intake
        .agent_payloads()
        .iter()
        .flat_map(|a| &a.tracer_payloads)
        .map(|t| t.chunks.len())
        .sum();
    assert_eq!(
        traces, 200,
        "a 200-trace burst is kept whole (the tracer sent priority 1)"
    );

    let stats = stats_by_resource(&intake.stats_payloads());
    for (resource, durations) in &sent {
        let key = ("checkout".to_owned(), "http.request".to_owned(), (*resource).to_owned());
        let got = stats.get(&key).unwrap_or_else(|| panic!("no stats for {key:?}"));
        got.check(resource, durations);
    }
    let dd = status
        .writers
        .iter()
        .find(|w| w.name == "datadog")
        .expect("datadog writer");
    assert!(dd.traces.payloads_sent >= 1 && dd.stats.payloads_sent >= 1, "{dd:#?}");
    assert!(dd.traces.dropped_payloads.is_empty(), "{dd:#?}");
}

/// The real Python ddtrace Flask demo: every trace reaches the intake, and the stats of each
/// resource equal the requests the demo made (its `GET /api/error` requests: hits = errors).
#[test]
fn ddtrace_flask_demo_traces_and_stats_reach_the_intake() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let agent = start_agent(&rt, &intake);
    let port = agent.tcp_addr().unwrap().port();
    let requests = 8;
    let run = apm::run_flask_demo(port, &apm::run_dir("agent_pipeline_ddtrace"), requests, &[]);
    assert_eq!(run.send_errors, 0, "{}", run.summary);
    let status = rt.block_on(agent.shutdown());

    let chunks = intake.chunks();
    assert_eq!(chunks.len(), requests, "every kept trace: {status:#?}");
    let ids: HashSet<u64> = chunks.iter().flat_map(|c| &c.spans).map(|s| s.span_id).collect();
    assert_eq!(
        ids.len(),
        chunks.iter().map(|c| c.spans.len()).sum::<usize>(),
        "no duplicates"
    );

    // Expected from what was sent: the root (request) span of each trace.
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for c in &chunks {
        let root = c.spans.iter().find(|s| s.parent_id == 0).expect("root");
        let e = expected.entry(root.resource.clone()).or_default();
        e.0 += 1;
        e.1 += u64::from(root.error != 0);
        if root.error == 0 {
            durations
                .entry(root.resource.clone())
                .or_default()
                .push(recorded(root.duration));
        }
    }
    assert!(
        expected.get("GET /api/error").is_some_and(|e| e.0 == e.1 && e.0 > 0),
        "{expected:?}"
    );
    let stats = stats_by_resource(&intake.stats_payloads());
    for (resource, (hits, errors)) in &expected {
        let key = ("flask-demo".to_owned(), "flask.request".to_owned(), resource.clone());
        let got = stats
            .get(&key)
            .unwrap_or_else(|| panic!("no stats for {key:?}: {:?}", stats.keys()));
        assert_eq!(
            (got.hits, got.errors, got.top_level_hits),
            (*hits, *errors, *hits),
            "{resource}"
        );
        if let Some(d) = durations.get_mut(resource) {
            d.sort_by(f64::total_cmp);
            let sketch = got.ok.as_ref().expect("ok latencies");
            for q in [0.5, 0.99] {
                assert_within_1pct(resource, sketch.quantile(q).unwrap(), exact_quantile(d, q));
            }
        }
    }
}
