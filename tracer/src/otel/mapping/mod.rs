//! OpenTelemetry → Datadog span mapping (the rules of the Datadog agent's OTLP receiver,
//! "v2" operation and resource names), as pure functions over a span's data.
//!
//! Attributes are recorded into the span as they arrive (strings, booleans and arrays to
//! `meta`, integers and floats to `metrics`; a few keys set span fields instead), and the
//! names are derived when the span ends, from its kind and final attributes.

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};

use crate::Str;
use crate::span::SpanData;
use crate::span::intern::lookup as lookup_interned;

mod names;

use names::{Attrs, kind_str, operation_name, resource, span_type};

/// What the mapping needs beyond the span's data, collected while the span is open.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// `operation.name` / `datadog.name`: the operation name, as given.
    pub(crate) op_name: Option<Str>,
    /// `datadog.error`: overrides the status.
    pub(crate) dd_error: Option<bool>,
    /// From the last `exception` event (or `record_error`).
    pub(crate) exception: Exception,
}

/// `exception.*` attributes of an `exception` event.
#[derive(Debug, Default)]
pub(crate) struct Exception {
    pub(crate) message: Option<Str>,
    pub(crate) kind: Option<Str>,
    pub(crate) stack: Option<Str>,
}

/// Keys written often enough to keep as static strings (no allocation per span).
const KNOWN_KEYS: &[&str] = &[
    "http.method",
    "http.request.method",
    "http.route",
    "http.url",
    "url.full",
    "url.path",
    "url.scheme",
    "url.query",
    "http.target",
    "http.scheme",
    "http.host",
    "http.status_code",
    "http.response.status_code",
    "http.user_agent",
    "user_agent.original",
    "server.address",
    "server.port",
    "client.address",
    "network.peer.address",
    "network.peer.port",
    "network.protocol.name",
    "network.protocol.version",
    "db.system",
    "db.system.name",
    "db.name",
    "db.namespace",
    "db.statement",
    "db.query.text",
    "db.operation",
    "db.operation.name",
    "db.collection.name",
    "messaging.system",
    "messaging.operation",
    "messaging.operation.type",
    "messaging.destination",
    "messaging.destination.name",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "graphql.operation.type",
    "graphql.operation.name",
    "peer.service",
    "span.kind",
    "component",
    "thread.id",
    "thread.name",
    "code.function",
    "code.namespace",
    "code.filepath",
    "code.lineno",
    "code.file.path",
    "code.line.number",
    "error.type",
    "error.message",
    "error.stack",
    "exception.message",
    "exception.type",
    "exception.stacktrace",
    "user.id",
    "enduser.id",
];

/// Slots of [`known_key`]'s table (a power of two, over twice the known keys).
const KNOWN_SLOTS: usize = 256;

/// `key` as one of [`KNOWN_KEYS`]: a hash and usually one comparison (an open-addressing
/// table built once), instead of comparing against each known key.
fn known_key(key: &str) -> Option<&'static str> {
    static TABLE: std::sync::OnceLock<Vec<Option<&'static str>>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![None; KNOWN_SLOTS];
        for k in KNOWN_KEYS {
            let mut i = crate::span::intern::hash(k) as usize % KNOWN_SLOTS;
            while let Some(Some(_)) = t.get(i) {
                i = (i + 1) % KNOWN_SLOTS;
            }
            if let Some(slot) = t.get_mut(i) {
                *slot = Some(*k);
            }
        }
        t
    });
    let mut i = crate::span::intern::hash(key) as usize % KNOWN_SLOTS;
    loop {
        match table.get(i).copied().flatten() {
            None => return None,
            Some(k) if k == key => return Some(k),
            Some(_) => i = (i + 1) % KNOWN_SLOTS,
        }
    }
}

/// A key as a span string, static for [`KNOWN_KEYS`].
pub(crate) fn key_str(key: Key) -> Str {
    match known_key(key.as_str()) {
        Some(k) => Str::from_static(k),
        None => lookup_interned(key.as_str()).unwrap_or_else(|| Str::from(String::from(key))),
    }
}

fn value_str(value: Value) -> Str {
    match value {
        Value::String(s) => lookup_interned(s.as_str()).unwrap_or_else(|| Str::from(String::from(s))),
        Value::Bool(b) => Str::from_static(if b { "true" } else { "false" }),
        other => Str::from(other.to_string()),
    }
}

