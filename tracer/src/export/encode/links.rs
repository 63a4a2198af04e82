//! Span links and span events on the wire: native msgpack fields (v0.4 `span_links`,
//! `span_events` when the agent takes them) or the JSON tags the Datadog tracers use
//! otherwise (`_dd.span_links` in v0.5, `events`).

use rmp::encode::{write_array_len, write_bool, write_f64, write_map_len, write_sint, write_str, write_uint};
use serde_json::{Map, Value, json};

use crate::span::{AttributeValue, SpanEvent, SpanLink};

/// `_dd.span_links`: `[{"trace_id": 32 hex, "span_id": 16 hex, "attributes", "tracestate", "flags"}]`.
pub(super) fn links_json(links: &[SpanLink]) -> String {
    let items: Vec<Value> = links
        .iter()
        .map(|l| {
            let mut o = Map::new();
            o.insert("trace_id".into(), Value::String(l.trace_id.to_hex()));
            o.insert("span_id".into(), Value::String(l.span_id.to_hex()));
            if !l.attributes.is_empty() {
                let attrs: Map<String, Value> = l
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                o.insert("attributes".into(), Value::Object(attrs));
            }
            if let Some(ts) = &l.tracestate {
                o.insert("tracestate".into(), Value::String(ts.clone()));
            }
            if let Some(f) = l.flags {
                o.insert("flags".into(), json!(f));
            }
            Value::Object(o)
        })
        .collect();
    Value::Array(items).to_string()
}

fn json_value(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::String(s) => Value::String(s.clone()),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Int(i) => json!(i),
        AttributeValue::Double(d) => json!(d),
        AttributeValue::Array(a) => Value::Array(a.iter().map(json_value).collect()),
    }
}

/// `events`: `[{"name", "time_unix_nano", "attributes": {key: value}}]`.
pub(super) fn events_json(events: &[SpanEvent]) -> String {
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut o = Map::new();
            o.insert("name".into(), Value::String(e.name.clone()));
            o.insert("time_unix_nano".into(), json!(e.time_unix_nano.max(0)));
            if !e.attributes.is_empty() {
                let attrs: Map<String, Value> = e.attributes.iter().map(|(k, v)| (k.clone(), json_value(v))).collect();
                o.insert("attributes".into(), Value::Object(attrs));
            }
            Value::Object(o)
        })
        .collect();
    Value::Array(items).to_string()
}

fn len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// v0.4 `span_links`: an array of maps with `trace_id` (low 64 bits), `trace_id_high`,
/// `span_id`, `attributes` (string map), `tracestate`, `flags`.
pub(super) fn write_links(buf: &mut Vec<u8>, links: &[SpanLink]) {
    let _ = write_str(buf, "span_links");
    let _ = write_array_len(buf, len(links.len()));
    for l in links {
        let high = l.trace_id.high();
        let fields = 2
            + u32::from(high != 0)
            + u32::from(!l.attributes.is_empty())
            + u32::from(l.tracestate.is_some())
            + u32::from(l.flags.is_some());
        let _ = write_map_len(buf, fields);
        let _ = write_str(buf, "trace_id");
        let _ = write_uint(buf, l.trace_id.low());
        if high != 0 {
            let _ = write_str(buf, "trace_id_high");
            let _ = write_uint(buf, high);
        }
        let _ = write_str(buf, "span_id");
        let _ = write_uint(buf, l.span_id.to_u64());
        if !l.attributes.is_empty() {
            let _ = write_str(buf, "attributes");
            let _ = write_map_len(buf, len(l.attributes.len()));
            for (k, v) in &l.attributes {
                let _ = write_str(buf, k);
                let _ = write_str(buf, v);
            }
        }
        if let Some(ts) = &l.tracestate {
            let _ = write_str(buf, "tracestate");
            let _ = write_str(buf, ts);
        }
        if let Some(f) = l.flags {
            let _ = write_str(buf, "flags");
            let _ = write_uint(buf, u64::from(f));
        }
    }
}

/// One typed attribute value (the Go agent's `AttributeAnyValue`): `{"type": 0..4,
/// "<kind>_value": v}`; arrays as `{"type": 4, "array_value": {"values": [...]}}`.
fn write_any(buf: &mut Vec<u8>, v: &AttributeValue) {
    let _ = write_map_len(buf, 2);
    let _ = write_str(buf, "type");
    match v {
        AttributeValue::String(s) => {
            let _ = write_uint(buf, 0);
            let _ = write_str(buf, "string_value");
            let _ = write_str(buf, s);
        }
        AttributeValue::Bool(b) => {
            let _ = write_uint(buf, 1);
            let _ = write_str(buf, "bool_value");
            let _ = write_bool(buf, *b);
        }
        AttributeValue::Int(i) => {
            let _ = write_uint(buf, 2);
            let _ = write_str(buf, "int_value");
            let _ = write_sint(buf, *i);
        }
        AttributeValue::Double(d) => {
            let _ = write_uint(buf, 3);
            let _ = write_str(buf, "double_value");
            let _ = write_f64(buf, *d);
        }
        AttributeValue::Array(items) => {
            let _ = write_uint(buf, 4);
            let _ = write_str(buf, "array_value");
            let _ = write_map_len(buf, 1);
            let _ = write_str(buf, "values");
            let _ = write_array_len(buf, len(items.len()));
            for item in items {
                // Array elements are scalars; a nested array becomes its string form.
                match item {
                    AttributeValue::Array(_) => write_any(buf, &AttributeValue::String(item.to_string_value())),
                    scalar => write_any(buf, scalar),
                }
            }
        }
    }
}

/// v0.4 `span_events`: an array of maps with `name`, `time_unix_nano`, `attributes`.
pub(super) fn write_events(buf: &mut Vec<u8>, events: &[SpanEvent]) {
    let _ = write_str(buf, "span_events");
    let _ = write_array_len(buf, len(events.len()));
    for e in events {
        let _ = write_map_len(buf, 2 + u32::from(!e.attributes.is_empty()));
        let _ = write_str(buf, "name");
        let _ = write_str(buf, &e.name);
        let _ = write_str(buf, "time_unix_nano");
        let _ = write_uint(buf, u64::try_from(e.time_unix_nano).unwrap_or(0));
        if !e.attributes.is_empty() {
            let _ = write_str(buf, "attributes");
            let _ = write_map_len(buf, len(e.attributes.len()));
            for (k, v) in &e.attributes {
                let _ = write_str(buf, k);
                write_any(buf, v);
            }
        }
    }
}
