//! Client-side stats and P0 dropping (`DD_TRACE_STATS_COMPUTATION_ENABLED`) against real
//! agents: Datadog's `ddapm-test-agent` and our agent started in-process with a loopback
//! intake. Half the traces are rejected by the sampler (`DD_TRACE_SAMPLE_RATE=0.5`); the
//! rejected ones without an error must not be sent, yet the stats must count every trace
//! exactly once, with sketch quantiles within 1 % of the recorded durations.

#[allow(dead_code)] // this binary uses part of the shared intake (no failure injection)
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::intake::Intake;
use support::runtime::runtime;
use support::sketches::{CheckoutRequest, Sums, check_sketches, merge};
use support::test_agent::{assert_no_check_failed, session_requests, session_traces, start_in_session};
use trace_agent::config::{AgentConfig, Secret};
use tracer::{Tracer, TracerConfig};

/// What the workload sent, per resource, and which traces the tracer had to send.
#[derive(Default, Debug)]
struct Sent {
    /// resource → (ok durations, error durations), as sketches record them.
    by_resource: BTreeMap<&'static str, (Vec<f64>, Vec<f64>)>,
    /// Low 64 bits of the trace ids that must reach the agent (kept, or holding an error).
    must_send: BTreeSet<u64>,
    dropped_traces: u64,
    dropped_spans: u64,
}

/// 200 traces of two spans on two resources; every 10th `POST /pay` fails. The sampler
/// keeps a trace iff `sampled_by_rate(trace_id, 0.5)` (the rate limit is lifted).
fn workload(tracer: &Tracer) -> Sent {
    let mut sent = Sent::default();
    let start = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    for i in 0..200u64 {
        let request = CheckoutRequest::nth(i);
        let span = request
            .span(tracer)
            .tag("http.method", if i % 2 == 0 { "GET" } else { "POST" })
            .start_at(start)
            .start();
        let trace = span.trace_id().low();
        {
            let child = span.child("db.query").start_at(start).start();
            child.finish_at(start + request.duration / 2);
        }
        request.finish(span, start, sent.by_resource.entry(request.resource).or_default());
        if request.fails || tracer::sampling::sampled_by_rate(trace, 0.5) {
            sent.must_send.insert(trace);
        } else {
            sent.dropped_traces += 1;
            sent.dropped_spans += 2;
        }
    }
    assert!(
        sent.dropped_traces > 50 && sent.must_send.len() > 50,
        "both kinds of trace occur: {sent:?}"
    );
    sent
}

fn config(url: &str) -> TracerConfig {
    TracerConfig::default()
        .with_service("checkout")
        .with_env("test")
        .with_version("1.0")
        .with_agent_url(url)
        .unwrap()
        .with_sample_rate(0.5)
        .with_rate_limit(1e9)
        .with_stats_computation(true)
}

