//! Tests of [`Samplers`] as a whole: the order of 5.1, chunk rewrites, counters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::config::AgentConfig;
use crate::process::toplevel::TOP_LEVEL_KEY;
use crate::span::{PRIORITY_NONE, Span, Str, TraceChunk, TracerPayload, tag_get};

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn span(service: &str, trace_id: u64, span_id: u64, parent_id: u64) -> Span<'static> {
    Span {
        service: Str::from(service.to_owned()),
        name: Str::from("web.request"),
        resource: Str::from("GET /"),
        trace_id,
        span_id,
        parent_id,
        metrics: vec![(Str::from(TOP_LEVEL_KEY), 1.0)],
        ..Span::default()
    }
}

fn chunk(service: &str, trace_id: u64, priority: i32, error: bool) -> TraceChunk<'static> {
    let mut root = span(service, trace_id, 1, 0);
    root.error = i32::from(error);
    let mut child = span(service, trace_id, 2, 1);
    child.name = Str::from("db.query");
    child.metrics.clear();
    let mut c = TraceChunk::from_spans(vec![root, child]);
    c.priority = priority;
    c
}

fn config(f: impl FnOnce(&mut AgentConfig)) -> AgentConfig {
    let mut c = AgentConfig {
        default_env: "prod".to_owned(),
        ..AgentConfig::default()
    };
    f(&mut c);
    c
}

fn ctx() -> ChunkContext<'static> {
    ChunkContext::new("prod", 0, 1)
}

fn with_ssp(mut c: TraceChunk<'static>) -> TraceChunk<'static> {
    if let Some(s) = c.spans.get_mut(1) {
        s.metrics.push((Str::from(KEY_SPAN_SAMPLING_MECHANISM), 8.0));
    }
    c
}

#[test]
fn tracer_keep_is_kept_and_p0_without_rescue_is_dropped() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    let mut kept = chunk("web", 1, 1, false);
    let o = s.sample(&mut kept, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.sampler, o.reason),
        (true, SamplerName::Priority, Reason::TracerKeep)
    );
    assert!(!kept.dropped_trace);
    assert_eq!(kept.spans.len(), 2);

    let mut p0 = chunk("web", 2, 0, false);
    let o = s.sample(&mut p0, &ctx(), at(0));
    assert_eq!((o.keep, o.reason), (false, Reason::TracerDrop));
    assert!(!o.forward());
    assert!(p0.spans.is_empty() && p0.dropped_trace);

    let mut p2 = chunk("web", 3, 2, false);
    assert!(s.sample(&mut p2, &ctx(), at(0)).keep, "user keep");
}

#[test]
fn p0_chunks_are_rescued_by_errors_single_span_and_rare() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    let mut err = chunk("web", 10, 0, true);
    let o = s.sample(&mut err, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.sampler, o.reason),
        (true, SamplerName::Error, Reason::ErrorsKeep)
    );
    assert_eq!(err.spans[0].metric(KEY_ERRORS_RATE), Some(1.0));
    assert_eq!(err.priority, 0, "priority untouched outside probabilistic mode");

    let mut ssp = with_ssp(chunk("web", 11, 0, false));
    let o = s.sample(&mut ssp, &ctx(), at(0));
    assert!(!o.keep && o.forward());
    assert_eq!(o.single_span_spans, 1);
    assert_eq!(ssp.spans.len(), 1);
    assert_eq!(ssp.spans[0].span_id, 2);
    assert_eq!(ssp.priority, 2);
    assert!(!ssp.dropped_trace);

    let mut rare_cfg = config(|c| c.sampler.rare.enabled = true);
    rare_cfg.sampler.rare.enabled = true;
    let mut r = Samplers::new(&crate::config::compile::samplers(&rare_cfg));
    let mut first = chunk("web", 12, 0, false);
    let o = r.sample(&mut first, &ctx(), at(0));
    assert_eq!((o.keep, o.sampler, o.reason), (true, SamplerName::Rare, Reason::Rare));
    assert_eq!(first.spans[0].metric(KEY_RARE), Some(1.0));
    let mut second = chunk("web", 13, 0, false);
    assert!(
        !r.sample(&mut second, &ctx(), at(1)).keep,
        "same shape within the cooldown"
    );

    let st = s.stats();
    assert_eq!(st.single_span_chunks, 1);
    assert_eq!(st.single_span_spans, 1);
    assert_eq!(st.spans_dropped, 1, "the root of the single-span chunk");
}

