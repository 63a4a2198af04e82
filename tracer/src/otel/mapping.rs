//! OpenTelemetry → Datadog span mapping (the rules of the Datadog agent's OTLP receiver,
//! "v2" operation and resource names), as pure functions over a span's data.
//!
//! Attributes are recorded into the span as they arrive (strings, booleans and arrays to
//! `meta`, integers and floats to `metrics`; a few keys set span fields instead), and the
//! names are derived when the span ends, from its kind and final attributes.

use std::borrow::Cow;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};

use crate::Str;
use crate::span::SpanData;
use crate::span::intern::lookup as lookup_interned;

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

fn kind_str(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

/// The attributes the name, resource and type rules read, gathered in one pass over the
/// span's tags (the last value of a key wins, as for [`SpanData::tag`]; empty is unset).
#[derive(Default)]
struct Attrs<'a> {
    http_method: Option<&'a str>,
    http_request_method: Option<&'a str>,
    http_route: Option<&'a str>,
    db_system: Option<&'a str>,
    db_system_name: Option<&'a str>,
    db_statement: Option<&'a str>,
    db_query_text: Option<&'a str>,
    messaging_system: Option<&'a str>,
    messaging_operation: Option<&'a str>,
    messaging_operation_type: Option<&'a str>,
    messaging_destination: Option<&'a str>,
    messaging_destination_name: Option<&'a str>,
    rpc_system: Option<&'a str>,
    rpc_service: Option<&'a str>,
    rpc_method: Option<&'a str>,
    faas_invoked_provider: Option<&'a str>,
    faas_invoked_name: Option<&'a str>,
    faas_trigger: Option<&'a str>,
    graphql_operation_type: Option<&'a str>,
    graphql_operation_name: Option<&'a str>,
    network_protocol_name: Option<&'a str>,
    span_kind: bool,
    http_status_code: bool,
}

