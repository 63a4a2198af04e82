use super::*;
use crate::span::{SpanId, Str, TraceId};

const T0: i64 = 1_700_000_000_000_000_000; // a multiple of 10 s

fn span(resource: &str, start: i64, duration: i64) -> SpanData {
    let mut s = SpanData::new(
        TraceId::from_u128(1),
        SpanId::from_u64(2),
        SpanId::from_u64(0),
        Str::from("http.request"),
    );
    s.resource = Some(Str::from(resource.to_owned()));
    s.start = start;
    s.duration = duration;
    s.top_level = true;
    s
}

#[test]
fn groups_by_key_and_bucket_by_end_time() {
    let mut c = Concentrator::default();
    let mut a = span("GET /a", T0, 5_000);
    a.push_meta(Str::from("http.status_code"), Str::from("200"));
    a.push_meta(Str::from("span.kind"), Str::from("server"));
    a.push_meta(Str::from("http.method"), Str::from("GET"));
    a.push_meta(Str::from("http.route"), Str::from("/a"));
    c.add(&a, "svc", false, T0);
    c.add(&a, "svc", false, T0);
    let mut err = a.clone();
    err.error = true;
    c.add(&err, "svc", false, T0);
    // Ends in the next bucket.
    c.add(&span("GET /a", T0 + BUCKET_NS - 1, 2), "svc", false, T0 + BUCKET_NS);
    // Not eligible: neither top-level nor measured.
    let mut inner = span("inner", T0, 1);
    inner.top_level = false;
    c.add(&inner, "svc", false, T0);
    assert_eq!(c.spans(), 4);

    assert!(c.flush(T0 + 1, false).is_empty(), "the current bucket stays open");
    let out = c.flush(T0 + BUCKET_NS, false);
    assert_eq!(out.len(), 1);
    let b = &out[0];
    assert_eq!(b.start, T0);
    assert_eq!(b.groups.len(), 1);
    let (k, g) = &b.groups[0];
    assert_eq!(
        (
            k.service.as_str(),
            k.resource.as_str(),
            k.http_status_code,
            k.span_kind.as_str()
        ),
        ("svc", "GET /a", 200, "server")
    );
    assert_eq!(
        (k.http_method.as_str(), k.http_endpoint.as_str(), k.is_trace_root),
        ("GET", "/a", true)
    );
    assert_eq!((g.hits, g.errors, g.top_level_hits, g.duration), (3, 1, 3, 15_000));
    assert_eq!((g.ok.count(), g.error.count()), (2.0, 1.0));
    let rest = c.flush(T0 + BUCKET_NS, true);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].start, T0 + BUCKET_NS);
    assert!(c.is_empty());
}

#[test]
fn late_and_future_spans_go_to_open_buckets() {
    let mut c = Concentrator::default();
    let _ = c.flush(T0 + 2 * BUCKET_NS, false);
    c.add(&span("late", T0, 1), "svc", false, T0 + 2 * BUCKET_NS);
    c.add(
        &span("future", T0 + 100 * BUCKET_NS, 1),
        "svc",
        false,
        T0 + 2 * BUCKET_NS,
    );
    let out = c.flush(T0 + 3 * BUCKET_NS, false);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start, T0 + 2 * BUCKET_NS);
    assert_eq!(out[0].groups.len(), 2);
}

#[test]
fn key_dimensions() {
    let settings = StatsSettings {
        peer_tag_keys: vec!["db.instance".into(), "out.host".into(), "peer.service".into()],
        span_kinds: vec!["client".into()],
    };
    let mut s = span("SELECT", T0, 1);
    s.top_level = false;
    s.service = Some(Str::from("pg"));
    for (k, v) in [
        ("span.kind", "client"),
        ("out.host", "old"),
        ("out.host", "db1"),
        ("peer.service", ""),
        ("db.instance", "main"),
        ("grpc.code", "NOT_FOUND"),
        ("_dd.svc_src", "m"),
    ] {
        s.push_meta(Str::from(k), Str::from(v));
    }
    s.push_metric(Str::from("http.response.status_code"), 404.0);
    s.parent_id = SpanId::from_u64(9);
    let c = Concentrator::new(settings.clone());
    assert!(c.eligible(&s), "client spans count when the agent lists the kind");
    let k = key_of(&s, "svc", true, &settings.peer_tag_keys).to_owned_key();
    assert_eq!(k.service, "pg");
    assert_eq!(k.peer_tags, ["db.instance:main", "out.host:db1"]);
    assert_eq!(k.grpc_status_code, "5");
    assert_eq!(k.http_status_code, 404);
    assert!(k.synthetics && !k.is_trace_root);
    assert_eq!(k.service_source, "m");
    assert!(key_of(&s, "svc", true, &settings.peer_tag_keys).matches(&k));
    assert!(!key_of(&s, "svc", false, &settings.peer_tag_keys).matches(&k));
    assert!(!Concentrator::default().eligible(&s));
}

#[test]
fn groups_past_the_cap_go_to_the_overflow_group() {
    let mut c = Concentrator::default();
    for i in 0..MAX_GROUPS + 5 {
        c.add(&span(&format!("r{i}"), T0, 1), "svc", false, T0);
    }
    c.add(&span("r0", T0, 1), "svc", false, T0);
    let out = c.flush(T0, true);
    let groups = &out[0].groups;
    assert_eq!(groups.len(), MAX_GROUPS + 1);
    let overflow = groups
        .iter()
        .find(|(k, _)| k.resource == OVERFLOW_VALUE)
        .map(|(_, g)| g.hits);
    assert_eq!(overflow, Some(5));
    let r0 = groups.iter().find(|(k, _)| k.resource == "r0").map(|(_, g)| g.hits);
    assert_eq!(r0, Some(2), "known keys still count into their own group");
}

#[test]
fn payload_is_msgpack_with_the_go_field_names() {
    let mut c = Concentrator::default();
    c.add(&span("GET /a", T0, 1_000_000), "svc", false, T0);
    let out = c.flush(T0, true);
    let id = PayloadIdentity {
        service: "svc".into(),
        env: "prod".into(),
        version: "1".into(),
        runtime_id: "rid".into(),
        tracer_version: "0.1.0".into(),
    };
    let body = encode_payload(&id, &out, 3);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Payload {
        env: String,
        sequence: u64,
        lang: String,
        stats: Vec<Bucket>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Bucket {
        start: i64,
        stats: Vec<Group>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Group {
        resource: String,
        hits: u64,
        is_trace_root: i32,
        #[serde(rename = "HTTPStatusCode")]
        http_status_code: u32,
    }
    let p: Payload = rmp_serde::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.env.as_str(), p.sequence, p.lang.as_str()), ("prod", 3, "rust"));
    assert_eq!(p.stats[0].start, T0);
    let g = &p.stats[0].stats[0];
    assert_eq!(
        (g.resource.as_str(), g.hits, g.is_trace_root, g.http_status_code),
        ("GET /a", 1, 1, 0)
    );
}
