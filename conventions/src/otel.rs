//! The Datadog operation name, resource and span type of an OpenTelemetry span, from its
//! kind and semantic-convention attributes: the agent's "v2" rules, applied the same way by
//! the agent's OTLP receiver and the tracer's OpenTelemetry bridge.
//!
//! Read from DataDog/datadog-agent at commit 000ede5c82b1deb36a982074d31c6b132a2dd096:
//! `pkg/trace/otel/traceutil/otel_util.go` (`GetOTelOperationNameV2`, `GetOTelResourceV2`,
//! `GetOTelSpanType`) and the precedence lists of `pkg/trace/semantics/mappings.json`
//! (registry v20260630131934). Where a concept has an old and a new semantic-convention key,
//! the key order is Datadog's, and it differs by concept:
//!
//! | concept | keys, first found wins |
//! |---|---|
//! | HTTP method | `http.request.method`, `http.method` |
//! | database system | `db.system.name`, `db.system` |
//! | database statement (resource) | `db.statement`, `db.query.text` |
//! | messaging operation | `messaging.operation`, then (ours) `messaging.operation.type` |
//! | messaging destination | `messaging.destination`, `messaging.destination.name` |
//!
//! Datadog's registry lists only `messaging.operation`; `messaging.operation.type` (its
//! semconv 1.26 name) is our addition, tried last so that a span carrying Datadog's key maps
//! as Datadog maps it. A lookup tries each key in turn, and for each key the span's
//! attributes before the resource's ([`Attributes::get`]); an empty value counts as absent.
//!
//! Pure: no I/O, no allocation for a lookup, one allocation for a name built from parts.

use std::borrow::Cow;

/// An OpenTelemetry span kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `SPAN_KIND_UNSPECIFIED` (0).
    Unspecified,
    /// `SPAN_KIND_INTERNAL` (1).
    Internal,
    /// `SPAN_KIND_SERVER` (2).
    Server,
    /// `SPAN_KIND_CLIENT` (3).
    Client,
    /// `SPAN_KIND_PRODUCER` (4).
    Producer,
    /// `SPAN_KIND_CONSUMER` (5).
    Consumer,
}

impl Kind {
    /// The kind of an OTLP `Span.kind` number; an unknown number is `Unspecified`.
    pub fn from_otlp(kind: i32) -> Self {
        match kind {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The `span.kind` tag value (`server`, `client`, …, `unspecified`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// Declares [`Key`]: the attributes the rules read, with their names.
macro_rules! keys {
    ($($key:ident = $name:literal,)*) => {
        /// An attribute the naming rules read.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Key {
            $($key,)*
        }

        impl Key {
            /// Every key, in declaration order (`ALL[k as usize] == k`).
            pub const ALL: &'static [Key] = &[$(Key::$key,)*];

            /// The attribute name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Key::$key => $name,)*
                }
            }

            /// The key of an attribute name, if the rules read it (one `match`, no hashing).
            #[inline]
            pub fn from_name(name: &str) -> Option<Key> {
                match name {
                    $($name => Some(Key::$key),)*
                    _ => None,
                }
            }
        }
    };
}

keys! {
    OperationName = "operation.name",
    ResourceName = "resource.name",
    SpanType = "span.type",
    HttpRequestMethod = "http.request.method",
    HttpMethod = "http.method",
    HttpRoute = "http.route",
    DbSystemName = "db.system.name",
    DbSystem = "db.system",
    DbStatement = "db.statement",
    DbQueryText = "db.query.text",
    MessagingSystem = "messaging.system",
    MessagingOperation = "messaging.operation",
    MessagingOperationType = "messaging.operation.type",
    MessagingDestination = "messaging.destination",
    MessagingDestinationName = "messaging.destination.name",
    RpcSystem = "rpc.system",
    RpcService = "rpc.service",
    RpcMethod = "rpc.method",
    FaasInvokedProvider = "faas.invoked_provider",
    FaasInvokedName = "faas.invoked_name",
    FaasTrigger = "faas.trigger",
    GraphqlOperationType = "graphql.operation.type",
    GraphqlOperationName = "graphql.operation.name",
    NetworkProtocolName = "network.protocol.name",
}

const HTTP_METHOD: &[Key] = &[Key::HttpRequestMethod, Key::HttpMethod];
const DB_SYSTEM: &[Key] = &[Key::DbSystemName, Key::DbSystem];
const DB_STATEMENT: &[Key] = &[Key::DbStatement, Key::DbQueryText];
const MESSAGING_OPERATION: &[Key] = &[Key::MessagingOperation, Key::MessagingOperationType];
const MESSAGING_DESTINATION: &[Key] = &[Key::MessagingDestination, Key::MessagingDestinationName];

/// A span's attributes as the rules read them, implemented by each caller over its own
/// representation.
pub trait Attributes<'a> {
    /// The value of `key` as a string (a caller with span and resource attributes answers
    /// from the span's first); `None` when absent. Borrow where the value is a string:
    /// the rules copy only what ends up in a name.
    fn get(&self, key: Key) -> Option<Cow<'a, str>>;
}