fn value_flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::I64(i) => Some(*i != 0),
        Value::F64(f) => Some(*f != 0.0),
        Value::String(s) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Array(_) => None,
        _ => None,
    }
}

/// Records one attribute into the span. `replace`: a key set again replaces its value
/// (`set_attribute`); at start (`SpanBuilder` attributes) keys are appended.
pub(crate) fn apply_attribute(data: &mut SpanData, pending: &mut Pending, kv: KeyValue, replace: bool) {
    let KeyValue { key, value, .. } = kv;
    let meta = |data: &mut SpanData, k: Str, v: Str| {
        if replace {
            data.set_meta(k, v);
        } else {
            data.push_meta(k, v);
        }
    };
    // Most keys (`http.*`, `db.*`, `url.*`, `component`, …) cannot be special: skip the
    // comparisons below by their first byte.
    if !matches!(
        key.as_str().as_bytes().first(),
        Some(b'o' | b'r' | b's' | b'd' | b'_' | b'a')
    ) {
        match value {
            Value::I64(i) => metric(data, key_str(key), i as f64, replace),
            Value::F64(f) => metric(data, key_str(key), f, replace),
            other => meta(data, key_str(key), value_str(other)),
        }
        return;
    }
    match key.as_str() {
        "operation.name" | "datadog.name" => pending.op_name = Some(value_str(value)),
        "resource.name" | "datadog.resource" => data.resource = Some(value_str(value)),
        "span.type" | "datadog.type" => data.span_type = Some(value_str(value)),
        "service.name" | "datadog.service" => data.service = Some(value_str(value).into_shared()),
        "datadog.span.kind" => data.set_meta(Str::from_static("span.kind"), value_str(value)),
        "datadog.error" => pending.dd_error = value_flag(&value),
        "datadog.error.msg" => data.set_meta(Str::from_static("error.message"), value_str(value)),
        "datadog.error.type" => data.set_meta(Str::from_static("error.type"), value_str(value)),
        "datadog.error.stack" => data.set_meta(Str::from_static("error.stack"), value_str(value)),
        "datadog.http_status_code" => data.set_meta(Str::from_static("http.status_code"), value_str(value)),
        "datadog.env" => data.set_meta(Str::from_static("env"), value_str(value)),
        "datadog.version" => data.set_meta(Str::from_static("version"), value_str(value)),
        "_dd.measured" => data.measured = value_flag(&value).unwrap_or(false),
        "analytics.event" => {}
        k if k.starts_with("datadog.") => {}
        _ => match value {
            Value::I64(i) => metric(data, key_str(key), i as f64, replace),
            Value::F64(f) => metric(data, key_str(key), f, replace),
            other => meta(data, key_str(key), value_str(other)),
        },
    }
}

fn metric(data: &mut SpanData, key: Str, value: f64, replace: bool) {
    if replace {
        data.set_metric(key, value);
    } else {
        data.push_metric(key, value);
    }
}

/// Records the attributes of an `exception` event.
pub(crate) fn exception_event(pending: &mut Pending, attributes: Vec<KeyValue>) {
    let mut e = Exception::default();
    for KeyValue { key, value, .. } in attributes {
        match key.as_str() {
            "exception.message" => e.message = Some(value_str(value)),
            "exception.type" => e.kind = Some(value_str(value)),
            "exception.stacktrace" => e.stack = Some(value_str(value)),
            _ => {}
        }
    }
    pending.exception = e;
}

