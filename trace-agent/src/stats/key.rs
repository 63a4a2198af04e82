//! Aggregation keys (spec 6.2): which group a span counts into, derived from the span in one
//! pass over its meta and metrics without copying strings ([`GroupKeyRef`]); a group stores the
//! owned [`GroupKey`] once.
//!
//! Group dimensions: service, name, resource, type, `span.kind`, HTTP status code (metric
//! `http.status_code`, else meta; then the OTel `http.response.status_code`), synthetics (chunk
//! origin `synthetics*`), is-trace-root (`parent_id == 0`), gRPC status code (`rpc.grpc.status_code`,
//! `grpc.code`, `rpc.grpc.status.code`, `grpc.status.code`; numbers or names such as
//! `NOT_FOUND` / `StatusCode.NOT_FOUND`), peer tags, `_dd.svc_src`, HTTP method (`http.method`,
//! else `http.request.method`) and endpoint (`http.endpoint`, else `http.route`).
//!
//! Peer tags (when aggregation is on): for `span.kind` client/producer/consumer every configured
//! key present with a non-empty value, as `key:value` with IP addresses quantized, in key order;
//! for an internal or kind-less span with `_dd.base_service`, only that tag.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use libdd_trace_obfuscation::ip_address::quantize_peer_ip_addresses;
use libdd_trace_protobuf::pb;

use crate::span::Span;

use apm_conventions::stats::{BASE_SERVICE, KeyMetrics, KeyTags};

/// Value of every string field of the overflow group that collects spans past the cardinality
/// cap (the sentinel libdatadog's tracer-side concentrator uses for the same purpose).
pub const OVERFLOW_VALUE: &str = "tracer_blocked_value";

/// Default peer-tag keys (spec 6.2, the precursors of the Go agent's `peer_tags.ini`).
pub const DEFAULT_PEER_TAGS: &[&str] = &[
    "_dd.base_service",
    "amqp.destination",
    "amqp.exchange",
    "amqp.queue",
    "aws.queue.name",
    "bucketname",
    "cassandra.keyspace",
    "db.cassandra.contact.points",
    "db.couchbase.seed.nodes",
    "db.hostname",
    "db.instance",
    "db.name",
    "db.system",
    "grpc.host",
    "hostname",
    "http.host",
    "messaging.destination",
    "messaging.destination.name",
    "messaging.kafka.bootstrap.servers",
    "messaging.rabbitmq.exchange",
    "messaging.system",
    "mongodb.db",
    "msmq.queue.path",
    "net.peer.name",
    "network.destination.name",
    "out.host",
    "peer.cluster.name",
    "peer.hostname",
    "peer.service",
    "queuename",
    "rpc.service",
    "rpc.system",
    "server.address",
    "streamname",
    "tablename",
    "topicname",
];

/// `IsTraceRoot` values (`pb::Trilean`).
pub const TRILEAN_TRUE: i32 = 1;
/// `IsTraceRoot` false.
pub const TRILEAN_FALSE: i32 = 2;

/// One peer tag of a span: configured key and (quantized) value.
pub type PeerTag<'a> = (&'a str, Cow<'a, str>);

/// An aggregation key, generic over how its strings are held: [`GroupKeyRef`] borrows them from
/// a span (peer-tag values may be quantized copies), [`GroupKey`] owns them and is stored once
/// per group. One definition, so hashing and equality cannot drift between the two forms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GroupKey<S = String, P = S> {
    /// Service.
    pub service: S,
    /// Operation name.
    pub name: S,
    /// Resource (obfuscated).
    pub resource: S,
    /// Span type.
    pub span_type: S,
    /// `span.kind` as sent.
    pub span_kind: S,
    /// HTTP method.
    pub http_method: S,
    /// HTTP endpoint (route).
    pub http_endpoint: S,
    /// `_dd.svc_src`.
    pub service_source: S,
    /// HTTP status code (0: none).
    pub http_status_code: u32,
    /// gRPC status code.
    pub grpc_status_code: Option<u32>,
    /// Chunk origin starts with `synthetics`.
    pub synthetics: bool,
    /// `pb::Trilean`: 1 root, 2 not root, 0 unknown (client stats of old tracers).
    pub is_trace_root: i32,
    /// Peer tags `(key, value)` in key order.
    pub peer_tags: Vec<(S, P)>,
}

