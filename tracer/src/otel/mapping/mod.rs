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
use crate::span::intern::{lookup as lookup_interned, same_bytes};

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
    /// An attribute `otel.status_code` was recorded (the status then replaces it).
    pub(crate) status_code_set: bool,
}

/// `exception.*` attributes of an `exception` event.
#[derive(Debug, Default)]
pub(crate) struct Exception {
    pub(crate) message: Option<Str>,
    pub(crate) kind: Option<Str>,
    pub(crate) stack: Option<Str>,
}

/// What recording an attribute does, by key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// A tag (`meta` or `metrics` by the value's type).
    Plain,
    /// `operation.name` / `datadog.name`.
    OpName,
    Resource,
    SpanType,
    Service,
    /// `datadog.*` overrides of a tag: that tag, replaced.
    Tag(&'static str),
    /// `datadog.error`.
    DdError,
    /// `_dd.measured`.
    Measured,
    /// Dropped (`analytics.event`, unknown `datadog.*`).
    Ignored,
    /// `otel.status_code`: a tag the status replaces later.
    StatusCode,
}

/// Keys written often enough to keep as static strings (no allocation, no cache lookup
/// per span), and the keys that are not plain tags.
const KNOWN_KEYS: &[(&str, Role)] = &[
    ("http.method", Role::Plain),
    ("http.request.method", Role::Plain),
    ("http.route", Role::Plain),
    ("http.url", Role::Plain),
    ("url.full", Role::Plain),
    ("url.path", Role::Plain),
    ("url.scheme", Role::Plain),
    ("url.query", Role::Plain),
    ("http.target", Role::Plain),
    ("http.scheme", Role::Plain),
    ("http.host", Role::Plain),
    ("http.status_code", Role::Plain),
    ("http.response.status_code", Role::Plain),
    ("http.user_agent", Role::Plain),
    ("user_agent.original", Role::Plain),
    ("server.address", Role::Plain),
    ("server.port", Role::Plain),
    ("client.address", Role::Plain),
    ("network.peer.address", Role::Plain),
    ("network.peer.port", Role::Plain),
    ("network.protocol.name", Role::Plain),
    ("network.protocol.version", Role::Plain),
    ("db.system", Role::Plain),
    ("db.system.name", Role::Plain),
    ("db.name", Role::Plain),
    ("db.namespace", Role::Plain),
    ("db.statement", Role::Plain),
    ("db.query.text", Role::Plain),
    ("db.operation", Role::Plain),
    ("db.operation.name", Role::Plain),
    ("db.collection.name", Role::Plain),
    ("messaging.system", Role::Plain),
    ("messaging.operation", Role::Plain),
    ("messaging.operation.type", Role::Plain),
    ("messaging.destination", Role::Plain),
    ("messaging.destination.name", Role::Plain),
    ("rpc.system", Role::Plain),
    ("rpc.service", Role::Plain),
    ("rpc.method", Role::Plain),
    ("graphql.operation.type", Role::Plain),
    ("graphql.operation.name", Role::Plain),
    ("peer.service", Role::Plain),
    ("span.kind", Role::Plain),
    ("component", Role::Plain),
    ("thread.id", Role::Plain),
    ("thread.name", Role::Plain),
    ("code.function", Role::Plain),
    ("code.namespace", Role::Plain),
    ("code.filepath", Role::Plain),
    ("code.lineno", Role::Plain),
    ("code.file.path", Role::Plain),
    ("code.line.number", Role::Plain),
    ("error.type", Role::Plain),
    ("error.message", Role::Plain),
    ("error.stack", Role::Plain),
    ("exception.message", Role::Plain),
    ("exception.type", Role::Plain),
    ("exception.stacktrace", Role::Plain),
    ("user.id", Role::Plain),
    ("enduser.id", Role::Plain),
    ("operation.name", Role::OpName),
    ("datadog.name", Role::OpName),
    ("resource.name", Role::Resource),
    ("datadog.resource", Role::Resource),
    ("span.type", Role::SpanType),
    ("datadog.type", Role::SpanType),
    ("service.name", Role::Service),
    ("datadog.service", Role::Service),
    ("datadog.span.kind", Role::Tag("span.kind")),
    ("datadog.error", Role::DdError),
    ("datadog.error.msg", Role::Tag("error.message")),
    ("datadog.error.type", Role::Tag("error.type")),
    ("datadog.error.stack", Role::Tag("error.stack")),
    ("datadog.http_status_code", Role::Tag("http.status_code")),
    ("datadog.env", Role::Tag("env")),
    ("datadog.version", Role::Tag("version")),
    ("_dd.measured", Role::Measured),
    ("analytics.event", Role::Ignored),
    ("otel.status_code", Role::StatusCode),
];

/// Slots of [`known_key`]'s table (a power of two, over twice the known keys).
const KNOWN_SLOTS: usize = 256;

