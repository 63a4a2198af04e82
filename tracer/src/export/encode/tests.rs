use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::TraceTags;
use crate::span::{SpanId, Str, TraceId};

fn ctx() -> EncodeContext {
    EncodeContext {
        service: "web".into(),
        env: Some("prod".into()),
        version: Some("1.2".into()),
        global_tags: vec![("team".into(), "apm".into())],
        runtime_id: "rid".into(),
        process_id: 42.0,
        native_span_events: false,
    }
}

fn decode(body: &[u8]) -> Vec<Vec<HashMap<String, Value>>> {
    rmp_serde::from_slice(body).unwrap_or_default()
}

#[test]
fn payload_round_trips_with_standard_tags() {
    let tid = TraceId::from_parts(0x6b01_eedd_0000_0000, 7);
    let mut root = SpanData::new(tid, SpanId::from_u64(1), SpanId::from_u64(0), Str::from("http.request"));
    root.top_level = true;
    root.local_root = true;
    root.measured = true;
    root.resource = Some(Str::from("GET /"));
    root.span_type = Some(Str::from("web"));
    root.start = 1_700_000_000_000_000_000;
    root.duration = 1500;
    root.set_meta(Str::from("http.method"), Str::from("GET"));
    root.set_meta(Str::from("env"), Str::from("override"));
    let mut child = SpanData::new(tid, SpanId::from_u64(2), SpanId::from_u64(1), Str::from("db.query"));
    child.service = Some(Str::from("db"));
    child.error = true;
    child.set_metric(Str::from("rows"), 3.0);

    let mut p = Payload::new(Format::V04);
    let tags = TraceTags {
        origin: Some(Str::from("synthetics")),
        propagated: vec![(Str::from("_dd.p.usr.id"), Str::from("u"))],
    };
    let decision = SamplingDecision {
        agent_rate: Some(1.0),
        ..SamplingDecision::new(1, Mechanism::Default)
    };
    p.push_chunk(
        &[Box::new(root), Box::new(child)],
        ChunkHeader {
            decision,
            tags: Some(&tags),
        },
        &ctx(),
    );
    assert_eq!((p.traces(), p.spans()), (1, 2));
    let traces = decode(&p.finish());
    assert_eq!(traces.len(), 1);
    let (r, c) = (&traces[0][0], &traces[0][1]);
    assert_eq!(r["trace_id"], 7);
    assert_eq!(r["span_id"], 1);
    assert_eq!(r["parent_id"], 0);
    assert_eq!(r["service"], "web");
    assert_eq!(r["resource"], "GET /");
    assert_eq!(r["type"], "web");
    assert_eq!(r["duration"], 1500);
    assert_eq!(r["error"], 0);
    let meta = &r["meta"];
    assert_eq!(meta["env"], "override", "the span's own tag wins");
    assert_eq!(meta["version"], "1.2");
    assert_eq!(meta["team"], "apm");
    assert_eq!(meta["language"], "rust");
    assert_eq!(meta["runtime-id"], "rid");
    assert_eq!(meta["_dd.p.dm"], "-0");
    assert_eq!(meta["_dd.p.tid"], "6b01eedd00000000");
    assert_eq!(meta["_dd.origin"], "synthetics");
    assert_eq!(meta["_dd.p.usr.id"], "u");
    let metrics = &r["metrics"];
    assert_eq!(metrics["_dd.top_level"], 1.0);
    assert_eq!(metrics["_dd.measured"], 1.0);
    assert_eq!(metrics["_sampling_priority_v1"], 1.0);
    assert_eq!(metrics["_dd.agent_psr"], 1.0);
    assert_eq!(metrics["process_id"], 42.0);

    assert_eq!(c["service"], "db");
    assert_eq!(c["resource"], "db.query");
    assert_eq!(c["error"], 1);
    assert_eq!(c["meta"]["env"], "prod");
    assert!(c["meta"].get("version").is_none(), "version only on the main service");
    assert!(
        c["meta"].get("_dd.p.tid").is_none(),
        "chunk tags only on the first span"
    );
    assert_eq!(c["metrics"]["rows"], 3.0);
    assert!(c["metrics"].get("_sampling_priority_v1").is_none());
}