#[test]
fn test_agent_gets_exact_stats_and_no_rejected_traces() {
    let token = "rust-client-stats";
    let agent = start_in_session("tracer-client-stats", token);
    let tracer = Tracer::new(config(&agent.url())).expect("tracer");
    let sent = workload(&tracer);
    tracer.shutdown(Duration::from_secs(20)).expect("everything delivered");
    let health = tracer.health();
    assert_eq!(
        (health.p0_traces_dropped, health.p0_spans_dropped),
        (sent.dropped_traces, sent.dropped_spans),
        "{health:#?}"
    );
    assert!(
        health.stats_payloads_sent >= 1 && health.stats_payloads_failed == 0,
        "stats flushed at shutdown: {health:#?}"
    );

    // Traces: exactly the kept ones and the rejected ones holding an error.
    let traces = session_traces(&agent, token);
    let got: BTreeSet<u64> = traces
        .iter()
        .map(|t| t[0]["trace_id"].as_u64().expect("trace id"))
        .collect();
    assert_eq!(got, sent.must_send, "rejected traces without an error are not sent");
    assert_eq!(traces.len(), sent.must_send.len());

    // Stats, as the test agent decoded them (it parses each sketch with the protobuf
    // `DDSketch` message and reports the bytes it parsed).
    let (status, body) = agent.get(&format!("/test/session/stats?test_session_token={token}"));
    assert_eq!(status, 200, "{body}");
    let payloads: Vec<Value> = serde_json::from_str(&body).unwrap();
    let mut sums: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for p in &payloads {
        assert_eq!((p["Env"].as_str(), p["Version"].as_str()), (Some("test"), Some("1.0")));
        for b in p["Stats"].as_array().unwrap() {
            assert_eq!(b["Duration"], 10_000_000_000u64);
            for g in b["Stats"].as_array().unwrap() {
                assert_eq!(
                    (g["Service"].as_str(), g["Name"].as_str()),
                    (Some("checkout"), Some("http.request"))
                );
                assert!(g["OkSummary"].as_u64().is_some_and(|n| n > 0), "a parsed sketch: {g}");
                let e = sums.entry(g["Resource"].as_str().unwrap().to_owned()).or_default();
                e.0 += g["Hits"].as_u64().unwrap();
                e.1 += g["Errors"].as_u64().unwrap();
                e.2 += g["TopLevelHits"].as_u64().unwrap();
            }
        }
    }
    let want: BTreeMap<String, (u64, u64, u64)> = sent
        .by_resource
        .iter()
        .map(|(r, (ok, err))| {
            let n = (ok.len() + err.len()) as u64;
            ((*r).to_owned(), (n, err.len() as u64, n))
        })
        .collect();
    assert_eq!(
        sums, want,
        "hits, errors and top-level hits per resource count every trace once"
    );

    // The raw requests: headers of the trace payloads, and the sketches decoded.
    let requests = session_requests(&agent, token);
    let (mut p0_traces, mut p0_spans, mut trace_payloads) = (0, 0, 0);
    let mut by_resource: BTreeMap<String, Sums> = BTreeMap::new();
    for r in &requests {
        let url = r["url"].as_str().unwrap_or_default();
        let header = |name: &str| {
            r["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_owned)
        };
        if url.ends_with("/traces") {
            trace_payloads += 1;
            assert_eq!(header("Datadog-Client-Computed-Stats").as_deref(), Some("yes"), "{r}");
            p0_traces += header("Datadog-Client-Dropped-P0-Traces").map_or(0, |v| v.parse::<u64>().unwrap());
            p0_spans += header("Datadog-Client-Dropped-P0-Spans").map_or(0, |v| v.parse::<u64>().unwrap());
        } else if url.ends_with("/v0.6/stats") {
            let body = apm::base64_decode(r["body"].as_str().unwrap());
            let p = trace_agent::decode::decode_client_stats(&body).expect("our agent decodes it too");
            for b in p.stats {
                for g in b.stats {
                    let s = by_resource.entry(g.resource.clone()).or_default();
                    merge(&mut s.ok, &g.ok_summary);
                    merge(&mut s.err, &g.error_summary);
                }
            }
        }
    }
    assert!(trace_payloads >= 1);
    assert_eq!((p0_traces, p0_spans), (sent.dropped_traces, sent.dropped_spans));
    for (resource, durations) in &sent.by_resource {
        let s = &by_resource[*resource];
        check_sketches(resource, s.ok.as_ref(), s.err.as_ref(), durations);
    }

    assert_no_check_failed(&agent);
    agent.stop();
}

#[test]
fn our_agent_forwards_client_stats_once_and_only_kept_traces() {
    let rt = runtime();
    let intake = rt.block_on(Intake::start());
    let mut agent_config = AgentConfig::local(apm::free_port());
    agent_config.api_key = Some(Secret::new("0123456789abcdef0123456789abcdef"));
    agent_config.upstream.apm_dd_url = Some(intake.url());
    agent_config.default_env = "test".to_owned();
    let agent = rt.block_on(trace_agent::start(agent_config)).unwrap();
    let tracer = Tracer::new(config(&format!("http://{}", agent.tcp_addr().unwrap()))).expect("tracer");
    let sent = workload(&tracer);
    tracer.shutdown(Duration::from_secs(20)).expect("everything delivered");
    let health = tracer.health();
    let status = rt.block_on(agent.shutdown());
    assert_eq!(
        status.total_received().traces,
        sent.must_send.len() as u64,
        "{status:#?}"
    );
    assert_eq!(
        status.client_dropped_p0,
        (sent.dropped_traces, sent.dropped_spans),
        "the agent learnt of every dropped trace"
    );
    assert_eq!(health.p0_traces_dropped, sent.dropped_traces);

    // Every trace at the intake is one the tracer had to send.
    let chunks = intake.chunks();
    let at_intake: BTreeSet<u64> = chunks.iter().map(|c| c.spans[0].trace_id).collect();
    assert!(!at_intake.is_empty());
    assert!(at_intake.is_subset(&sent.must_send), "no rejected trace was forwarded");

    // Stats: the tracer's, once. Any stats the agent computed itself would double them.
    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    let (mut client, mut agent_computed) = (0, 0);
    for p in intake.stats_payloads() {
        for c in &p.stats {
            for b in &c.stats {
                for g in &b.stats {
                    if g.service != "checkout" {
                        continue;
                    }
                    if p.client_computed {
                        client += 1;
                    } else {
                        agent_computed += 1;
                    }
                    let s = sums.entry(g.resource.clone()).or_default();
                    s.hits += g.hits;
                    s.errors += g.errors;
                    s.top_level_hits += g.top_level_hits;
                    merge(&mut s.ok, &g.ok_summary);
                    merge(&mut s.err, &g.error_summary);
                }
            }
        }
    }
    assert!(client > 0, "client-computed stats reached the intake");
    assert_eq!(
        agent_computed, 0,
        "the agent did not compute stats for these traces again"
    );
    for (resource, durations) in &sent.by_resource {
        let s = sums.get(*resource).unwrap_or_else(|| panic!("no stats for {resource}"));
        s.check(resource, durations);
    }
}