#[test]
fn user_drop_is_never_rescued_as_a_trace() {
    let cfg = config(|c| c.sampler.rare.enabled = true);
    let mut s = Samplers::new(&crate::config::compile::samplers(&cfg));
    let mut c = chunk("web", 20, -1, true);
    let o = s.sample(&mut c, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.sampler, o.reason),
        (false, SamplerName::Priority, Reason::UserDrop)
    );
    assert!(c.spans.is_empty());
    // Single-span sampling still applies (as in the Go agent).
    let mut c = with_ssp(chunk("web", 21, -1, true));
    let o = s.sample(&mut c, &ctx(), at(0));
    assert!(!o.keep && o.forward());
    assert_eq!(c.priority, 2);
}

#[test]
fn error_rare_sample_tracer_drop_only_hard_drops_manual_drops() {
    let cfg = config(|c| c.features = vec!["error_rare_sample_tracer_drop".to_owned()]);
    let mut s = Samplers::new(&crate::config::compile::samplers(&cfg));
    let mut auto = chunk("web", 30, -1, true);
    assert_eq!(s.sample(&mut auto, &ctx(), at(0)).reason, Reason::ErrorsKeep);
    let mut manual = chunk("web", 31, -1, true);
    manual.tags.push((Str::from("_dd.p.dm"), Str::from("-4")));
    assert_eq!(s.sample(&mut manual, &ctx(), at(0)).reason, Reason::UserDrop);
}

#[test]
fn no_priority_chunks_use_the_no_priority_sampler() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    let mut c = chunk("web", 40, PRIORITY_NONE, false);
    let o = s.sample(&mut c, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.sampler, o.reason),
        (true, SamplerName::NoPriority, Reason::NoPriorityKeep)
    );
    assert_eq!(c.spans[0].metric(KEY_NO_PRIORITY_RATE), Some(1.0));
    assert_eq!(o.priority, None);
}

#[test]
fn priority_rate_metric_is_written_on_true_roots_without_a_rate() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    let mut c = chunk("web", 50, 1, false);
    s.sample(&mut c, &ctx(), at(0));
    assert_eq!(c.spans[0].metric(KEY_PRIORITY_RATE), Some(1.0));
    let mut c = chunk("web", 51, 1, false);
    c.spans[0].metrics.push((Str::from(KEY_AGENT_RATE), 0.5));
    s.sample(&mut c, &ctx(), at(0));
    assert_eq!(
        c.spans[0].metric(KEY_PRIORITY_RATE),
        None,
        "the tracer said which rate it applied"
    );
    let mut c = chunk("web", 52, 1, false);
    c.spans[0].parent_id = 99; // a chunk of a distributed trace: its root is not the trace's
    c.spans.truncate(1);
    s.sample(&mut c, &ctx(), at(0));
    assert_eq!(c.spans[0].metric(KEY_PRIORITY_RATE), None);
}

#[test]
fn probabilistic_mode_overrides_priority() {
    let all = config(|c| {
        c.sampler.probabilistic = ProbabilisticConfig {
            enabled: true,
            sampling_percentage: 100.0,
            hash_seed: 0,
        }
    });
    let mut s = Samplers::new(&crate::config::compile::samplers(&all));
    let mut c = chunk("web", 60, 0, false);
    let o = s.sample(&mut c, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.sampler, o.reason),
        (true, SamplerName::Probabilistic, Reason::ProbabilisticKeep)
    );
    assert_eq!(c.priority, 1);
    assert_eq!(tag_get(&c.tags, "_dd.p.dm").map(Str::as_str), Some("-9"));
    assert_eq!(c.spans[0].metric(KEY_PROB_RATE), Some(1.0));

    let none = config(|c| c.sampler.probabilistic.enabled = true);
    let mut s = Samplers::new(&crate::config::compile::samplers(&none));
    let mut c = chunk("web", 61, 2, false);
    let o = s.sample(&mut c, &ctx(), at(0));
    assert_eq!(
        (o.keep, o.reason),
        (false, Reason::ProbabilisticDrop),
        "even a user keep"
    );
    assert_eq!(c.priority, 0);
    let mut c = chunk("web", 62, 0, true);
    let o = s.sample(&mut c, &ctx(), at(0));
    assert_eq!((o.keep, o.reason), (true, Reason::ErrorsKeep));
    assert_eq!(c.priority, 1);
}