#[test]
fn dropped_trace_has_no_decision_maker_and_header_counts_traces() {
    let mut p = Payload::new(Format::V04);
    let d = SamplingDecision::new(0, Mechanism::AgentRate);
    for i in 1..=20u64 {
        let s = SpanData::new(
            TraceId::from_u128(u128::from(i)),
            SpanId::from_u64(i),
            SpanId::from_u64(0),
            Str::from("op"),
        );
        p.push_chunk(
            &[Box::new(s)],
            ChunkHeader {
                decision: d,
                tags: None,
            },
            &ctx(),
        );
    }
    let body = p.finish();
    assert_eq!(body[0], 0xdd);
    let traces = decode(&body);
    assert_eq!(traces.len(), 20);
    assert!(traces[0][0]["meta"].get("_dd.p.dm").is_none());
    assert_eq!(traces[0][0]["metrics"]["_sampling_priority_v1"], 0.0);
}

#[test]
fn empty_payload_is_an_empty_array() {
    let traces = decode(&Payload::new(Format::V04).finish());
    assert!(traces.is_empty());
}

#[test]
fn repeated_keys_keep_the_last_value() {
    let mut s = SpanData::new(
        TraceId::from_u128(1),
        SpanId::from_u64(1),
        SpanId::from_u64(0),
        Str::from("op"),
    );
    s.push_meta(Str::from("k"), Str::from("first"));
    s.push_meta(Str::from("other"), Str::from("x"));
    s.push_meta(Str::from("k"), Str::from("last"));
    s.push_metric(Str::from("m"), 1.0);
    s.push_metric(Str::from("m"), 2.0);
    let mut p = Payload::new(Format::V04);
    p.push_chunk(
        &[Box::new(s)],
        ChunkHeader {
            decision: SamplingDecision::new(1, Mechanism::Default),
            tags: None,
        },
        &ctx(),
    );
    let body = p.finish();
    assert!(
        !body.windows(5).any(|w| w == b"first"),
        "the overwritten value is not encoded"
    );
    let traces = decode(&body);
    let span = &traces[0][0];
    assert_eq!(span["meta"]["k"], "last");
    assert_eq!(span["meta"]["other"], "x");
    assert_eq!(span["metrics"]["m"], 2.0);
}

type V05Span = (
    u32,
    u32,
    u32,
    u64,
    u64,
    u64,
    i64,
    i64,
    i32,
    HashMap<u32, u32>,
    HashMap<u32, f64>,
    u32,
);

/// Decodes a v0.5 payload into the same shape as a v0.4 one, resolving the string table.
fn decode_v05(body: &[u8]) -> Vec<Vec<HashMap<String, Value>>> {
    let (table, traces): (Vec<String>, Vec<Vec<V05Span>>) = rmp_serde::from_slice(body).expect("v0.5 payload");
    assert_eq!(
        table.first().map(String::as_str),
        Some(""),
        "index 0 is the empty string"
    );
    let s = |i: u32| Value::from(table[i as usize].clone());
    traces
        .into_iter()
        .map(|t| {
            t.into_iter()
                .map(
                    |(
                        service,
                        name,
                        resource,
                        trace_id,
                        span_id,
                        parent_id,
                        start,
                        duration,
                        error,
                        meta,
                        metrics,
                        ty,
                    )| {
                        let meta: serde_json::Map<String, Value> = meta
                            .into_iter()
                            .map(|(k, v)| (table[k as usize].clone(), s(v)))
                            .collect();
                        let metrics: serde_json::Map<String, Value> = metrics
                            .into_iter()
                            .map(|(k, v)| (table[k as usize].clone(), Value::from(v)))
                            .collect();
                        HashMap::from([
                            ("service".to_owned(), s(service)),
                            ("name".to_owned(), s(name)),
                            ("resource".to_owned(), s(resource)),
                            ("trace_id".to_owned(), Value::from(trace_id)),
                            ("span_id".to_owned(), Value::from(span_id)),
                            ("parent_id".to_owned(), Value::from(parent_id)),
                            ("start".to_owned(), Value::from(start)),
                            ("duration".to_owned(), Value::from(duration)),
                            ("error".to_owned(), Value::from(error)),
                            ("meta".to_owned(), Value::Object(meta)),
                            ("metrics".to_owned(), Value::Object(metrics)),
                            ("type".to_owned(), s(ty)),
                        ])
                    },
                )
                .collect()
        })
        .collect()
}

