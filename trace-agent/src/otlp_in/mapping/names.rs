//! Attribute lookup (span first, then resource) and the Datadog operation name, resource
//! and span type of an OTLP span (the agent's "v2" rules: `GetOTelOperationNameV2`,
//! `GetOTelResourceV2`, `GetOTelSpanType`).

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::value_string;

/// The last value of `key` in `attrs` (OTLP keys are unique; a repeated key: the last wins).
fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// The string value of the first of `keys` set (non-empty) in `attrs`.
pub(super) fn attr_str<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<Cow<'a, str>> {
    keys.iter()
        .find_map(|k| Some(value_string(attr(attrs, k))).filter(|v| !v.is_empty()))
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Span attributes first, then the resource's (the Datadog agent's precedence).
pub(super) struct Lookup<'a> {
    pub(super) span: &'a [KeyValue],
    pub(super) res: &'a [KeyValue],
}

impl<'a> Lookup<'a> {
    pub(super) fn get(&self, keys: &[&str]) -> Option<Cow<'a, str>> {
        attr_str(self.span, keys).or_else(|| attr_str(self.res, keys))
    }

    pub(super) fn int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter()
            .find_map(|k| attr_int(self.span, k).or_else(|| attr_int(self.res, k)))
    }
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The `span.kind` name of an OTLP kind.
pub fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
        SpanKind::Unspecified => "unspecified",
    }
}

/// The operation name from the kind and semantic conventions (agent `GetOTelOperationNameV2`).
pub(super) fn operation_name(kind: SpanKind, a: &Lookup<'_>) -> String {
    if let Some(op) = attr_str(a.span, &["operation.name"]) {
        return op.into_owned();
    }
    let client = kind == SpanKind::Client;
    let server = kind == SpanKind::Server;
    if a.get(&["http.request.method", "http.method"]).is_some() {
        if server {
            return "http.server.request".to_owned();
        }
        if client {
            return "http.client.request".to_owned();
        }
    }
    if client && let Some(db) = a.get(&["db.system.name", "db.system"]) {
        return format!("{}.query", lower(&db));
    }
    if matches!(
        kind,
        SpanKind::Client | SpanKind::Server | SpanKind::Producer | SpanKind::Consumer
    ) && let (Some(system), Some(op)) = (
        a.get(&["messaging.system"]),
        a.get(&["messaging.operation.type", "messaging.operation"]),
    ) {
        return format!("{}.{}", lower(&system), lower(&op));
    }
    if let Some(rpc) = a.get(&["rpc.system"]) {
        if client && rpc == "aws-api" {
            return match a.get(&["rpc.service"]) {
                Some(service) => format!("aws.{}.request", lower(&service)),
                None => "aws.client.request".to_owned(),
            };
        }
        if client {
            return format!("{}.client.request", lower(&rpc));
        }
        if server {
            return format!("{}.server.request", lower(&rpc));
        }
    }
    if client && let (Some(provider), Some(name)) = (a.get(&["faas.invoked_provider"]), a.get(&["faas.invoked_name"])) {
        return format!("{}.{}.invoke", lower(&provider), lower(&name));
    }
    if server && let Some(trigger) = a.get(&["faas.trigger"]) {
        return format!("{}.invoke", lower(&trigger));
    }
    if a.get(&["graphql.operation.type"]).is_some() {
        return "graphql.server.request".to_owned();
    }
    let protocol = a.get(&["network.protocol.name"]);
    match (kind, protocol) {
        (SpanKind::Server, Some(p)) => format!("{}.server.request", lower(&p)),
        (SpanKind::Server, None) => "server.request".to_owned(),
        (SpanKind::Client, Some(p)) => format!("{}.client.request", lower(&p)),
        (SpanKind::Client, None) => "client.request".to_owned(),
        (other, _) => kind_name(other).to_owned(),
    }
}

/// The resource from the semantic conventions (agent `GetOTelResourceV2`); the span name when
/// nothing applies.
pub(super) fn resource_name(kind: SpanKind, span_name: &str, a: &Lookup<'_>) -> String {
    if let Some(r) = attr_str(a.span, &["resource.name"]) {
        return r.into_owned();
    }
    if let Some(method) = a.get(&["http.request.method", "http.method"]) {
        let method = if method == "_OTHER" {
            Cow::Borrowed("HTTP")
        } else {
            method
        };
        if kind == SpanKind::Server
            && let Some(route) = a.get(&["http.route"])
        {
            return format!("{method} {route}");
        }
        return method.into_owned();
    }
    if let Some(op) = a.get(&["messaging.operation.type", "messaging.operation"]) {
        return match a.get(&["messaging.destination.name", "messaging.destination"]) {
            Some(dest) => format!("{op} {dest}"),
            None => op.into_owned(),
        };
    }
    if let Some(method) = a.get(&["rpc.method"]) {
        return match a.get(&["rpc.service"]) {
            Some(service) => format!("{method} {service}"),
            None => method.into_owned(),
        };
    }
    if let Some(op) = a.get(&["graphql.operation.type"]) {
        return match a.get(&["graphql.operation.name"]) {
            Some(name) => format!("{op} {name}"),
            None => op.into_owned(),
        };
    }
    if a.get(&["db.system.name", "db.system"]).is_some()
        && let Some(q) = a.get(&["db.query.text", "db.statement"])
    {
        return q.into_owned();
    }
    span_name.to_owned()
}

/// The span type (agent `GetOTelSpanType`): `span.type`, else from the kind.
pub(super) fn span_type(kind: SpanKind, a: &Lookup<'_>) -> String {
    if let Some(t) = a.get(&["span.type"]) {
        return t.into_owned();
    }
    match kind {
        SpanKind::Server => "web".to_owned(),
        SpanKind::Client => match a.get(&["db.system.name", "db.system"]) {
            Some(db) => apm_conventions::db::span_type(&db).to_owned(),
            None => "http".to_owned(),
        },
        _ => "custom".to_owned(),
    }
}