#[test]
fn error_tracking_standalone_keeps_only_errors() {
    let cfg = config(|c| c.sampler.error_tracking_standalone = true);
    let mut s = Samplers::new(&crate::config::compile::samplers(&cfg));
    let mut ok = with_ssp(chunk("web", 70, 2, false));
    let o = s.sample(&mut ok, &ctx(), at(0));
    assert_eq!((o.keep, o.reason), (false, Reason::NoError));
    assert!(!o.forward(), "no single-span sampling in ETS mode");
    let mut err = chunk("web", 71, 0, true);
    let o = s.sample(&mut err, &ctx(), at(0));
    assert_eq!((o.keep, o.reason), (true, Reason::ErrorsKeep));
    assert_eq!(
        tag_get(&err.tags, "_dd.error_tracking_standalone.error").map(Str::as_str),
        Some("true")
    );
    let mut event = chunk("web", 72, 0, false);
    event.spans[1]
        .meta
        .push((Str::from("_dd.span_events.has_exception"), Str::from("true")));
    assert!(s.sample(&mut event, &ctx(), at(0)).keep);
}

#[test]
fn rates_by_service_has_env_alias_and_default() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    for i in 0..500 {
        s.sample(&mut chunk("web", i, 1, false), &ctx(), at(0));
        s.sample(
            &mut chunk("api", i, 1, false),
            &ChunkContext::new("staging", 0, 1),
            at(0),
        );
    }
    assert!(s.take_rates_update().is_some(), "the first count opens a bucket");
    assert!(s.take_rates_update().is_none());
    s.sample(&mut chunk("web", 1, 1, false), &ctx(), at(5));
    let rates = s.take_rates_update().expect("new bucket");
    // Like the Go agent, publishing forgets catalog pairs whose signature had no rate yet
    // (here: all of them at the first bucket); a pair is back with its next chunk.
    assert!(!rates.contains_key("service:api,env:staging"));
    s.sample(
        &mut chunk("api", 1, 1, false),
        &ChunkContext::new("staging", 0, 1),
        at(5),
    );
    let rates = s.rates_by_service();
    // 2 signatures at 100 TPS each, target 10: 5 TPS each → 0.05.
    assert!((rates["service:web,env:prod"] - 0.05).abs() < 1e-9, "{rates:?}");
    assert_eq!(rates["service:web,env:"], rates["service:web,env:prod"]);
    assert!(
        rates
            .get("service:api,env:staging")
            .is_some_and(|r| (r - 0.05).abs() < 1e-9),
        "{rates:?}"
    );
    assert!(!rates.contains_key("service:api,env:"), "staging is not the agent env");
    assert!((rates[DEFAULT_RATE_KEY] - 0.05).abs() < 1e-9);
    assert_eq!(rates.len(), 4);
}

#[test]
fn the_catalog_is_capped() {
    let cfg = config(|c| c.sampler.max_catalog_entries = 3);
    let mut s = Samplers::new(&crate::config::compile::samplers(&cfg));
    for svc in 0..10 {
        s.sample(&mut chunk(&format!("svc{svc}"), 1, 1, false), &ctx(), at(0));
    }
    s.sample(&mut chunk("svc9", 1, 1, false), &ctx(), at(5));
    let rates = s.rates_by_service();
    let services = rates.keys().filter(|k| k.ends_with(",env:prod")).count();
    assert_eq!(services, 3, "{rates:?}");
    let st = s.stats();
    assert_eq!((st.catalog_entries, st.catalog_evicted), (3, 7));
}

