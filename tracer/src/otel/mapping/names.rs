//! The Datadog operation name, resource and span type of an OpenTelemetry span, from its
//! kind and semantic-convention attributes (the agent's "v2" rules: `GetOTelOperationNameV2`,
//! `GetOTelResourceV2`, `GetOTelSpanType`).

use std::borrow::Cow;

use opentelemetry::trace::SpanKind;

use crate::Str;
use crate::span::SpanData;

pub(super) fn kind_str(kind: &SpanKind) -> &'static str {
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
pub(super) struct Attrs<'a> {
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
    pub(super) span_kind: bool,
    pub(super) http_status_code: bool,
}

impl<'a> Attrs<'a> {
    pub(super) fn of(data: &'a SpanData) -> Self {
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
pub(super) fn operation_name(kind: &SpanKind, a: &Attrs<'_>) -> Str {
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
pub(super) fn resource(kind: &SpanKind, a: &Attrs<'_>) -> Option<Str> {
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

/// The span type from the kind (agent `GetOTelSpanType`).
pub(super) fn span_type(kind: &SpanKind, a: &Attrs<'_>) -> &'static str {
    match kind {
        SpanKind::Server => "web",
        SpanKind::Client => match a.db_system_name.or(a.db_system) {
            Some(db) => apm_conventions::db::span_type(db),
            None => "http",
        },
        _ => "custom",
    }
}