impl<'a> Attrs<'a> {
    fn of(data: &'a SpanData) -> Self {
        let mut a = Self::default();
        for (k, v) in data.tags() {
            let v = (!v.is_empty()).then_some(v);
            let slot = match k {
                "http.method" => &mut a.http_method,
                "http.request.method" => &mut a.http_request_method,
                "http.route" => &mut a.http_route,
                "db.system" => &mut a.db_system,
                "db.system.name" => &mut a.db_system_name,
                "db.statement" => &mut a.db_statement,
                "db.query.text" => &mut a.db_query_text,
                "messaging.system" => &mut a.messaging_system,
                "messaging.operation" => &mut a.messaging_operation,
                "messaging.operation.type" => &mut a.messaging_operation_type,
                "messaging.destination" => &mut a.messaging_destination,
                "messaging.destination.name" => &mut a.messaging_destination_name,
                "rpc.system" => &mut a.rpc_system,
                "rpc.service" => &mut a.rpc_service,
                "rpc.method" => &mut a.rpc_method,
                "faas.invoked_provider" => &mut a.faas_invoked_provider,
                "faas.invoked_name" => &mut a.faas_invoked_name,
                "faas.trigger" => &mut a.faas_trigger,
                "graphql.operation.type" => &mut a.graphql_operation_type,
                "graphql.operation.name" => &mut a.graphql_operation_name,
                "network.protocol.name" => &mut a.network_protocol_name,
                "span.kind" => {
                    a.span_kind = true;
                    continue;
                }
                "http.status_code" => {
                    a.http_status_code = true;
                    continue;
                }
                _ => continue,
            };
            *slot = v;
        }
        a
    }
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The operation name from the span kind and attributes (agent `GetOTelOperationNameV2`).
fn operation_name(kind: &SpanKind, a: &Attrs<'_>) -> Str {
    let client = matches!(kind, SpanKind::Client);
    let server = matches!(kind, SpanKind::Server);
    if a.http_method.is_some() || a.http_request_method.is_some() {
        if client {
            return Str::from_static("http.client.request");
        }
        if server {
            return Str::from_static("http.server.request");
        }
    }
    if client {
        if let Some(db) = a.db_system.or(a.db_system_name) {
            return Str::from(format!("{}.query", lower(db)));
        }
    }
    if let (Some(system), Some(op)) = (a.messaging_system, a.messaging_operation.or(a.messaging_operation_type)) {
        if !matches!(kind, SpanKind::Internal) {
            return Str::from(format!("{}.{}", lower(system), lower(op)));
        }
    }
    if let Some(rpc) = a.rpc_system {
        if client && rpc == "aws-api" {
            return match a.rpc_service {
                Some(service) => Str::from(format!("aws.{}.request", lower(service))),
                None => Str::from_static("aws.client.request"),
            };
        }
        if client {
            return Str::from(format!("{}.client.request", lower(rpc)));
        }
        if server {
            return Str::from(format!("{}.server.request", lower(rpc)));
        }
    }
    if client {
        if let (Some(provider), Some(name)) = (a.faas_invoked_provider, a.faas_invoked_name) {
            return Str::from(format!("{}.{}.invoke", lower(provider), lower(name)));
        }
    }
    if server {
        if let Some(trigger) = a.faas_trigger {
            return Str::from(format!("{}.invoke", lower(trigger)));
        }
    }
    if a.graphql_operation_type.is_some() {
        return Str::from_static("graphql.server.request");
    }
    match (kind, a.network_protocol_name) {
        (SpanKind::Server, Some(p)) => Str::from(format!("{}.server.request", lower(p))),
        (SpanKind::Server, None) => Str::from_static("server.request"),
        (SpanKind::Client, Some(p)) => Str::from(format!("{}.client.request", lower(p))),
        (SpanKind::Client, None) => Str::from_static("client.request"),
        (other, _) => Str::from_static(kind_str(other)),
    }
}

/// Common HTTP methods as static strings (a resource without a route is just the method).
fn method_str(m: &str) -> Str {
    const METHODS: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match METHODS.iter().find(|x| **x == m) {
        Some(x) => Str::from_static(x),
        None => Str::from(m.to_owned()),
    }
}

/// The resource from the attributes (agent `GetOTelResourceV2`); `None`: the span name.
fn resource(kind: &SpanKind, a: &Attrs<'_>) -> Option<Str> {
    if let Some(method) = a.http_request_method.or(a.http_method) {
        let method = if method == "_OTHER" { "HTTP" } else { method };
        if matches!(kind, SpanKind::Server) {
            if let Some(route) = a.http_route {
                return Some(Str::from(format!("{method} {route}")));
            }
        }
        return Some(method_str(method));
    }
    if let Some(op) = a.messaging_operation_type.or(a.messaging_operation) {
        return Some(Str::from(
            match a.messaging_destination.or(a.messaging_destination_name) {
                Some(dest) => format!("{op} {dest}"),
                None => op.to_owned(),
            },
        ));
    }
    if let Some(method) = a.rpc_method {
        return Some(Str::from(match a.rpc_service {
            Some(service) => format!("{method} {service}"),
            None => method.to_owned(),
        }));
    }
    if let Some(op) = a.graphql_operation_type {
        return Some(Str::from(match a.graphql_operation_name {
            Some(name) => format!("{op} {name}"),
            None => op.to_owned(),
        }));
    }
    if a.db_system_name.or(a.db_system).is_some() {
        if let Some(query) = a.db_statement.or(a.db_query_text) {
            return Some(Str::from(query.to_owned()));
        }
    }
    None
}

/// The Datadog span type of a database system (agent `checkDBType`).
fn db_type(system: &str) -> &'static str {
    match system {
        "other_sql"
        | "mssql"
        | "microsoft.sql_server"
        | "mysql"
        | "oracle"
        | "oracle.db"
        | "db2"
        | "ibm.db2"
        | "postgresql"
        | "redshift"
        | "aws.redshift"
        | "cloudscape"
        | "hsqldb"
        | "maxdb"
        | "sap.maxdb"
        | "ingres"
        | "firstsql"
        | "edb"
        | "cache"
        | "intersystems.cache"
        | "firebird"
        | "firebirdsql"
        | "derby"
        | "informix"
        | "mariadb"
        | "sqlite"
        | "sybase"
        | "teradata"
        | "vertica"
        | "h2"
        | "h2database"
        | "coldfusion"
        | "cockroachdb"
        | "progress"
        | "hanadb"
        | "sap.hana"
        | "adabas"
        | "filemaker"
        | "instantdb"
        | "interbase"
        | "netezza"
        | "pervasive"
        | "pointbase"
        | "clickhouse"
        | "trino"
        | "spanner"
        | "gcp.spanner" => "sql",
        "cassandra" => "cassandra",
        "redis" => "redis",
        "memcached" => "memcached",
        "mongodb" => "mongodb",
        "elasticsearch" => "elasticsearch",
        "opensearch" => "opensearch",
        _ => "db",
    }
}

/// The span type from the kind (agent `GetOTelSpanType`).
fn span_type(kind: &SpanKind, a: &Attrs<'_>) -> &'static str {
    match kind {
        SpanKind::Server => "web",
        SpanKind::Client => match a.db_system_name.or(a.db_system) {
            Some(db) => db_type(db),
            None => "http",
        },
        _ => "custom",
    }
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
        data.span_type = Some(Str::from_static(span_type));
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