/// A group key borrowed from a span (or a client group).
pub type GroupKeyRef<'a> = GroupKey<&'a str, Cow<'a, str>>;

impl<S: AsRef<str>, P: AsRef<str>> GroupKey<S, P> {
    /// Hashes resource, name and service in full, the rest through their lengths and values
    /// packed in one word (equality decides; hashing fewer bytes is what makes a lookup cheap).
    /// The same for every string form.
    pub fn hash_fields<H: Hasher>(&self, h: &mut H) {
        hash_key(
            h,
            [self.resource.as_ref(), self.name.as_ref(), self.service.as_ref()],
            [
                self.span_type.as_ref().len(),
                self.span_kind.as_ref().len(),
                self.http_method.as_ref().len(),
                self.http_endpoint.as_ref().len(),
                self.service_source.as_ref().len(),
                self.peer_tags.len(),
            ],
            (
                self.http_status_code,
                self.grpc_status_code,
                self.synthetics,
                self.is_trace_root,
            ),
        );
    }

    /// Field-by-field equality with a key in another string form.
    pub fn matches<T: AsRef<str>, Q: AsRef<str>>(&self, k: &GroupKey<T, Q>) -> bool {
        self.http_status_code == k.http_status_code
            && self.grpc_status_code == k.grpc_status_code
            && self.synthetics == k.synthetics
            && self.is_trace_root == k.is_trace_root
            && self.resource.as_ref() == k.resource.as_ref()
            && self.name.as_ref() == k.name.as_ref()
            && self.service.as_ref() == k.service.as_ref()
            && self.span_type.as_ref() == k.span_type.as_ref()
            && self.span_kind.as_ref() == k.span_kind.as_ref()
            && self.http_method.as_ref() == k.http_method.as_ref()
            && self.http_endpoint.as_ref() == k.http_endpoint.as_ref()
            && self.service_source.as_ref() == k.service_source.as_ref()
            && self.peer_tags.len() == k.peer_tags.len()
            && self
                .peer_tags
                .iter()
                .zip(&k.peer_tags)
                .all(|((a, b), (c, d))| a.as_ref() == c.as_ref() && b.as_ref() == d.as_ref())
    }

    /// The owned copy.
    pub fn to_owned_key(&self) -> GroupKey {
        self.map(|s| s.to_owned(), |s| s.to_owned())
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> GroupKeyRef<'_> {
        self.map(|s| s, Cow::Borrowed)
    }

    /// The key with every string converted.
    fn map<'s, T, Q>(&'s self, f: impl Fn(&'s str) -> T, g: impl Fn(&'s str) -> Q) -> GroupKey<T, Q> {
        GroupKey {
            service: f(self.service.as_ref()),
            name: f(self.name.as_ref()),
            resource: f(self.resource.as_ref()),
            span_type: f(self.span_type.as_ref()),
            span_kind: f(self.span_kind.as_ref()),
            http_method: f(self.http_method.as_ref()),
            http_endpoint: f(self.http_endpoint.as_ref()),
            service_source: f(self.service_source.as_ref()),
            http_status_code: self.http_status_code,
            grpc_status_code: self.grpc_status_code,
            synthetics: self.synthetics,
            is_trace_root: self.is_trace_root,
            peer_tags: self
                .peer_tags
                .iter()
                .map(|(k, v)| (f(k.as_ref()), g(v.as_ref())))
                .collect(),
        }
    }

    /// The exported `ClientGroupedStats` with this key and no counts.
    pub fn to_grouped_stats(&self) -> pb::ClientGroupedStats {
        let s = |v: &S| v.as_ref().to_owned();
        pb::ClientGroupedStats {
            service: s(&self.service),
            name: s(&self.name),
            resource: s(&self.resource),
            http_status_code: self.http_status_code,
            r#type: s(&self.span_type),
            span_kind: s(&self.span_kind),
            peer_tags: self
                .peer_tags
                .iter()
                .map(|(k, v)| format!("{}:{}", k.as_ref(), v.as_ref()))
                .collect(),
            is_trace_root: self.is_trace_root,
            grpc_status_code: self.grpc_status_code.map(|c| c.to_string()).unwrap_or_default(),
            http_method: s(&self.http_method),
            http_endpoint: s(&self.http_endpoint),
            service_source: s(&self.service_source),
            synthetics: self.synthetics,
            ..Default::default()
        }
    }
}

