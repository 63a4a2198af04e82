//! Decoder tests from the real ddtrace payloads captured in testdata/ddtrace-captures: every
//! captured `/v0.4/traces` and `/v0.5/traces` body decodes to exactly what the recorder decoded.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use trace_agent::decode::captures::{dir as captures, trace_bodies};
use trace_agent::decode::{ApiVersion, Encoding, decode_payload};
use trace_agent::span::Span;

/// `(version, body, expected traces as JSON)` for every capture with a decoded twin.
fn captured_payloads() -> Vec<(PathBuf, ApiVersion, Bytes, Vec<Value>)> {
    let mut out = Vec::new();
    for (p, version) in trace_bodies() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let decoded = p.with_file_name(name.replace(".body.bin", ".decoded.json"));
        let Ok(text) = std::fs::read_to_string(&decoded) else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        let traces = match v {
            Value::Array(a) => a,
            Value::Object(mut o) => match o.remove("expanded_traces") {
                Some(Value::Array(a)) => a,
                _ => continue,
            },
            _ => continue,
        };
        out.push((p.clone(), version, Bytes::from(std::fs::read(&p).unwrap()), traces));
    }
    out
}

fn span_json(s: &Span<'_>) -> Value {
    let meta: Map<String, Value> = s
        .meta
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_string())))
        .collect();
    let metrics: Map<String, Value> = s.metrics.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "service": s.service.to_string(), "name": s.name.to_string(), "resource": s.resource.to_string(),
        "trace_id": s.trace_id, "span_id": s.span_id, "parent_id": s.parent_id, "start": s.start,
        "duration": s.duration, "error": s.error, "type": s.r#type.to_string(),
        "meta": meta, "metrics": metrics,
    })
}

/// The recorder's JSON with ddtrace's omitted fields defaulted, as our decoder must produce.
fn expected_span(v: &Value) -> Value {
    let mut o = v.as_object().unwrap().clone();
    for (k, d) in [
        ("parent_id", json!(0)),
        ("error", json!(0)),
        ("type", json!("")),
        ("meta", json!({})),
        ("metrics", json!({})),
    ] {
        o.entry(k).or_insert(d);
    }
    if let Some(Value::Object(m)) = o.get_mut("metrics") {
        for v in m.values_mut() {
            *v = json!(v.as_f64().unwrap());
        }
    }
    o.retain(|k, _| !matches!(k.as_str(), "meta_struct" | "span_links" | "span_events"));
    Value::Object(o)
}

#[test]
fn captured_ddtrace_payloads_decode_exactly() {
    let payloads = captured_payloads();
    assert!(payloads.iter().any(|p| p.1 == ApiVersion::V04), "no v0.4 capture found");
    assert!(payloads.iter().any(|p| p.1 == ApiVersion::V05), "no v0.5 capture found");
    for (path, version, body, traces) in payloads {
        let payload =
            decode_payload(version, Encoding::Msgpack, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(payload.chunks.len(), traces.len(), "{}", path.display());
        for (chunk, trace) in payload.chunks.iter().zip(&traces) {
            let want = trace.as_array().unwrap();
            assert_eq!(chunk.spans.len(), want.len());
            for (got, want) in chunk.spans.iter().zip(want) {
                assert_eq!(span_json(got), expected_span(want), "{}", path.display());
            }
        }
    }
}

#[test]
fn flask_demo_capture_has_the_documented_shape() {
    let body =
        Bytes::from(std::fs::read(captures().join("C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin")).unwrap());
    let p = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body).unwrap();
    let spans: Vec<usize> = p.chunks.iter().map(|c| c.spans.len()).collect();
    assert_eq!(spans, [9, 9, 9, 11], "4 requests, the 4th is /api/error");
    let root = &p.chunks[0].spans[0];
    assert_eq!(root.parent_id, 0, "omitted parent_id defaults to 0");
    assert_eq!(&*root.r#type, "web");
    assert_eq!(root.meta("http.status_code"), Some("200"));
    assert!(
        root.service.is_borrowed() && root.meta.iter().all(|(k, v)| k.is_borrowed() && v.is_borrowed()),
        "strings are views into the body, not copies"
    );
    let child = &p.chunks[0].spans[1];
    assert_eq!(&*child.r#type, "", "omitted type defaults to empty");
    assert!(child.metrics.is_empty(), "omitted metrics default to empty");
}

#[test]
fn v05_and_v04_captures_give_the_same_span_counts() {
    let v05 =
        Bytes::from(std::fs::read(captures().join("A_recorder_default/agent/0007_POST_v0.5_traces.body.bin")).unwrap());
    let p = decode_payload(ApiVersion::V05, Encoding::Msgpack, &v05).unwrap();
    assert_eq!(p.chunks.len(), 8);
    assert_eq!(p.span_count(), 76);
}

#[test]
fn empty_v05_payload_with_p0_counts_decodes_to_no_chunks() {
    // ddtrace sends `[[""],[]]` just to carry Datadog-Client-Dropped-P0-* headers.
    let p = decode_payload(ApiVersion::V05, Encoding::Msgpack, &[0x92, 0x91, 0xa0, 0x90]).unwrap();
    assert!(p.chunks.is_empty());
}