/// Derives the Datadog fields when the span ends.
pub(crate) fn finish(data: &mut SpanData, kind: &SpanKind, status: &Status, pending: &mut Pending) {
    let a = Attrs::of(data);
    let op = match pending.op_name.take() {
        Some(op) => op,
        None => operation_name(kind, &a),
    };
    let resource = if data.resource.is_none() {
        resource(kind, &a)
    } else {
        None
    };
    let span_type = span_type(kind, &a);
    let (has_kind, has_status_code) = (a.span_kind, a.http_status_code);
    let otel_name = std::mem::replace(&mut data.name, op);
    if data.resource.is_none() {
        data.resource = Some(resource.unwrap_or(otel_name));
    }
    if data.span_type.is_none() {
        data.span_type = Some(span_type);
    }
    if !has_kind {
        data.push_meta(Str::from_static("span.kind"), Str::from_static(kind_str(kind)));
    }
    if !has_status_code {
        let code = data
            .metric("http.response.status_code")
            .or_else(|| data.metric("http.status_code"));
        if let Some(code) = code.filter(|c| *c > 0.0 && c.fract() == 0.0) {
            data.push_meta(
                Str::from_static("http.status_code"),
                Str::from((code as u64).to_string()),
            );
        }
    }
    if matches!(kind, SpanKind::Client | SpanKind::Producer) {
        data.measured = true;
    }
    let code = match status {
        Status::Unset => "Unset",
        Status::Ok => "Ok",
        Status::Error { .. } => "Error",
    };
    data.set_meta(Str::from_static("otel.status_code"), Str::from_static(code));
    if let Status::Error { description } = status {
        if !description.is_empty() {
            data.set_meta(
                Str::from_static("otel.status_description"),
                Str::from(description.clone()),
            );
        }
    }
    let is_error = match pending.dd_error {
        Some(e) => e,
        None => matches!(status, Status::Error { .. }),
    };
    data.error = is_error;
    if is_error {
        let e = std::mem::take(&mut pending.exception);
        for (key, value) in [
            ("error.message", e.message),
            ("error.type", e.kind),
            ("error.stack", e.stack),
        ] {
            if let Some(v) = value {
                if data.tag(key).is_none() {
                    data.push_meta(Str::from_static(key), v);
                }
            }
        }
        if data.tag("error.message").is_none() {
            if let Status::Error { description } = status {
                if !description.is_empty() {
                    data.push_meta(Str::from_static("error.message"), Str::from(description.clone()));
                }
            }
        }
    }
}

/// An OpenTelemetry attribute value as a span-event attribute.
pub(crate) fn attribute_value(v: opentelemetry::Value) -> crate::AttributeValue {
    use crate::AttributeValue as A;
    use opentelemetry::{Array, Value};
    match v {
        Value::Bool(b) => A::Bool(b),
        Value::I64(i) => A::Int(i),
        Value::F64(f) => A::Double(f),
        Value::String(s) => A::String(s.to_string()),
        Value::Array(Array::Bool(a)) => A::Array(a.into_iter().map(A::Bool).collect()),
        Value::Array(Array::I64(a)) => A::Array(a.into_iter().map(A::Int).collect()),
        Value::Array(Array::F64(a)) => A::Array(a.into_iter().map(A::Double).collect()),
        Value::Array(Array::String(a)) => A::Array(a.into_iter().map(|s| A::String(s.to_string())).collect()),
        other => A::String(other.to_string()),
    }
}

/// An OpenTelemetry link as a span link: ids, attributes (arrays flattened), the W3C
/// flags and `tracestate` of the linked context.
pub(crate) fn link(ctx: &opentelemetry::trace::SpanContext, attributes: Vec<KeyValue>) -> crate::SpanLink {
    let trace_id = crate::TraceId::from_u128(u128::from_be_bytes(ctx.trace_id().to_bytes()));
    let span_id = crate::SpanId::from_u64(u64::from_be_bytes(ctx.span_id().to_bytes()));
    let link = crate::SpanLink::new(
        trace_id,
        span_id,
        attributes
            .into_iter()
            .map(|kv| (kv.key.to_string(), attribute_value(kv.value))),
    )
    .with_flags(u32::from(ctx.trace_flags().to_u8()));
    let ts = ctx.trace_state().header();
    if ts.is_empty() { link } else { link.with_tracestate(ts) }
}

/// An OpenTelemetry event as a span event.
pub(crate) fn event(name: &str, time_unix_nano: i64, attributes: Vec<KeyValue>) -> crate::SpanEvent {
    crate::SpanEvent::new(
        name,
        time_unix_nano,
        attributes
            .into_iter()
            .map(|kv| (kv.key.to_string(), attribute_value(kv.value))),
    )
}

#[cfg(test)]
mod known_key_tests {
    #[test]
    fn every_known_key_is_found_and_others_are_not() {
        for k in super::KNOWN_KEYS {
            assert_eq!(super::known_key(k), Some(*k));
            assert_eq!(super::known_key(&format!("{k}x")), None);
        }
        assert_eq!(super::known_key(""), None);
    }
}