impl GroupKeyRef<'_> {
    /// The key of the overflow group.
    pub fn overflow() -> GroupKeyRef<'static> {
        GroupKey {
            service: OVERFLOW_VALUE,
            name: OVERFLOW_VALUE,
            resource: OVERFLOW_VALUE,
            span_type: OVERFLOW_VALUE,
            span_kind: OVERFLOW_VALUE,
            http_method: OVERFLOW_VALUE,
            http_endpoint: OVERFLOW_VALUE,
            service_source: OVERFLOW_VALUE,
            http_status_code: 0,
            grpc_status_code: None,
            synthetics: false,
            is_trace_root: 0,
            peer_tags: Vec::new(),
        }
    }

    /// The key of a client-computed group (`peer_tags` only when peer aggregation is on).
    pub fn from_client_group(g: &pb::ClientGroupedStats, with_peer_tags: bool) -> GroupKeyRef<'_> {
        GroupKey {
            service: &g.service,
            name: &g.name,
            resource: &g.resource,
            span_type: &g.r#type,
            span_kind: &g.span_kind,
            http_method: &g.http_method,
            http_endpoint: &g.http_endpoint,
            service_source: &g.service_source,
            http_status_code: g.http_status_code,
            grpc_status_code: g.grpc_status_code.trim().parse().ok(),
            synthetics: g.synthetics,
            is_trace_root: g.is_trace_root,
            peer_tags: if with_peer_tags {
                g.peer_tags
                    .iter()
                    .map(|t| {
                        let (k, v) = t.split_once(':').unwrap_or((t.as_str(), ""));
                        (k, Cow::Borrowed(v))
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

impl<S: AsRef<str> + Eq, P: AsRef<str> + Eq> Hash for GroupKey<S, P> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash_fields(state);
    }
}

fn hash_key<H: Hasher>(h: &mut H, strs: [&str; 3], lens: [usize; 6], scalars: (u32, Option<u32>, bool, i32)) {
    for s in strs {
        h.write(s.as_bytes());
    }
    let (status, grpc, synthetics, root) = scalars;
    let mut packed: u64 = (strs[0].len() as u64) << 48 ^ (strs[1].len() as u64) << 32 ^ u64::from(status);
    for (i, l) in lens.iter().enumerate() {
        packed ^= ((*l as u64) & 0xff) << (16 + 8 * (i % 4));
    }
    h.write_u64(packed);
    h.write_u64(u64::from(grpc.map_or(u32::MAX, |g| g)) << 8 | u64::from(synthetics) << 4 | (root as u64 & 0xf));
}

/// A payload key (spec 6.2 "per-payload"), generic over how its strings are held like
/// [`GroupKey`]: [`PayloadKeyRef`] borrows from a tracer payload, `PayloadKey` owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PayloadKey<S = String> {
    /// Env (tracer env, else agent env).
    pub env: S,
    /// Hostname (tracer hostname, else agent hostname).
    pub hostname: S,
    /// Application version.
    pub version: S,
    /// Container id (only as a configured dimension).
    pub container_id: S,
    /// Git commit sha.
    pub git_commit_sha: S,
    /// Image tag.
    pub image_tag: S,
    /// Tracer language.
    pub lang: S,
    /// Process tags.
    pub process_tags: S,
}

/// A payload key borrowed from a tracer payload.
pub type PayloadKeyRef<'a> = PayloadKey<&'a str>;

impl<S: AsRef<str>> PayloadKey<S> {
    /// The key with every string converted.
    fn map<'s, T>(&'s self, f: impl Fn(&'s str) -> T) -> PayloadKey<T> {
        PayloadKey {
            env: f(self.env.as_ref()),
            hostname: f(self.hostname.as_ref()),
            version: f(self.version.as_ref()),
            container_id: f(self.container_id.as_ref()),
            git_commit_sha: f(self.git_commit_sha.as_ref()),
            image_tag: f(self.image_tag.as_ref()),
            lang: f(self.lang.as_ref()),
            process_tags: f(self.process_tags.as_ref()),
        }
    }

    /// The owned copy.
    pub fn to_owned_key(&self) -> PayloadKey {
        self.map(str::to_owned)
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> PayloadKeyRef<'_> {
        self.map(|s| s)
    }

    /// Field-by-field equality with a key in another string form.
    pub fn matches<T: AsRef<str>>(&self, k: &PayloadKey<T>) -> bool {
        self.as_ref() == k.as_ref()
    }

    /// A `ClientStatsPayload` with this key and no buckets.
    pub fn to_client_payload(&self) -> pb::ClientStatsPayload {
        let k = self.map(str::to_owned);
        pb::ClientStatsPayload {
            env: k.env,
            hostname: k.hostname,
            version: k.version,
            container_id: k.container_id,
            git_commit_sha: k.git_commit_sha,
            image_tag: k.image_tag,
            lang: k.lang,
            process_tags: k.process_tags,
            ..Default::default()
        }
    }
}

/// What the concentrator needs from one span, or `None` when the span is not eligible.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanStats<'a> {
    /// The group key.
    pub key: GroupKeyRef<'a>,
    /// `_top_level` / `_dd.top_level` is 1.
    pub top_level: bool,
    /// `error != 0`.
    pub error: bool,
}