impl<'a, F: Fn(Key) -> Option<Cow<'a, str>>> Attributes<'a> for F {
    fn get(&self, key: Key) -> Option<Cow<'a, str>> {
        self(key)
    }
}

/// The attributes the rules read, gathered in one pass over a span's string attributes
/// ([`Gathered::record`]): for callers whose attributes are a list to scan, so each name
/// costs one `match` per attribute instead of a scan per key.
#[derive(Clone, Debug)]
pub struct Gathered<'a>([Option<&'a str>; Key::ALL.len()]);

impl Default for Gathered<'_> {
    fn default() -> Self {
        Self([None; Key::ALL.len()])
    }
}

impl<'a> Gathered<'a> {
    /// Records one attribute; `false` when the rules do not read `key`. A key recorded
    /// again replaces the earlier value (the last wins; empty unsets).
    #[inline]
    pub fn record(&mut self, key: &str, value: &'a str) -> bool {
        // Every key the rules read starts with one of these bytes: most other keys cost one
        // comparison.
        if !matches!(
            key.as_bytes().first(),
            Some(b'd' | b'f' | b'g' | b'h' | b'm' | b'n' | b'o' | b'r' | b's')
        ) {
            return false;
        }
        match Key::from_name(key) {
            Some(k) => {
                self.0[k as usize] = (!value.is_empty()).then_some(value);
                true
            }
            None => false,
        }
    }
}

impl<'a> Attributes<'a> for Gathered<'a> {
    #[inline]
    fn get(&self, key: Key) -> Option<Cow<'a, str>> {
        self.0[key as usize].map(Cow::Borrowed)
    }
}

/// A derived name: a fixed string, an attribute's value, or one built from parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// A fixed name (`http.server.request`, `GET`, `web`, …).
    Static(&'static str),
    /// An attribute's value as given.
    Attr(Cow<'a, str>),
    /// Built from parts (`postgresql.query`, `GET /users/{id}`).
    Built(String),
}

impl Name<'_> {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Attr(s) => s,
            Name::Built(s) => s,
        }
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        match self {
            Name::Static(s) => s.to_owned(),
            Name::Attr(s) => s.into_owned(),
            Name::Built(s) => s,
        }
    }
}

/// The first of `keys` set (non-empty).
#[inline]
fn first<'a>(a: &impl Attributes<'a>, keys: &[Key]) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| a.get(*k).filter(|v| !v.is_empty()))
}

#[inline]
fn one<'a>(a: &impl Attributes<'a>, key: Key) -> Option<Cow<'a, str>> {
    first(a, &[key])
}

/// `s` in ASCII lower case, borrowed when it already is (Datadog normalizes these parts).
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// `a b`, or `a` alone when `b` is unset.
fn joined<'a>(a: Cow<'a, str>, b: Option<Cow<'_, str>>) -> Name<'a> {
    match b {
        Some(b) => Name::Built(format!("{a} {b}")),
        None => Name::Attr(a),
    }
}