fn sample_chunk(i: u64) -> Vec<SpanBox> {
    let tid = TraceId::from_parts(0x6b01_eedd_0000_0000, i);
    let mut root = SpanData::new(
        tid,
        SpanId::from_u64(i * 10),
        SpanId::from_u64(0),
        Str::from("http.request"),
    );
    root.top_level = true;
    root.resource = Some(Str::from(format!("GET /item/{}", i % 3)));
    root.span_type = Some(Str::from("web"));
    root.start = 1_700_000_000_000_000_000 + i as i64;
    root.duration = 1000 + i as i64;
    root.push_meta(Str::from("http.method"), Str::from("GET"));
    root.push_metric(Str::from("rows"), i as f64);
    let mut child = SpanData::new(
        tid,
        SpanId::from_u64(i * 10 + 1),
        SpanId::from_u64(i * 10),
        Str::from("db"),
    );
    child.service = Some(Str::from("postgres"));
    child.error = i % 2 == 0;
    vec![Box::new(root), Box::new(child)]
}

#[test]
fn v05_carries_exactly_what_v04_does_with_each_string_once() {
    let header = ChunkHeader {
        decision: SamplingDecision::new(1, Mechanism::Default),
        tags: None,
    };
    let (mut v04, mut v05) = (Payload::new(Format::V04), Payload::new(Format::V05));
    for i in 0..50 {
        v04.push_chunk(&sample_chunk(i), header, &ctx());
        v05.push_chunk(&sample_chunk(i), header, &ctx());
    }
    assert_eq!((v05.traces(), v05.spans()), (50, 100));
    let (b04, b05) = (v04.finish(), v05.finish());
    assert_eq!(decode(&b04), decode_v05(&b05));
    assert!(
        b05.len() * 2 < b04.len(),
        "v0.5 {} bytes vs v0.4 {}",
        b05.len(),
        b04.len()
    );
    let service_copies = b05.windows(8).filter(|w| w == b"postgres").count();
    assert_eq!(service_copies, 1, "each string once in the table");
}

#[test]
fn empty_v05_payload_is_a_table_with_the_empty_string() {
    assert_eq!(Payload::new(Format::V05).finish(), [0x92, 0x91, 0xa0, 0xdd, 0, 0, 0, 0]);
}

#[test]
fn reserved_keys_are_recognised_and_others_are_not() {
    let meta = [
        "env",
        "version",
        "language",
        "runtime-id",
        "_dd.p.dm",
        "_dd.p.tid",
        "_dd.origin",
        "_dd.span_links",
        "events",
        "_dd.span_events.has_exception",
    ];
    let bits: Vec<u16> = meta.iter().map(|k| super::reserved::meta_bit(k)).collect();
    assert!(bits.iter().all(|b| b.count_ones() == 1), "{bits:?}");
    assert_eq!(bits.iter().fold(0, |a, b| a | b).count_ones() as usize, meta.len());
    let metrics = [
        "_dd.top_level",
        "_dd.measured",
        "process_id",
        "_sampling_priority_v1",
        "_dd.agent_psr",
        "_dd.rule_psr",
        "_dd.limit_psr",
    ];
    let bits: Vec<u8> = metrics.iter().map(|k| super::reserved::metric_bit(k)).collect();
    assert_eq!(bits.iter().fold(0, |a, b| a | b).count_ones() as usize, metrics.len());
    for other in [
        "http.method",
        "span.kind",
        "component",
        "environment",
        "",
        "_dd.other",
        "db.system",
    ] {
        assert_eq!(super::reserved::meta_bit(other), 0, "{other}");
        assert_eq!(super::reserved::metric_bit(other), 0, "{other}");
    }
}

#[test]
fn a_payload_in_recycled_buffers_encodes_as_a_fresh_one() {
    let header = ChunkHeader {
        decision: SamplingDecision::new(1, Mechanism::Default),
        tags: None,
    };
    let fill = |p: &mut Payload, from: u64| {
        for i in from..from + 20 {
            p.push_chunk(&sample_chunk(i), header, &ctx());
        }
    };
    for format in [Format::V04, Format::V05] {
        let mut first = Payload::new(format);
        fill(&mut first, 0);
        let (_, spare) = first.finish_recycling();
        assert_eq!(spare.is_some(), format == Format::V05, "v0.5 gives its buffers back");
        let mut reused = match spare {
            Some(s) => Payload::reusing(format, s),
            None => Payload::new(format),
        };
        let mut fresh = Payload::new(format);
        fill(&mut reused, 100);
        fill(&mut fresh, 100);
        assert_eq!((reused.traces(), reused.spans()), (20, 40));
        assert_eq!(reused.finish(), fresh.finish(), "{format:?}");
    }
}

