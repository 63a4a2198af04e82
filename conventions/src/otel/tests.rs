use std::borrow::Cow;

use super::{Attributes, Gathered, Key, Kind, Name, operation_name, resource, span_type};

/// Span attributes before resource attributes, key by key (as both callers answer).
fn attrs<'a>(span: &'a [(&'a str, &'a str)], res: &'a [(&'a str, &'a str)]) -> impl Attributes<'a> {
    move |key: Key| {
        let find = |list: &'a [(&'a str, &'a str)]| {
            list.iter()
                .rev()
                .find(|(k, _)| *k == key.name())
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty())
        };
        find(span).or_else(|| find(res)).map(Cow::Borrowed)
    }
}

type Row = (
    &'static str,
    Kind,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
    &'static str,
    Option<&'static str>,
    &'static str,
);

/// (case, kind, span attributes, resource attributes, operation name, resource (`None`: the
/// span's name), span type).
const RULES: &[Row] = &[
    (
        "override names",
        Kind::Server,
        &[
            ("operation.name", "Custom.Op"),
            ("resource.name", "res"),
            ("span.type", "queue"),
            ("http.method", "GET"),
        ],
        &[],
        "Custom.Op",
        Some("res"),
        "queue",
    ),
    (
        "overrides from the resource",
        Kind::Internal,
        &[],
        &[("operation.name", "op"), ("resource.name", "r"), ("span.type", "t")],
        "op",
        Some("r"),
        "t",
    ),
    (
        "http server, old key, route",
        Kind::Server,
        &[("http.method", "GET"), ("http.route", "/users/{id}")],
        &[],
        "http.server.request",
        Some("GET /users/{id}"),
        "web",
    ),
    (
        "http server, new key",
        Kind::Server,
        &[("http.request.method", "POST")],
        &[],
        "http.server.request",
        Some("POST"),
        "web",
    ),
    (
        "http: new key before old",
        Kind::Server,
        &[("http.method", "GET"), ("http.request.method", "PUT")],
        &[],
        "http.server.request",
        Some("PUT"),
        "web",
    ),
    (
        "http _OTHER",
        Kind::Server,
        &[("http.request.method", "_OTHER"), ("http.route", "/x")],
        &[],
        "http.server.request",
        Some("HTTP /x"),
        "web",
    ),
    (
        "http client: no route",
        Kind::Client,
        &[("http.request.method", "GET"), ("http.route", "/x")],
        &[],
        "http.client.request",
        Some("GET"),
        "http",
    ),
    (
        "http internal: method only",
        Kind::Internal,
        &[("http.method", "GET")],
        &[],
        "internal",
        Some("GET"),
        "custom",
    ),
    (
        "db client, old keys",
        Kind::Client,
        &[("db.system", "PostgreSQL"), ("db.statement", "SELECT 1")],
        &[],
        "postgresql.query",
        Some("SELECT 1"),
        "sql",
    ),
    (
        "db client, new keys",
        Kind::Client,
        &[("db.system.name", "redis"), ("db.query.text", "GET k")],
        &[],
        "redis.query",
        Some("GET k"),
        "redis",
    ),
    (
        "db: system new key first, statement old key first",
        Kind::Client,
        &[
            ("db.system", "mysql"),
            ("db.system.name", "mongodb"),
            ("db.statement", "old"),
            ("db.query.text", "new"),
        ],
        &[],
        "mongodb.query",
        Some("old"),
        "mongodb",
    ),
    (
        "db: no statement, the span name",
        Kind::Client,
        &[("db.system.name", "dynamodb")],
        &[],
        "dynamodb.query",
        None,
        "db",
    ),
    (
        "db server: no .query",
        Kind::Server,
        &[("db.system", "mysql"), ("db.statement", "q")],
        &[],
        "server.request",
        Some("q"),
        "web",
    ),
    (
        "db: new key on the resource beats old key on the span",
        Kind::Client,
        &[("db.system", "mysql")],
        &[("db.system.name", "redis")],
        "redis.query",
        None,
        "redis",
    ),
    (
        "messaging, old keys",
        Kind::Producer,
        &[
            ("messaging.system", "Kafka"),
            ("messaging.operation", "Publish"),
            ("messaging.destination", "orders"),
        ],
        &[],
        "kafka.publish",
        Some("Publish orders"),
        "custom",
    ),
    (
        "messaging, new keys",
        Kind::Consumer,
        &[
            ("messaging.system", "rabbitmq"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "q"),
        ],
        &[],
        "rabbitmq.process",
        Some("process q"),
        "custom",
    ),
    (
        "messaging: Datadog's keys first",
        Kind::Producer,
        &[
            ("messaging.system", "kafka"),
            ("messaging.operation.type", "send"),
            ("messaging.operation", "publish"),
            ("messaging.destination.name", "new"),
            ("messaging.destination", "old"),
        ],
        &[],
        "kafka.publish",
        Some("publish old"),
        "custom",
    ),
    (
        "messaging internal: no name",
        Kind::Internal,
        &[("messaging.system", "kafka"), ("messaging.operation", "publish")],
        &[],
        "internal",
        Some("publish"),
        "custom",
    ),
    (
        "messaging without system",
        Kind::Producer,
        &[("messaging.operation", "publish")],
        &[],
        "producer",
        Some("publish"),
        "custom",
    ),
    (
        "grpc client",
        Kind::Client,
        &[
            ("rpc.system", "grpc"),
            ("rpc.service", "Greeter"),
            ("rpc.method", "Hello"),
        ],
        &[],
        "grpc.client.request",
        Some("Hello Greeter"),
        "http",
    ),
    (
        "grpc server",
        Kind::Server,
        &[("rpc.system", "GRPC"), ("rpc.method", "Hello")],
        &[],
        "grpc.server.request",
        Some("Hello"),
        "web",
    ),
    (
        "rpc internal: kind",
        Kind::Internal,
        &[("rpc.system", "grpc")],
        &[],
        "internal",
        None,
        "custom",
    ),
    (
        "aws client",
        Kind::Client,
        &[
            ("rpc.system", "aws-api"),
            ("rpc.service", "S3"),
            ("rpc.method", "GetObject"),
        ],
        &[],
        "aws.s3.request",
        Some("GetObject S3"),
        "http",
    ),
    (
        "aws client, no service",
        Kind::Client,
        &[("rpc.system", "aws-api")],
        &[],
        "aws.client.request",
        None,
        "http",
    ),
    (
        "faas client",
        Kind::Client,
        &[("faas.invoked_provider", "AWS"), ("faas.invoked_name", "fn")],
        &[],
        "aws.fn.invoke",
        None,
        "http",
    ),
    (
        "faas client, no name",
        Kind::Client,
        &[("faas.invoked_provider", "aws")],
        &[],
        "client.request",
        None,
        "http",
    ),
    (
        "faas server",
        Kind::Server,
        &[("faas.trigger", "http")],
        &[],
        "http.invoke",
        None,
        "web",
    ),
    (
        "graphql",
        Kind::Server,
        &[("graphql.operation.type", "query"), ("graphql.operation.name", "Users")],
        &[],
        "graphql.server.request",
        Some("query Users"),
        "web",
    ),
    (
        "graphql internal",
        Kind::Internal,
        &[("graphql.operation.type", "mutation")],
        &[],
        "graphql.server.request",
        Some("mutation"),
        "custom",
    ),
    (
        "generic server with protocol",
        Kind::Server,
        &[("network.protocol.name", "AMQP")],
        &[],
        "amqp.server.request",
        None,
        "web",
    ),
    ("generic server", Kind::Server, &[], &[], "server.request", None, "web"),
    (
        "generic client with protocol",
        Kind::Client,
        &[("network.protocol.name", "http")],
        &[],
        "http.client.request",
        None,
        "http",
    ),
    ("generic client", Kind::Client, &[], &[], "client.request", None, "http"),
    ("internal", Kind::Internal, &[], &[], "internal", None, "custom"),
    ("producer", Kind::Producer, &[], &[], "producer", None, "custom"),
    ("consumer", Kind::Consumer, &[], &[], "consumer", None, "custom"),
    (
        "unspecified is internal",
        Kind::Unspecified,
        &[],
        &[],
        "internal",
        None,
        "custom",
    ),
    (
        "empty values are unset",
        Kind::Server,
        &[
            ("http.request.method", ""),
            ("http.method", "GET"),
            ("operation.name", ""),
        ],
        &[],
        "http.server.request",
        Some("GET"),
        "web",
    ),
    (
        "the span's value before the resource's",
        Kind::Client,
        &[("db.system", "redis")],
        &[("db.system", "mysql")],
        "redis.query",
        None,
        "redis",
    ),
];