/// The operation name (agent `GetOTelOperationNameV2`). `operation.name` is used as given;
/// the agent's normalizer treats it afterwards like any name.
pub fn operation_name<'a>(kind: Kind, a: &impl Attributes<'a>) -> Name<'a> {
    if let Some(op) = one(a, Key::OperationName) {
        return Name::Attr(op);
    }
    let client = kind == Kind::Client;
    let server = kind == Kind::Server;
    if first(a, HTTP_METHOD).is_some() {
        if server {
            return Name::Static("http.server.request");
        }
        if client {
            return Name::Static("http.client.request");
        }
    }
    if client && let Some(db) = first(a, DB_SYSTEM) {
        return Name::Built(format!("{}.query", lower(&db)));
    }
    if matches!(kind, Kind::Client | Kind::Server | Kind::Producer | Kind::Consumer)
        && let Some(system) = one(a, Key::MessagingSystem)
        && let Some(op) = first(a, MESSAGING_OPERATION)
    {
        return Name::Built(format!("{}.{}", lower(&system), lower(&op)));
    }
    if let Some(rpc) = one(a, Key::RpcSystem) {
        let rpc = lower(&rpc);
        if client && rpc == "aws-api" {
            return match one(a, Key::RpcService) {
                Some(service) => Name::Built(format!("aws.{}.request", lower(&service))),
                None => Name::Static("aws.client.request"),
            };
        }
        if client {
            return Name::Built(format!("{rpc}.client.request"));
        }
        if server {
            return Name::Built(format!("{rpc}.server.request"));
        }
    }
    if client
        && let Some(provider) = one(a, Key::FaasInvokedProvider)
        && let Some(name) = one(a, Key::FaasInvokedName)
    {
        return Name::Built(format!("{}.{}.invoke", lower(&provider), lower(&name)));
    }
    if server && let Some(trigger) = one(a, Key::FaasTrigger) {
        return Name::Built(format!("{}.invoke", lower(&trigger)));
    }
    if one(a, Key::GraphqlOperationType).is_some() {
        return Name::Static("graphql.server.request");
    }
    let protocol = || one(a, Key::NetworkProtocolName);
    match kind {
        Kind::Server => match protocol() {
            Some(p) => Name::Built(format!("{}.server.request", lower(&p))),
            None => Name::Static("server.request"),
        },
        Kind::Client => match protocol() {
            Some(p) => Name::Built(format!("{}.client.request", lower(&p))),
            None => Name::Static("client.request"),
        },
        // Datadog names an unspecified kind as internal.
        Kind::Unspecified => Name::Static("internal"),
        other => Name::Static(other.name()),
    }
}

/// The common HTTP methods as static strings (a resource without a route is the method).
fn method_name(method: Cow<'_, str>) -> Name<'_> {
    const METHODS: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match METHODS.iter().find(|m| **m == method) {
        Some(m) => Name::Static(m),
        None => Name::Attr(method),
    }
}

/// The resource (agent `GetOTelResourceV2`); `None`: the span's own name.
pub fn resource<'a>(kind: Kind, a: &impl Attributes<'a>) -> Option<Name<'a>> {
    if let Some(r) = one(a, Key::ResourceName) {
        return Some(Name::Attr(r));
    }
    if let Some(method) = first(a, HTTP_METHOD) {
        let method = if method == "_OTHER" {
            Cow::Borrowed("HTTP")
        } else {
            method
        };
        if kind == Kind::Server
            && let Some(route) = one(a, Key::HttpRoute)
        {
            return Some(Name::Built(format!("{method} {route}")));
        }
        return Some(method_name(method));
    }
    if let Some(op) = first(a, MESSAGING_OPERATION) {
        return Some(joined(op, first(a, MESSAGING_DESTINATION)));
    }
    if let Some(method) = one(a, Key::RpcMethod) {
        return Some(joined(method, one(a, Key::RpcService)));
    }
    if let Some(op) = one(a, Key::GraphqlOperationType) {
        return Some(joined(op, one(a, Key::GraphqlOperationName)));
    }
    if first(a, DB_SYSTEM).is_some() {
        return first(a, DB_STATEMENT).map(Name::Attr);
    }
    None
}

/// The span type (agent `GetOTelSpanType`): `span.type`, else from the kind; a client
/// span's database system (lower-cased, as Datadog normalizes it) picks the database type.
pub fn span_type<'a>(kind: Kind, a: &impl Attributes<'a>) -> Name<'a> {
    if let Some(t) = one(a, Key::SpanType) {
        return Name::Attr(t);
    }
    Name::Static(match kind {
        Kind::Server => "web",
        Kind::Client => match first(a, DB_SYSTEM) {
            Some(db) => crate::db::span_type(&lower(&db)),
            None => "http",
        },
        _ => "custom",
    })
}

#[cfg(test)]
mod tests;