/// Decoded traces: each span a map of its fields.
type Traces = Vec<Vec<HashMap<String, Value>>>;

/// `chunks` encoded one after the other in one payload, and each alone in a fresh one:
/// the traces decoded from both (a payload's memos must not change what a span says).
fn together_and_alone(format: Format, chunks: &[(Vec<SpanData>, ChunkHeader<'_>)]) -> (Traces, Traces) {
    let dec = |body: &[u8]| match format {
        Format::V04 => decode(body),
        Format::V05 => decode_v05(body),
    };
    let mut together = Payload::new(format);
    let mut alone = Vec::new();
    for (spans, header) in chunks {
        let boxes = || spans.iter().cloned().map(Box::new).collect::<Vec<_>>();
        together.push_chunk(&boxes(), *header, &ctx());
        let mut p = Payload::new(format);
        p.push_chunk(&boxes(), *header, &ctx());
        alone.extend(dec(&p.finish()));
    }
    (dec(&together.finish()), alone)
}

#[test]
fn spans_sharing_literal_tags_encode_as_each_would_alone() {
    // Shapes that share a memo slot or not, literal and owned values, a repeated key, a
    // reserved key set by the span: each span, encoded after the others in one payload,
    // must decode as it does alone in a fresh payload.
    let spans = |i: u64| -> Vec<SpanData> {
        let span = |tags: &[(Str, Str)], top: bool| {
            let mut s = SpanData::new(
                TraceId::from_u128(u128::from(i) + 1),
                SpanId::from_u64(i + 1),
                SpanId::from_u64(0),
                Str::from("op"),
            );
            s.top_level = top;
            s.local_root = top;
            for (k, v) in tags {
                s.push_meta(k.clone(), v.clone());
            }
            s
        };
        let (k, v) = (Str::from("http.method"), Str::from("GET"));
        vec![
            span(
                &[(k.clone(), v.clone()), (Str::from("component"), Str::from("axum"))],
                true,
            ),
            span(
                &[(k.clone(), v.clone()), (Str::from("component"), Str::from("axum"))],
                false,
            ),
            span(
                &[
                    (k.clone(), Str::from(format!("GET{i}"))),
                    (Str::from("component"), Str::from("axum")),
                ],
                true,
            ),
            span(&[(k.clone(), v.clone()), (k.clone(), Str::from("POST"))], true),
            span(&[(k.clone(), v.clone()), (k.clone(), Str::from("POST"))], true),
            span(&[(k.clone(), v.clone()), (Str::from("env"), Str::from("mine"))], true),
            span(&[(k.clone(), v.clone()), (Str::from("env"), Str::from("mine"))], true),
            span(&[(Str::from("env"), Str::from("mine"))], true),
            span(&[(k.clone(), v.clone())], true),
            span(&[], true),
            span(
                &[(k.clone(), v.clone()), (Str::from("component"), Str::from("axum"))],
                true,
            ),
        ]
    };
    let header = ChunkHeader {
        decision: SamplingDecision::new(1, Mechanism::Default),
        tags: None,
    };
    let chunks: Vec<_> = (0..3).flat_map(spans).map(|s| (vec![s], header)).collect();
    for format in [Format::V04, Format::V05] {
        let (together, alone) = together_and_alone(format, &chunks);
        assert_eq!(together, alone, "{format:?}");
        let meta = |i: usize, k: &str| together[i][0]["meta"][k].clone();
        assert_eq!(meta(3, "http.method"), "POST", "the last value of a repeated key");
        assert_eq!(meta(5, "env"), "mine", "the span's own env");
        assert_eq!(meta(6, "env"), "mine", "the span's own env, from the memo");
        assert_eq!(meta(4, "http.method"), "POST", "from the memo");
        assert_eq!(meta(10, "env"), "prod", "the tracer's env again");
        assert_eq!(meta(11 + 2, "http.method"), "GET1", "an owned value");
    }
}

#[test]
fn changing_decisions_and_heads_encode_as_each_would_alone() {
    // Decisions that change from chunk to chunk (priority, mechanism, none kept), and
    // spans of one name with other services and resources, literal or owned.
    let decisions = [
        SamplingDecision::new(1, Mechanism::Default),
        SamplingDecision::new(2, Mechanism::Manual),
        SamplingDecision::new(0, Mechanism::AgentRate),
        SamplingDecision::new(1, Mechanism::AgentRate),
        SamplingDecision::new(-1, Mechanism::Manual),
        SamplingDecision::new(1, Mechanism::Default),
    ];
    let chunk = |i: usize| -> Vec<SpanData> {
        let span = |id: u64, service: Option<Str>, resource: Option<Str>| {
            let mut s = SpanData::new(
                // High bits that change every third chunk, and none every fifth.
                TraceId::from_parts(
                    if i % 5 == 0 {
                        0
                    } else {
                        0x6b01_0000_0000_0000 + i as u64 / 3
                    },
                    i as u64 + 1,
                ),
                SpanId::from_u64(id),
                SpanId::from_u64(if id == 1 { 0 } else { 1 }),
                Str::from("op"),
            );
            s.top_level = id == 1;
            s.local_root = id == 1;
            s.service = service;
            s.resource = resource;
            s.push_meta(Str::from("component"), Str::from("axum"));
            s.span_type = match i % 3 {
                0 => None,
                1 => Some(Str::from("web")),
                _ => Some(Str::from(String::from("sql"))),
            };
            s
        };
        match i % 4 {
            0 => vec![span(1, None, None), span(2, None, None)],
            1 => vec![span(1, Some(Str::from("other")), Some(Str::from("GET /")))],
            2 => vec![span(1, None, Some(Str::from(format!("GET /{i}")))), span(2, None, None)],
            // Owned, and shared strings made anew for each chunk (an address freed by one
            // may be taken by the next).
            _ if i % 8 == 3 => vec![span(1, Some(Str::from(String::from("owned"))), None)],
            _ => vec![span(
                1,
                Some(Str::from(format!("shared{i}")).into_shared()),
                Some(Str::from(format!("GET /{i}")).into_shared()),
            )],
        }
    };
    let chunks: Vec<_> = (0..24)
        .map(|i| {
            let header = ChunkHeader {
                decision: decisions[i % decisions.len()],
                tags: None,
            };
            (chunk(i), header)
        })
        .collect();
    for format in [Format::V04, Format::V05] {
        let (together, alone) = together_and_alone(format, &chunks);
        assert_eq!(together, alone, "{format:?}");
        let root = |i: usize| &together[i][0];
        assert_eq!(root(1)["meta"]["_dd.p.dm"], "-4");
        assert_eq!(root(1)["metrics"]["_sampling_priority_v1"], 2.0);
        assert!(root(2)["meta"].get("_dd.p.dm").is_none(), "not kept: no decision maker");
        assert_eq!(root(3)["meta"]["_dd.p.dm"], "-1");
        assert_eq!(root(4)["metrics"]["_sampling_priority_v1"], -1.0);
        assert_eq!(
            (root(5)["service"].clone(), root(5)["resource"].clone()),
            ("other".into(), "GET /".into())
        );
        assert_eq!(
            (root(8)["service"].clone(), root(8)["resource"].clone()),
            ("web".into(), "op".into())
        );
        assert_eq!(root(3)["service"], "owned");
        assert_eq!(
            (root(7)["service"].clone(), root(7)["resource"].clone()),
            ("shared7".into(), "GET /7".into())
        );
        assert_eq!(root(15)["service"], "shared15");
        assert!(root(5)["meta"].get("_dd.p.tid").is_none(), "no high bits");
        assert_eq!(
            (root(3)["type"].clone(), root(4)["type"].clone()),
            ("".into(), "web".into())
        );
        assert_eq!(root(8)["type"], "sql");
        assert_eq!(root(6)["meta"]["_dd.p.tid"], "6b01000000000002");
        assert_eq!(root(9)["meta"]["_dd.p.tid"], "6b01000000000003");
    }
}
