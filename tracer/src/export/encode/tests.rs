use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::buffer::TraceTags;
use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::{SpanId, Str, TraceId};

fn ctx() -> EncodeContext {
    EncodeContext {
        service: "web".into(),
        env: Some("prod".into()),
        version: Some("1.2".into()),
        global_tags: vec![("team".into(), "apm".into())],
        runtime_id: "rid".into(),
        process_id: 42.0,
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

    let mut p = V04Payload::new();
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
    let mut p = V04Payload::new();
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
    let traces = decode(&V04Payload::new().finish());
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
    let mut p = V04Payload::new();
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
