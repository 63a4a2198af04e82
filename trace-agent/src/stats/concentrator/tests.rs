use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::span::{Span, Str, TraceChunk};
use crate::stats::key::{OVERFLOW_VALUE, TRILEAN_FALSE, TRILEAN_TRUE};

const SEC: i64 = 1_000_000_000;
/// A bucket-aligned instant.
const T0: i64 = 1_700_000_000 * SEC;

fn at(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

fn st(v: &str) -> Str<'static> {
    Str::from(v.to_owned())
}

#[derive(Clone)]
struct S {
    resource: &'static str,
    start: i64,
    duration: i64,
    parent: u64,
    error: bool,
    meta: Vec<(&'static str, String)>,
    metrics: Vec<(&'static str, f64)>,
}

fn top(resource: &'static str, start: i64, duration: i64) -> S {
    S {
        resource,
        start,
        duration,
        parent: 0,
        error: false,
        meta: Vec::new(),
        metrics: vec![("_top_level", 1.0)],
    }
}

impl S {
    fn span(&self, id: u64) -> Span<'static> {
        Span {
            service: st("web"),
            name: st("http.request"),
            resource: st(self.resource),
            r#type: st("web"),
            trace_id: 1,
            span_id: id,
            parent_id: self.parent,
            start: self.start,
            duration: self.duration,
            error: i32::from(self.error),
            meta: self.meta.iter().map(|(k, v)| (st(k), st(v))).collect(),
            metrics: self.metrics.iter().map(|(k, v)| (st(k), *v)).collect(),
            ..Default::default()
        }
    }
}

fn chunk(spans: &[S]) -> TraceChunk<'static> {
    TraceChunk::from_spans(spans.iter().enumerate().map(|(i, s)| s.span(i as u64 + 1)).collect())
}