#[test]
fn every_rule_for_each_kind_and_key_generation() {
    for (case, kind, span, res, op, res_name, typ) in RULES {
        let a = attrs(span, res);
        assert_eq!(operation_name(*kind, &a).as_str(), *op, "{case}: operation name");
        assert_eq!(
            resource(*kind, &a).as_ref().map(Name::as_str),
            *res_name,
            "{case}: resource"
        );
        assert_eq!(span_type(*kind, &a).as_str(), *typ, "{case}: span type");
    }
}

#[test]
fn gathered_answers_as_a_scan_does() {
    for (case, kind, span, res, op, res_name, typ) in RULES {
        if !res.is_empty() {
            continue; // one list: span attributes only
        }
        let mut g = Gathered::default();
        for (k, v) in *span {
            g.record(k, v);
        }
        assert_eq!(operation_name(*kind, &g).as_str(), *op, "{case}");
        assert_eq!(resource(*kind, &g).as_ref().map(Name::as_str), *res_name, "{case}");
        assert_eq!(span_type(*kind, &g).as_str(), *typ, "{case}");
    }
    let mut g = Gathered::default();
    assert!(g.record("db.system", "redis"));
    assert!(!g.record("db.name", "x"), "a key the rules do not read");
    assert!(g.record("db.system", ""), "a later empty value unsets");
    assert_eq!(g.get(Key::DbSystem), None);
}

#[test]
fn names_borrow_or_stay_static_where_they_can() {
    let span = [("http.request.method", "GET"), ("rpc.method", "M")];
    let a = attrs(&span, &[]);
    assert_eq!(resource(Kind::Client, &a), Some(Name::Static("GET")));
    assert_eq!(operation_name(Kind::Server, &a), Name::Static("http.server.request"));
    let span = [("http.request.method", "PROPFIND")];
    assert!(matches!(
        resource(Kind::Client, &attrs(&span, &[])),
        Some(Name::Attr(Cow::Borrowed("PROPFIND")))
    ));
}

#[test]
fn keys_and_kinds_round_trip() {
    for (i, k) in Key::ALL.iter().enumerate() {
        assert_eq!(*k as usize, i);
        assert_eq!(Key::from_name(k.name()), Some(*k));
    }
    assert_eq!(Key::from_name("db.name"), None);
    let kinds = (0..=6).map(Kind::from_otlp).map(Kind::name).collect::<Vec<_>>();
    assert_eq!(
        kinds,
        [
            "unspecified",
            "internal",
            "server",
            "client",
            "producer",
            "consumer",
            "unspecified"
        ]
    );
}
