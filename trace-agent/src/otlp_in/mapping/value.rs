//! Attribute values as Datadog writes them: the string form of any value (pdata
//! `AsString`), JSON for arrays and maps, and span events and links marshalled to the
//! `events` / `_dd.span_links` JSON tags.

use std::borrow::Cow;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

use super::hex;

/// The string form of an attribute value (pdata `AsString`: numbers in decimal, booleans as
/// `true`/`false`, arrays and maps as JSON, bytes in base64).
pub fn value_string(v: Option<&AnyValue>) -> Cow<'_, str> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Cow::Borrowed(""),
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        Some(any_value::Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => Cow::Owned(format_double(*d)),
        Some(any_value::Value::BytesValue(b)) => Cow::Owned(base64(b)),
        Some(other) => {
            let mut s = String::new();
            write_json(&mut s, Some(other));
            Cow::Owned(s)
        }
    }
}

fn format_double(d: f64) -> String {
    if d.is_finite() && d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{d:.0}")
    } else {
        d.to_string()
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Base64 (standard alphabet, padded) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let byte = |i: usize| u32::from(c.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            let sextet = ((n >> (18 - 6 * i)) & 63) as usize;
            match A.get(sextet) {
                Some(ch) if i <= c.len() => s.push(char::from(*ch)),
                _ => s.push('='),
            }
        }
    }
    s
}

fn write_json(out: &mut String, v: Option<&any_value::Value>) {
    match v {
        // A profiles dictionary index: meaningless in a trace.
        None | Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_str(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => {
            if d.is_finite() {
                out.push_str(&format_double(*d));
            } else {
                json_str(out, &d.to_string());
            }
        }
        Some(any_value::Value::BytesValue(b)) => json_str(out, &base64(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, v.value.as_ref());
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            out.push('{');
            for (i, kv) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, &kv.key);
                out.push(':');
                write_json(out, kv.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            out.push('}');
        }
    }
}

pub(super) fn marshal_events(span: &OtlpSpan) -> String {
    let mut s = String::from("[");
    for (i, e) in span.events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('{');
        let mut sep = "";
        if e.time_unix_nano != 0 {
            let _ = write!(s, "\"time_unix_nano\":{}", e.time_unix_nano);
            sep = ",";
        }
        if !e.name.is_empty() {
            s.push_str(sep);
            s.push_str("\"name\":");
            json_str(&mut s, &e.name);
            sep = ",";
        }
        if !e.attributes.is_empty() {
            s.push_str(sep);
            s.push_str("\"attributes\":{");
            for (j, kv) in e.attributes.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                json_str(&mut s, &kv.key);
                s.push(':');
                write_json(&mut s, kv.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            s.push('}');
            sep = ",";
        }
        if e.dropped_attributes_count != 0 {
            s.push_str(sep);
            let _ = write!(s, "\"dropped_attributes_count\":{}", e.dropped_attributes_count);
        }
        s.push('}');
    }
    s.push(']');
    s
}

pub(super) fn marshal_links(span: &OtlpSpan) -> String {
    let mut s = String::from("[");
    for (i, l) in span.links.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"trace_id\":\"{}\",\"span_id\":\"{}\"",
            hex(&l.trace_id),
            hex(&l.span_id)
        );
        if !l.trace_state.is_empty() {
            s.push_str(",\"tracestate\":");
            json_str(&mut s, &l.trace_state);
        }
        if !l.attributes.is_empty() {
            s.push_str(",\"attributes\":{");
            for (j, kv) in l.attributes.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                json_str(&mut s, &kv.key);
                s.push(':');
                json_str(&mut s, &value_string(kv.value.as_ref()));
            }
            s.push('}');
        }
        if l.dropped_attributes_count > 0 {
            let _ = write!(s, ",\"dropped_attributes_count\":{}", l.dropped_attributes_count);
        }
        s.push('}');
    }
    s.push(']');
    s
}