/// Eligibility (spec 6.1) and key (6.2) of `span` in one pass over its tags.
///
/// Eligible: top-level or measured, or (with `by_span_kind`) a server/client/producer/consumer
/// `span.kind`; never a partial snapshot (`_dd.partial_version ≥ 0`). `peer_keys` must be sorted
/// (empty: peer-tag aggregation off).
pub fn span_stats<'a>(
    span: &'a Span<'a>,
    synthetics: bool,
    by_span_kind: bool,
    peer_keys: &[String],
) -> Option<SpanStats<'a>> {
    let mut top_level = false;
    let mut measured = false;
    let mut metrics = KeyMetrics::default();
    for (k, v) in &span.metrics {
        match k.as_str() {
            "_top_level" | "_dd.top_level" => top_level |= *v == 1.0,
            "_dd.measured" => measured = *v == 1.0,
            "_dd.partial_version" if *v >= 0.0 => return None,
            other => metrics.offer(other, *v),
        }
    }
    // Eligibility first: most spans of a trace are neither top-level nor measured, and only
    // `span.kind` is needed to rule them out.
    let kind = span.meta("span.kind").unwrap_or("");
    let kind_lower = KindClass::of(kind);
    let counted_kind = matches!(
        kind_lower,
        KindClass::Server | KindClass::Client | KindClass::Producer | KindClass::Consumer
    );
    if !(top_level || measured || (by_span_kind && counted_kind)) {
        return None;
    }
    // Meta, last occurrence wins (as lookups do).
    let mut tags = KeyTags::default();
    let mut peer: Vec<(&'a str, &'a str)> = Vec::new();
    let peer_kind = matches!(
        kind_lower,
        KindClass::Client | KindClass::Producer | KindClass::Consumer
    );
    let want_peers = !peer_keys.is_empty() && peer_kind;
    for (k, v) in &span.meta {
        let (k, v): (&'a str, &'a str) = (k.as_str(), v.as_str());
        tags.offer(k, v);
        if want_peers && peer_keys.binary_search_by(|p| p.as_str().cmp(k)).is_ok() {
            peer.push((k, v));
        }
    }
    let base_service = tags.base_service;
    let peer_tags = if peer_keys.is_empty() {
        Vec::new()
    } else if matches!(
        kind_lower,
        KindClass::Client | KindClass::Producer | KindClass::Consumer
    ) {
        // Key order, last value of a repeated key, non-empty values only.
        peer.reverse();
        peer.sort_by(|a, b| a.0.cmp(b.0));
        peer.dedup_by(|a, b| a.0 == b.0);
        peer.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, quantize_peer_ip_addresses(v)))
            .collect()
    } else if matches!(kind_lower, KindClass::Internal | KindClass::Empty) && !base_service.is_empty() {
        vec![(BASE_SERVICE, quantize_peer_ip_addresses(base_service))]
    } else {
        Vec::new()
    };
    Some(SpanStats {
        key: GroupKeyRef {
            service: &span.service,
            name: &span.name,
            resource: &span.resource,
            span_type: &span.r#type,
            span_kind: kind,
            http_method: tags.http_method(),
            http_endpoint: tags.http_endpoint(),
            service_source: tags.service_source,
            http_status_code: tags.http_status_code(&metrics),
            grpc_status_code: tags.grpc_status_code(&metrics),
            synthetics,
            is_trace_root: if span.parent_id == 0 {
                TRILEAN_TRUE
            } else {
                TRILEAN_FALSE
            },
            peer_tags,
        },
        top_level,
        error: span.error != 0,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindClass {
    Server,
    Client,
    Producer,
    Consumer,
    Internal,
    Empty,
    Other,
}

impl KindClass {
    fn of(kind: &str) -> Self {
        if kind.is_empty() {
            Self::Empty
        } else if kind.eq_ignore_ascii_case("server") {
            Self::Server
        } else if kind.eq_ignore_ascii_case("client") {
            Self::Client
        } else if kind.eq_ignore_ascii_case("producer") {
            Self::Producer
        } else if kind.eq_ignore_ascii_case("consumer") {
            Self::Consumer
        } else if kind.eq_ignore_ascii_case("internal") {
            Self::Internal
        } else {
            Self::Other
        }
    }
}

/// FNV-1a 64 of the peer tags joined by `\0` (Go `peerTagsHash`), 0 for none.
pub fn peer_tags_hash(tags: &[String]) -> u64 {
    if tags.is_empty() {
        return 0;
    }
    let mut sorted: Vec<&str> = tags.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for (i, t) in sorted.iter().enumerate() {
        if i > 0 {
            eat(0);
        }
        t.bytes().for_each(&mut eat);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Str;

    fn span<'a>(meta: &[(&'a str, &'a str)], metrics: &[(&'a str, f64)]) -> Span<'a> {
        Span {
            service: Str::borrowed("svc"),
            name: Str::borrowed("op"),
            resource: Str::borrowed("res"),
            r#type: Str::borrowed("web"),
            parent_id: 5,
            meta: meta.iter().map(|(k, v)| (Str::borrowed(k), Str::borrowed(v))).collect(),
            metrics: metrics.iter().map(|(k, v)| (Str::borrowed(k), *v)).collect(),
            ..Default::default()
        }
    }

    fn keys() -> Vec<String> {
        crate::stats::StatsConfig::default().peer_tag_keys()
    }

    #[test]
    fn eligibility() {
        let k = keys();
        let eligible = |s: &Span<'_>, by_kind: bool| span_stats(s, false, by_kind, &k).is_some();
        assert!(!eligible(&span(&[], &[]), true));
        assert!(eligible(&span(&[], &[("_top_level", 1.0)]), true));
        assert!(eligible(&span(&[], &[("_dd.top_level", 1.0)]), true));
        assert!(!eligible(&span(&[], &[("_top_level", 0.0)]), true));
        assert!(eligible(&span(&[], &[("_dd.measured", 1.0)]), true));
        for kind in ["server", "CLIENT", "Producer", "consumer"] {
            assert!(eligible(&span(&[("span.kind", kind)], &[]), true), "{kind}");
            assert!(
                !eligible(&span(&[("span.kind", kind)], &[]), false),
                "{kind} without by-kind"
            );
        }
        assert!(!eligible(&span(&[("span.kind", "internal")], &[]), true));
        assert!(!eligible(
            &span(&[], &[("_top_level", 1.0), ("_dd.partial_version", 0.0)]),
            true
        ));
        assert!(!eligible(
            &span(&[("span.kind", "server")], &[("_dd.partial_version", 3.0)]),
            true
        ));
        assert!(eligible(
            &span(&[], &[("_top_level", 1.0), ("_dd.partial_version", -1.0)]),
            true
        ));
        let server = span(&[("span.kind", "server")], &[]);
        assert!(!span_stats(&server, false, true, &k).unwrap().top_level);
    }

    #[test]
    fn key_fields() {
        let k = keys();
        let s = span(
            &[
                ("span.kind", "client"),
                ("http.method", "GET"),
                ("http.route", "/users/{id}"),
                ("http.status_code", "404"),
                ("grpc.code", "StatusCode.NOT_FOUND"),
                ("_dd.svc_src", "opt.integration"),
                ("peer.service", "users-db"),
                ("out.host", "10.1.2.3"),
                ("db.name", ""),
                ("not.a.peer.tag", "x"),
            ],
            &[("_top_level", 1.0)],
        );
        let st = span_stats(&s, true, true, &k).unwrap();
        let key = st.key;
        assert_eq!(key.http_method, "GET");
        assert_eq!(key.http_endpoint, "/users/{id}");
        assert_eq!(key.http_status_code, 404);
        assert_eq!(key.grpc_status_code, Some(5));
        assert_eq!(key.service_source, "opt.integration");
        assert!(key.synthetics);
        assert_eq!(key.is_trace_root, TRILEAN_FALSE);
        let tags: Vec<(&str, &str)> = key.peer_tags.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        assert_eq!(
            tags,
            vec![("out.host", "blocked-ip-address"), ("peer.service", "users-db")]
        );
        let exported = key.to_owned_key().to_grouped_stats();
        assert_eq!(
            exported.peer_tags,
            vec!["out.host:blocked-ip-address", "peer.service:users-db"]
        );
        assert_eq!(exported.grpc_status_code, "5");
        assert!(key.matches(&key.to_owned_key()));
    }

    #[test]
    fn status_code_sources() {
        let k = keys();
        let code = |meta: &[(&str, &str)], metrics: &[(&str, f64)]| {
            let mut metrics = metrics.to_vec();
            metrics.push(("_top_level", 1.0));
            span_stats(&span(meta, &metrics), false, true, &k)
                .unwrap()
                .key
                .http_status_code
        };
        assert_eq!(
            code(&[("http.status_code", "500")], &[("http.status_code", 201.0)]),
            201
        );
        assert_eq!(code(&[("http.status_code", "abc")], &[]), 0);
        assert_eq!(code(&[("http.response.status_code", "503")], &[]), 503);
        assert_eq!(code(&[("http.response.status_code", "42")], &[]), 0);
        assert_eq!(code(&[], &[("http.response.status_code", 302.0)]), 302);
        assert_eq!(code(&[], &[]), 0);
    }

    #[test]
    fn peer_tags_by_kind() {
        let k = keys();
        let tags = |meta: &[(&str, &str)]| -> Vec<String> {
            let mut meta = meta.to_vec();
            meta.push(("peer.service", "p"));
            let s = span(&meta, &[("_top_level", 1.0)]);
            let st = span_stats(&s, false, true, &k).unwrap();
            st.key.to_owned_key().to_grouped_stats().peer_tags
        };
        assert_eq!(tags(&[("span.kind", "server")]), Vec::<String>::new());
        assert_eq!(
            tags(&[("span.kind", "producer"), ("db.system", "kafka")]),
            vec!["db.system:kafka", "peer.service:p"]
        );
        assert_eq!(tags(&[("_dd.base_service", "base")]), vec!["_dd.base_service:base"]);
        assert_eq!(
            tags(&[("span.kind", "internal"), ("_dd.base_service", "base")]),
            vec!["_dd.base_service:base"]
        );
        assert_eq!(
            tags(&[("span.kind", "server"), ("_dd.base_service", "base")]),
            Vec::<String>::new()
        );
        // Off: nothing at all.
        let s = span(
            &[("span.kind", "client"), ("peer.service", "p")],
            &[("_top_level", 1.0)],
        );
        assert!(span_stats(&s, false, true, &[]).unwrap().key.peer_tags.is_empty());
    }

    #[test]
    fn grpc_code_from_a_metric_when_the_string_does_not_parse() {
        // (The code parsers' own cases are in apm_conventions::grpc; this is the key's use of them.)
        let k = keys();
        let s = span(
            &[("grpc.code", "weird")],
            &[("_top_level", 1.0), ("grpc.status.code", 14.0)],
        );
        assert_eq!(span_stats(&s, false, true, &k).unwrap().key.grpc_status_code, Some(14));
    }

    #[test]
    fn fnv_hash_matches_go() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (reference value of the algorithm).
        assert_eq!(peer_tags_hash(&["a".to_owned()]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(peer_tags_hash(&[]), 0);
        let ab = peer_tags_hash(&["b:2".to_owned(), "a:1".to_owned()]);
        assert_eq!(ab, peer_tags_hash(&["a:1".to_owned(), "b:2".to_owned()]));
    }
}