/// Where a key's probe starts in [`KNOWN_TABLE`]: its length and four of its bytes (no
/// loop over the key; the known keys spread well over these).
#[inline]
const fn known_slot(k: &[u8]) -> usize {
    let n = k.len();
    if n == 0 {
        return 0;
    }
    (n * 7 + k[0] as usize * 31 + k[n - 1] as usize * 13 + k[n / 2] as usize * 3 + k[n * 3 / 4] as usize * 5)
        % KNOWN_SLOTS
}

/// [`KNOWN_KEYS`] by [`known_slot`], open addressing (built at compile time).
static KNOWN_TABLE: [Option<(&str, Role)>; KNOWN_SLOTS] = {
    let mut t: [Option<(&str, Role)>; KNOWN_SLOTS] = [None; KNOWN_SLOTS];
    let mut k = 0;
    while k < KNOWN_KEYS.len() {
        let mut i = known_slot(KNOWN_KEYS[k].0.as_bytes());
        while t[i].is_some() {
            i = (i + 1) % KNOWN_SLOTS;
        }
        t[i] = Some(KNOWN_KEYS[k]);
        k += 1;
    }
    t
};

/// `key` as one of [`KNOWN_KEYS`], with its role: a few byte reads and usually one
/// comparison.
#[inline]
fn known_key(key: &str) -> Option<(&'static str, Role)> {
    let mut i = known_slot(key.as_bytes());
    loop {
        match KNOWN_TABLE.get(i).copied().flatten() {
            None => return None,
            Some((k, role)) if same_bytes(k.as_bytes(), key.as_bytes()) => return Some((k, role)),
            Some(_) => i = (i + 1) % KNOWN_SLOTS,
        }
    }
}

/// An unknown key as a span string: static or shared when this thread saw it recently.
fn other_key(key: Key) -> Str {
    lookup_interned(key.as_str()).unwrap_or_else(|| Str::from(String::from(key)))
}

/// A key as a span string, static for [`KNOWN_KEYS`].
#[cfg(test)]
pub(crate) fn key_str(key: Key) -> Str {
    match known_key(key.as_str()) {
        Some((k, _)) => Str::from_static(k),
        None => other_key(key),
    }
}

#[inline]
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
#[inline]
pub(crate) fn apply_attribute(data: &mut SpanData, pending: &mut Pending, kv: KeyValue, replace: bool) {
    let KeyValue { key, value, .. } = kv;
    let (key, role) = match known_key(key.as_str()) {
        Some((k, role)) => (Str::from_static(k), role),
        None if key.as_str().starts_with("datadog.") => return,
        None => (other_key(key), Role::Plain),
    };
    match role {
        Role::Plain => tag(data, key, value, replace),
        Role::StatusCode => {
            pending.status_code_set = true;
            tag(data, key, value, replace);
        }
        Role::OpName => pending.op_name = Some(value_str(value)),
        Role::Resource => data.resource = Some(value_str(value)),
        Role::SpanType => data.span_type = Some(value_str(value)),
        Role::Service => data.service = Some(value_str(value).into_shared()),
        Role::Tag(tag) => data.set_meta(Str::from_static(tag), value_str(value)),
        Role::DdError => pending.dd_error = value_flag(&value),
        Role::Measured => data.measured = value_flag(&value).unwrap_or(false),
        Role::Ignored => {}
    }
}

/// A plain attribute as a tag: integers and floats to `metrics`, the rest to `meta`.
#[inline]
fn tag(data: &mut SpanData, key: Str, value: Value, replace: bool) {
    match value {
        Value::I64(i) => metric(data, key, i as f64, replace),
        Value::F64(f) => metric(data, key, f, replace),
        other if replace => data.set_meta(key, value_str(other)),
        other => data.push_meta(key, value_str(other)),
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
    // The scan for an earlier value only when an attribute set one.
    if pending.status_code_set {
        data.set_meta(Str::from_static("otel.status_code"), Str::from_static(code));
    } else {
        data.push_meta(Str::from_static("otel.status_code"), Str::from_static(code));
    }
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
        for (k, role) in super::KNOWN_KEYS {
            assert_eq!(super::known_key(k), Some((*k, *role)));
            assert_eq!(super::known_key(&format!("{k}x")), None);
            assert_eq!(super::known_key(&k[1..]), None);
            assert_eq!(super::key_str(opentelemetry::Key::new(*k)).as_static(), Some(*k));
        }
        assert_eq!(super::known_key(""), None);
    }

    #[test]
    fn known_keys_are_found_within_four_probes() {
        for (k, role) in super::KNOWN_KEYS {
            let start = super::known_slot(k.as_bytes());
            let at = (0..super::KNOWN_SLOTS)
                .position(|d| super::KNOWN_TABLE[(start + d) % super::KNOWN_SLOTS] == Some((*k, *role)));
            assert!(at.is_some_and(|d| d < 4), "{k}: {at:?}");
        }
    }
}