fn payload(chunks: Vec<TraceChunk<'static>>) -> TracerPayload<'static> {
    TracerPayload {
        env: st("prod"),
        hostname: st("host-a"),
        app_version: st("1.2.3"),
        language_name: st("python"),
        chunks,
        ..Default::default()
    }
}

fn agent() -> AgentIdentity {
    AgentIdentity {
        hostname: "agent-host".into(),
        env: "agent-env".into(),
        version: "7.70.0".into(),
    }
}

fn concentrator(now: i64) -> Concentrator {
    Concentrator::new(&StatsConfig::default(), agent(), at(now)).with_rng_seed(7)
}

fn groups(p: &pb::StatsPayload) -> Vec<(u64, &pb::ClientGroupedStats)> {
    p.stats
        .iter()
        .flat_map(|c| c.stats.iter())
        .flat_map(|b| b.stats.iter().map(move |g| (b.start, g)))
        .collect()
}

#[test]
fn buckets_by_end_time() {
    let mut c = concentrator(T0);
    // Starts in [T0, T0+10 s) but ends in [T0+10 s, T0+20 s).
    c.add_payload(&payload(vec![chunk(&[top("a", T0 + 5 * SEC, 7 * SEC)])]), at(T0));
    c.add_payload(&payload(vec![chunk(&[top("b", T0 + SEC, SEC)])]), at(T0));
    let out = c.flush(at(T0 + 40 * SEC), false).unwrap();
    let g = groups(&out);
    let start_of = |r: &str| g.iter().find(|(_, g)| g.resource == r).map(|(s, _)| *s);
    assert_eq!(start_of("a"), Some((T0 + 10 * SEC) as u64));
    assert_eq!(start_of("b"), Some(T0 as u64));
    assert!(out.stats[0].stats.iter().all(|b| b.duration == 10 * SEC as u64));
}

#[test]
fn flush_keeps_two_buckets() {
    let mut c = concentrator(T0);
    c.add_payload(&payload(vec![chunk(&[top("a", T0, SEC)])]), at(T0));
    // bucket T0 is flushed once T0 ≤ now − 20 s.
    assert!(c.flush(at(T0 + 10 * SEC), false).is_none());
    assert!(c.flush(at(T0 + 20 * SEC - 1), false).is_none());
    assert_eq!(c.open_buckets(), 1);
    let out = c.flush(at(T0 + 20 * SEC), false).unwrap();
    assert_eq!(groups(&out).len(), 1);
    assert_eq!(c.open_buckets(), 0);
    assert!(c.flush(at(T0 + 30 * SEC), false).is_none());
    assert_eq!(c.counters().buckets_flushed, 1);
}

#[test]
fn late_spans_go_to_the_oldest_open_bucket() {
    // Started at T0+100 s: only that bucket is open.
    let mut c = concentrator(T0 + 100 * SEC);
    c.add_payload(&payload(vec![chunk(&[top("old", T0, SEC)])]), at(T0 + 100 * SEC));
    assert_eq!(c.counters().late_spans, 1);
    let out = c.flush(at(T0 + 130 * SEC), false).unwrap();
    assert_eq!(groups(&out)[0].0, (T0 + 100 * SEC) as u64);
    // After a flush at T0+130 s the oldest open bucket is T0+120 s.
    c.add_payload(
        &payload(vec![chunk(&[top("late", T0 + 105 * SEC, 0)])]),
        at(T0 + 130 * SEC),
    );
    c.add_payload(
        &payload(vec![chunk(&[top("now", T0 + 131 * SEC, 0)])]),
        at(T0 + 130 * SEC),
    );
    assert_eq!(c.counters().late_spans, 2);
    let out = c.flush(at(T0 + 200 * SEC), true).unwrap();
    let g = groups(&out);
    assert!(
        g.iter()
            .any(|(s, g)| g.resource == "late" && *s == (T0 + 120 * SEC) as u64)
    );
    assert!(
        g.iter()
            .any(|(s, g)| g.resource == "now" && *s == (T0 + 130 * SEC) as u64)
    );
}

#[test]
fn future_spans_are_allowed_but_bounded() {
    let mut c = concentrator(T0);
    c.add_payload(&payload(vec![chunk(&[top("soon", T0 + 30 * SEC, 0)])]), at(T0));
    c.add_payload(&payload(vec![chunk(&[top("far", T0 + 3600 * SEC, 0)])]), at(T0));
    assert_eq!(c.counters().future_clamped_spans, 1);
    assert_eq!(c.open_buckets(), 2);
    let out = c.flush(at(T0), true).unwrap();
    let g = groups(&out);
    let start_of = |r: &str| g.iter().find(|(_, g)| g.resource == r).map(|(s, _)| *s);
    assert_eq!(start_of("soon"), Some((T0 + 30 * SEC) as u64));
    assert_eq!(start_of("far"), Some((T0 + MAX_FUTURE_BUCKETS * 10 * SEC) as u64));
}

#[test]
fn force_flush_empties_everything() {
    let mut c = concentrator(T0);
    c.add_payload(&payload(vec![chunk(&[top("a", T0, SEC)])]), at(T0));
    c.add_payload(&payload(vec![chunk(&[top("b", T0 + 15 * SEC, SEC)])]), at(T0));
    assert!(c.flush(at(T0 + 5 * SEC), false).is_none());
    let out = c.flush(at(T0 + 5 * SEC), true).unwrap();
    assert_eq!(groups(&out).len(), 2);
    assert_eq!(c.open_buckets(), 0);
    assert_eq!(out.agent_hostname, "agent-host");
    assert_eq!(out.agent_env, "agent-env");
    assert_eq!(out.agent_version, "7.70.0");
    assert!(!out.client_computed);
    assert!(c.flush(at(T0 + 5 * SEC), true).is_none());
}

#[test]
fn counts_weights_and_sketches() {
    let mut c = concentrator(T0);
    let mut root = top("r", T0, 4 * SEC);
    root.metrics.push(("_sample_rate", 0.25));
    let mut child_err = top("r", T0, 2 * SEC);
    child_err.parent = 1;
    child_err.error = true;
    child_err.metrics = vec![("_dd.measured", 1.0)];
    // Not eligible: neither top-level, measured nor of a counted kind.
    let mut internal = top("r", T0, SEC);
    internal.parent = 1;
    internal.metrics.clear();
    c.add_payload(&payload(vec![chunk(&[root, child_err, internal])]), at(T0));
    assert_eq!(c.counters().spans_seen, 3);
    assert_eq!(c.counters().spans_counted, 2);
    let out = c.flush(at(T0), true).unwrap();
    let g = groups(&out);
    let root_g = g.iter().find(|(_, g)| g.is_trace_root == TRILEAN_TRUE).unwrap().1;
    assert_eq!((root_g.hits, root_g.errors, root_g.top_level_hits), (4, 0, 4));
    assert_eq!(root_g.duration, 16 * SEC as u64);
    let child = g.iter().find(|(_, g)| g.is_trace_root == TRILEAN_FALSE).unwrap().1;
    assert_eq!((child.hits, child.errors, child.top_level_hits), (4, 4, 0));
    assert_eq!(child.duration, 8 * SEC as u64);
    // Sketches: unweighted, one value each, in the right one.
    let ok = Sketch::decode(&root_g.ok_summary).unwrap();
    let err = Sketch::decode(&root_g.error_summary).unwrap();
    assert_eq!((ok.count(), err.count()), (1.0, 0.0));
    assert!((ok.quantile(0.5).unwrap() / 4e9 - 1.0).abs() <= 0.011);
    let err = Sketch::decode(&child.error_summary).unwrap();
    assert_eq!(err.count(), 1.0);
    assert!((err.quantile(1.0).unwrap() / 2e9 - 1.0).abs() <= 0.011);
}

#[test]
fn fractional_weights_round_stochastically() {
    let mut c = concentrator(T0);
    let chunks: Vec<_> = (0..1000)
        .map(|_| {
            let mut s = top("r", T0, 1000);
            s.metrics.push(("_sample_rate", 0.3));
            chunk(&[s])
        })
        .collect();
    c.add_payload(&payload(chunks), at(T0));
    let out = c.flush(at(T0), true).unwrap();
    let g = groups(&out)[0].1.clone();
    // 1000 / 0.3 = 3333.33…: floor or ceil.
    assert!(g.hits == 3333 || g.hits == 3334, "{}", g.hits);
    assert!(g.duration == 3_333_333 || g.duration == 3_333_334, "{}", g.duration);
    // Invalid rates weigh 1.
    assert_eq!(weight_of_rate(0.0), 1.0);
    assert_eq!(weight_of_rate(1.5), 1.0);
    assert_eq!(weight_of_rate(-1.0), 1.0);
    assert_eq!(weight_of_rate(0.5), 2.0);
}

#[test]
fn group_key_fields_split_groups() {
    let mut c = concentrator(T0);
    let with = |meta: &[(&'static str, &str)]| {
        let mut s = top("r", T0, SEC);
        s.meta = meta.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        s
    };
    let spans = [
        with(&[]),
        with(&[]),
        with(&[("http.status_code", "200")]),
        with(&[("http.status_code", "500")]),
        with(&[("span.kind", "server")]),
        with(&[("http.method", "GET"), ("http.route", "/a")]),
        with(&[("http.method", "GET"), ("http.endpoint", "/b"), ("http.route", "/a")]),
        with(&[("rpc.grpc.status_code", "2")]),
        with(&[("_dd.svc_src", "m")]),
        with(&[("span.kind", "client"), ("peer.service", "db")]),
        with(&[("span.kind", "client"), ("peer.service", "cache")]),
    ];
    let mut ch = chunk(&spans);
    ch.origin = st("synthetics-browser");
    c.add_payload(&payload(vec![ch, chunk(&[with(&[])])]), at(T0));
    let out = c.flush(at(T0), true).unwrap();
    let g = groups(&out);
    assert_eq!(g.len(), 11, "{g:#?}");
    let plain: Vec<_> = g
        .iter()
        .filter(|(_, g)| {
            g.http_status_code == 0
                && g.span_kind.is_empty()
                && g.http_method.is_empty()
                && g.grpc_status_code.is_empty()
                && g.service_source.is_empty()
        })
        .collect();
    // Same fields, synthetics or not.
    assert_eq!(plain.len(), 2);
    assert_eq!(plain.iter().map(|(_, g)| g.hits).sum::<u64>(), 3);
    assert!(plain.iter().any(|(_, g)| g.synthetics && g.hits == 2));
    assert!(g.iter().any(|(_, g)| g.http_endpoint == "/b"));
    assert!(g.iter().any(|(_, g)| g.http_endpoint == "/a"));
    assert!(g.iter().any(|(_, g)| g.peer_tags == vec!["peer.service:db".to_owned()]));
    assert!(g.iter().any(|(_, g)| g.grpc_status_code == "2"));
}

#[test]
fn payload_key_fields() {
    let mut c = Concentrator::new(
        &StatsConfig {
            container_id_dimension: true,
            ..StatsConfig::default()
        },
        agent(),
        at(T0),
    );
    let mut root = top("r", T0, SEC);
    root.meta.push(("_dd.git.commit.sha", "abc123".into()));
    let mut p = payload(vec![chunk(&[root]), chunk(&[top("r", T0, SEC)])]);
    p.container_id = st("cid-1");
    p.tags = vec![
        (st("_dd.tags.container"), st("image_tag:v9,git.commit.sha:fromctr")),
        (st("_dd.tags.process"), st("entrypoint.name:app")),
    ];
    c.add_payload(&p, at(T0));
    // Tracer without env and hostname: the agent's.
    let mut bare = payload(vec![chunk(&[top("r", T0, SEC)])]);
    bare.env = Str::new();
    bare.hostname = Str::new();
    c.add_payload(&bare, at(T0));
    let out = c.flush(at(T0), true).unwrap();
    assert_eq!(out.stats.len(), 3);
    let find = |f: &dyn Fn(&pb::ClientStatsPayload) -> bool| out.stats.iter().find(|p| f(p)).unwrap();
    let from_root = find(&|p| p.git_commit_sha == "abc123");
    assert_eq!(
        (
            from_root.env.as_str(),
            from_root.hostname.as_str(),
            from_root.version.as_str()
        ),
        ("prod", "host-a", "1.2.3")
    );
    assert_eq!(
        (from_root.container_id.as_str(), from_root.image_tag.as_str()),
        ("cid-1", "v9")
    );
    assert_eq!(
        (from_root.lang.as_str(), from_root.process_tags.as_str()),
        ("python", "entrypoint.name:app")
    );
    let from_ctr = find(&|p| p.git_commit_sha == "fromctr");
    assert_eq!(from_ctr.stats[0].stats[0].hits, 1);
    let fallback = find(&|p| p.env == "agent-env");
    assert_eq!(fallback.hostname, "agent-host");
    // Container id is not a dimension by default.
    let mut c = concentrator(T0);
    c.add_payload(&p, at(T0));
    assert!(
        c.flush(at(T0), true)
            .unwrap()
            .stats
            .iter()
            .all(|p| p.container_id.is_empty())
    );
}

#[test]
fn cardinality_is_capped_with_an_overflow_group() {
    let mut c = Concentrator::new(
        &StatsConfig {
            max_groups_per_bucket: 3,
            ..StatsConfig::default()
        },
        agent(),
        at(T0),
    );
    let resources: Vec<&'static str> = (0..10).map(|i| &*Box::leak(format!("r{i}").into_boxed_str())).collect();
    let spans: Vec<S> = resources.iter().map(|r| top(r, T0, SEC)).collect();
    c.add_payload(&payload(vec![chunk(&spans)]), at(T0));
    // An existing group keeps counting past the cap.
    c.add_payload(&payload(vec![chunk(&[top("r0", T0, SEC)])]), at(T0));
    // New payload keys past the cap go to the agent's own payload key.
    for i in 0..20 {
        let mut p = payload(vec![chunk(&[top("x", T0, SEC)])]);
        p.app_version = st(&format!("v{i}"));
        c.add_payload(&p, at(T0));
    }
    assert_eq!(c.counters().overflow_spans, 7 + 20);
    assert!(c.group_count() <= 2 * 3 + 2);
    let out = c.flush(at(T0), true).unwrap();
    let g = groups(&out);
    assert_eq!(g.len(), 5);
    let overflow: Vec<_> = g.iter().filter(|(_, g)| g.resource == OVERFLOW_VALUE).collect();
    assert_eq!(overflow.len(), 2);
    assert_eq!(overflow.iter().map(|(_, g)| g.hits).sum::<u64>(), 27);
    assert!(
        overflow
            .iter()
            .all(|(_, g)| g.service == OVERFLOW_VALUE && g.name == OVERFLOW_VALUE)
    );
    assert_eq!(g.iter().find(|(_, g)| g.resource == "r0").unwrap().1.hits, 2);
    let agent_payload = out.stats.iter().find(|p| p.env == "agent-env").unwrap();
    assert_eq!(agent_payload.hostname, "agent-host");
    assert_eq!(agent_payload.stats[0].stats[0].hits, 20);
}

#[test]
fn client_computed_payloads_are_skipped() {
    let mut c = concentrator(T0);
    let p = payload(vec![chunk(&[top("a", T0, SEC)])]);
    assert!(!c.add(&p, true, at(T0)));
    assert_eq!(c.counters().skipped_client_computed, 1);
    assert!(c.flush(at(T0), true).is_none());
    assert!(c.add(&p, false, at(T0)));
    assert!(c.flush(at(T0), true).is_some());
}

#[test]
fn span_kind_eligibility_follows_config() {
    let mut kinded = top("r", T0, SEC);
    kinded.metrics.clear();
    kinded.parent = 9;
    kinded.meta.push(("span.kind", "client".into()));
    for (by_kind, expected) in [(true, 1), (false, 0)] {
        let mut c = Concentrator::new(
            &StatsConfig {
                compute_stats_by_span_kind: by_kind,
                ..StatsConfig::default()
            },
            agent(),
            at(T0),
        );
        c.add_payload(&payload(vec![chunk(std::slice::from_ref(&kinded))]), at(T0));
        assert_eq!(c.counters().spans_counted, expected);
    }
}

// === differential test against Datadog's own concentrator (libdd-trace-stats) ===

mod differential {
    use super::*;
    use crate::stats::Rng;
    use libdd_trace_stats::span_concentrator::SpanConcentrator;

    const KINDS: [&str; 6] = ["", "server", "client", "producer", "consumer", "internal"];

    fn random_spans(rng: &mut Rng, n: usize) -> Vec<(S, &'static str, &'static str)> {
        let pick = |rng: &mut Rng, k: usize| (rng.next_u64() % k as u64) as usize;
        let services = ["web", "db", "cache"];
        let resources: Vec<&'static str> = (0..15)
            .map(|i| &*Box::leak(format!("GET /r{i}").into_boxed_str()))
            .collect();
        (0..n)
            .map(|i| {
                let mut s = top(
                    resources[pick(rng, resources.len())],
                    T0 + pick(rng, 25) as i64 * SEC,
                    0,
                );
                // Log-uniform durations, 1 µs … 10 s.
                s.duration = (1e3 * (rng.unit() * (1e7f64).ln()).exp()) as i64;
                s.parent = if pick(rng, 4) == 0 { 0 } else { 1 + i as u64 };
                s.error = pick(rng, 5) == 0;
                s.metrics.clear();
                match pick(rng, 4) {
                    0 => s.metrics.push(("_top_level", 1.0)),
                    1 => s.metrics.push(("_dd.measured", 1.0)),
                    2 => s.metrics.push(("_dd.partial_version", 1.0)),
                    _ => {}
                }
                let kind = KINDS[pick(rng, KINDS.len())];
                if !kind.is_empty() {
                    s.meta.push(("span.kind", kind.to_owned()));
                }
                if pick(rng, 2) == 0 {
                    s.meta
                        .push(("http.status_code", ["200", "404", "500"][pick(rng, 3)].to_owned()));
                }
                if pick(rng, 3) == 0 {
                    s.meta.push(("http.method", ["GET", "POST"][pick(rng, 2)].to_owned()));
                    s.meta.push(("http.route", "/users/{id}".to_owned()));
                }
                if pick(rng, 6) == 0 {
                    s.meta.push((
                        "grpc.code",
                        ["0", "NOT_FOUND", "StatusCode.UNAVAILABLE"][pick(rng, 3)].to_owned(),
                    ));
                }
                if pick(rng, 3) == 0 {
                    s.meta
                        .push(("peer.service", ["users-db", "redis"][pick(rng, 2)].to_owned()));
                    s.meta
                        .push(("out.host", ["10.0.0.1", "db.local"][pick(rng, 2)].to_owned()));
                }
                if pick(rng, 5) == 0 {
                    s.meta.push(("_dd.base_service", "base".to_owned()));
                }
                (s, services[pick(rng, 3)], ["", "synthetics"][pick(rng, 2)])
            })
            .collect()
    }

    /// The key fields libdd and we both export, for matching groups.
    fn key_of(g: &pb::ClientGroupedStats) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}",
            g.service,
            g.name,
            g.resource,
            g.r#type,
            g.span_kind,
            g.http_status_code,
            g.synthetics,
            g.is_trace_root,
            g.grpc_status_code,
            g.http_method,
            g.http_endpoint,
            g.peer_tags,
            g.service_source
        )
    }

    #[test]
    fn same_groups_counts_and_quantiles_as_libdd_trace_stats() {
        let mut rng = Rng::new(99);
        let spans = random_spans(&mut rng, 4000);
        let config = StatsConfig::default();
        let mut ours = Concentrator::new(&config, agent(), at(T0)).with_rng_seed(1);
        let mut theirs = SpanConcentrator::new(
            Duration::from_secs(10),
            at(T0),
            vec!["server".into(), "client".into(), "producer".into(), "consumer".into()],
            config.peer_tag_keys(),
            None,
            vec![],
            None, // no client-side resource obfuscation: as without `stats-obfuscation`
        );
        // Exact durations per (bucket, group, error) for the quantile check.
        let mut exact: std::collections::HashMap<(u64, String, bool), Vec<f64>> = Default::default();
        for (i, (s, service, origin)) in spans.iter().enumerate() {
            let mut span = s.span(i as u64 + 1);
            span.service = st(service);
            if !origin.is_empty() {
                span.meta.push((st("_dd.origin"), st(origin)));
            }
            let mut ch = TraceChunk::from_spans(vec![span.clone()]);
            ch.origin = st(origin);
            ours.add_payload(&payload(vec![ch]), at(T0));
            let pb_span = pb::Span {
                service: span.service.to_string(),
                name: span.name.to_string(),
                resource: span.resource.to_string(),
                r#type: span.r#type.to_string(),
                span_id: span.span_id,
                parent_id: span.parent_id,
                start: span.start,
                duration: span.duration,
                error: span.error,
                meta: span.meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                metrics: span.metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                ..Default::default()
            };
            theirs.add_span(&pb_span);
        }
        let ours_out = ours.flush(at(T0 + 100 * SEC), true).unwrap();
        let theirs_out = theirs.flush(at(T0 + 100 * SEC), true).all_buckets();
        let mut theirs_groups: std::collections::HashMap<(u64, String), pb::ClientGroupedStats> = Default::default();
        for b in &theirs_out {
            for g in &b.stats {
                assert!(theirs_groups.insert((b.start, key_of(g)), g.clone()).is_none());
            }
        }
        let ours_groups = groups(&ours_out);
        assert_eq!(ours_groups.len(), theirs_groups.len(), "group count");
        assert!(ours_groups.len() > 100, "the test data should make many groups");
        // Exact durations, recomputed from the spans each concentrator saw as eligible.
        for (i, (s, service, origin)) in spans.iter().enumerate() {
            let mut span = s.span(i as u64 + 1);
            span.service = st(service);
            let peer_keys = config.peer_tag_keys();
            if let Some(stats) = crate::stats::key::span_stats(&span, !origin.is_empty(), true, &peer_keys) {
                let g = stats.key.to_owned_key().to_grouped_stats();
                let bucket = align(span.start + span.duration, 10 * SEC) as u64;
                exact
                    .entry((bucket, key_of(&g), stats.error))
                    .or_default()
                    .push(span.duration as f64);
            }
        }
        let mut compared = 0;
        for (start, g) in ours_groups {
            let t = theirs_groups
                .get(&(start, key_of(g)))
                .unwrap_or_else(|| panic!("group {} missing from libdd", key_of(g)));
            assert_eq!(
                (g.hits, g.errors, g.top_level_hits, g.duration),
                (t.hits, t.errors, t.top_level_hits, t.duration),
                "{}",
                key_of(g)
            );
            for (ours_sk, theirs_sk, error) in [
                (&g.ok_summary, &t.ok_summary, false),
                (&g.error_summary, &t.error_summary, true),
            ] {
                let ours_sk = Sketch::decode(ours_sk).unwrap();
                let theirs_sk = libdd_ddsketch::DDSketch::from_encoded(theirs_sk).unwrap();
                assert_eq!(ours_sk.count(), theirs_sk.count());
                let Some(values) = exact.get_mut(&(start, key_of(g), error)) else {
                    assert_eq!(ours_sk.count(), 0.0);
                    continue;
                };
                values.sort_by(f64::total_cmp);
                for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                    let rank = (q * (values.len() - 1) as f64).floor() as usize;
                    let exact_v = values[rank];
                    let o = ours_sk.quantile(q).unwrap();
                    // 1 % sketch accuracy on the value truncated to 10 significant bits (≤ 2⁻⁹ lower).
                    let bound = 1.0 - 0.99 * (1.0 - 1.0 / 512.0);
                    assert!((o / exact_v - 1.0).abs() <= bound, "ours q{q}: {o} vs {exact_v}");
                    let bins = theirs_sk.ordered_bins();
                    let r = q * (theirs_sk.count() - 1.0);
                    let mut seen = 0.0;
                    let theirs_v = bins.iter().find(|(_, w)| {
                        seen += w;
                        seen > r
                    });
                    let t = theirs_v.map_or(f64::NAN, |b| b.0);
                    assert!((o / t - 1.0).abs() <= 0.02, "ours vs libdd q{q}: {o} vs {t}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 500);
    }
}

#[test]
fn payload_keys_are_interned_once_per_bucket() {
    let mut c = concentrator(T0);
    for _ in 0..50 {
        c.add_payload(
            &payload(vec![chunk(&[top("a", T0, SEC)]), chunk(&[top("b", T0, SEC)])]),
            at(T0),
        );
    }
    let bucket = c.buckets.values().next().unwrap();
    assert_eq!(bucket.payloads.len(), 1);
    assert_eq!(bucket.groups.len(), 2);
}