#[test]
fn counters_add_up_and_keys_are_bounded() {
    let cfg = config(|c| c.sampler.rare.enabled = true);
    let mut s = Samplers::new(&crate::config::compile::samplers(&cfg));
    let mut seen = 0u64;
    let mut kept = 0u64;
    for i in 0..3000u64 {
        let priority = match i % 5 {
            0 => -1,
            1 | 2 => 0,
            3 => 1,
            _ => PRIORITY_NONE,
        };
        let svc = format!("svc{}", i % 1500);
        let mut c = chunk(&svc, i.wrapping_mul(0x9E37_79B9_7F4A_7C15), priority, i % 7 == 0);
        if i % 11 == 0 {
            c = with_ssp(c);
        }
        let o = s.sample(&mut c, &ctx(), at(i / 100));
        seen += 1;
        kept += u64::from(o.keep);
    }
    let mut empty = TraceChunk::from_spans(Vec::new());
    assert_eq!(s.sample(&mut empty, &ctx(), at(40)).reason, Reason::Empty);
    seen += 1;
    let st = s.stats();
    assert_eq!(st.chunks_seen, seen);
    assert_eq!(st.chunks_kept, kept);
    assert_eq!(st.chunks_seen, st.chunks_kept + st.chunks_dropped);
    assert_eq!(st.decisions.iter().map(|d| d.chunks).sum::<u64>(), st.chunks_seen);
    let kept_by_reason: u64 = st.decisions.iter().filter(|d| d.reason.keeps()).map(|d| d.chunks).sum();
    assert_eq!(kept_by_reason, st.chunks_kept);
    assert!(st.by_key.len() <= MAX_KEYS);
    assert!(st.other.seen > 0, "1500 services × samplers exceed the key cap");
    let key_seen: u64 = st.by_key.iter().map(|k| k.seen).sum::<u64>() + st.other.seen;
    let key_kept: u64 = st.by_key.iter().map(|k| k.kept).sum::<u64>() + st.other.kept;
    assert_eq!((key_seen, key_kept), (st.chunks_seen, st.chunks_kept));
    assert!(
        st.by_key
            .iter()
            .all(|k| k.priority.is_none() || k.sampler == SamplerName::Priority)
    );
    assert!(st.decided(SamplerName::Priority, Reason::UserDrop) > 0);
    assert!(st.rare.hits > 0);
    // The snapshot travels as JSON to `trace-agent status`.
    let json = serde_json::to_string(&st).expect("serializable");
    assert!(json.contains("\"reason\":\"user_drop\""), "{json}");
    let back: SamplerStats = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, st);
    let text = st.render();
    assert!(text.contains("priority       user_drop"), "{text}");
    assert!(text.contains("(other keys)"), "{text}");
}

#[test]
fn sample_payload_removes_dropped_chunks_and_spreads_client_drops() {
    let mut s = Samplers::new(&crate::config::compile::samplers(&config(|_| {})));
    let mut p = TracerPayload {
        env: Str::from("prod"),
        chunks: vec![
            chunk("web", 1, 1, false),
            chunk("web", 2, 0, false),
            with_ssp(chunk("web", 3, 0, false)),
        ],
        ..TracerPayload::default()
    };
    let r = s.sample_payload(&mut p, 297, at(0));
    assert_eq!(
        r,
        PayloadSampling {
            kept: 1,
            single_span: 1,
            removed: 1
        }
    );
    assert_eq!(p.chunks.len(), 2);
    // 3 chunks + 297 client-dropped P0s = 300 traces in the first 5 s = 60 TPS → rate 1/6.
    s.sample(&mut chunk("web", 4, 1, false), &ctx(), at(5));
    let rates = s.rates_by_service();
    assert!((rates["service:web,env:prod"] - 10.0 / 60.0).abs() < 1e-6, "{rates:?}");
}
