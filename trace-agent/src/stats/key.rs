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

const BASE_SERVICE: &str = "_dd.base_service";

/// One peer tag of a span: configured key and (quantized) value.
pub type PeerTag<'a> = (&'a str, Cow<'a, str>);

/// A group key borrowed from a span (or a client group).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupKeyRef<'a> {
    /// Service.
    pub service: &'a str,
    /// Operation name.
    pub name: &'a str,
    /// Resource (obfuscated).
    pub resource: &'a str,
    /// Span type.
    pub span_type: &'a str,
    /// `span.kind` as sent.
    pub span_kind: &'a str,
    /// HTTP method.
    pub http_method: &'a str,
    /// HTTP endpoint (route).
    pub http_endpoint: &'a str,
    /// `_dd.svc_src`.
    pub service_source: &'a str,
    /// HTTP status code (0: none).
    pub http_status_code: u32,
    /// gRPC status code.
    pub grpc_status_code: Option<u32>,
    /// Chunk origin starts with `synthetics`.
    pub synthetics: bool,
    /// `pb::Trilean`: 1 root, 2 not root, 0 unknown (client stats of old tracers).
    pub is_trace_root: i32,
    /// Peer tags in key order.
    pub peer_tags: Vec<PeerTag<'a>>,
}

/// The owned form of [`GroupKeyRef`], stored once per group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GroupKey {
    /// Service.
    pub service: String,
    /// Operation name.
    pub name: String,
    /// Resource.
    pub resource: String,
    /// Span type.
    pub span_type: String,
    /// `span.kind`.
    pub span_kind: String,
    /// HTTP method.
    pub http_method: String,
    /// HTTP endpoint.
    pub http_endpoint: String,
    /// `_dd.svc_src`.
    pub service_source: String,
    /// HTTP status code.
    pub http_status_code: u32,
    /// gRPC status code.
    pub grpc_status_code: Option<u32>,
    /// Synthetics.
    pub synthetics: bool,
    /// `pb::Trilean`.
    pub is_trace_root: i32,
    /// Peer tags `(key, value)`.
    pub peer_tags: Vec<(String, String)>,
}

impl GroupKeyRef<'_> {
    /// Hashes the fields the same way as [`GroupKey::hash_fields`].
    pub fn hash_fields<H: Hasher>(&self, h: &mut H) {
        hash_common(
            h,
            [
                self.service,
                self.name,
                self.resource,
                self.span_type,
                self.span_kind,
                self.http_method,
                self.http_endpoint,
                self.service_source,
            ],
            (
                self.http_status_code,
                self.grpc_status_code,
                self.synthetics,
                self.is_trace_root,
            ),
        );
        for (k, v) in &self.peer_tags {
            h.write(k.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
    }

    /// Field-by-field equality with a stored key.
    pub fn matches(&self, k: &GroupKey) -> bool {
        self.http_status_code == k.http_status_code
            && self.grpc_status_code == k.grpc_status_code
            && self.synthetics == k.synthetics
            && self.is_trace_root == k.is_trace_root
            && self.resource == k.resource
            && self.name == k.name
            && self.service == k.service
            && self.span_type == k.span_type
            && self.span_kind == k.span_kind
            && self.http_method == k.http_method
            && self.http_endpoint == k.http_endpoint
            && self.service_source == k.service_source
            && self.peer_tags.len() == k.peer_tags.len()
            && self
                .peer_tags
                .iter()
                .zip(&k.peer_tags)
                .all(|((a, b), (c, d))| *a == c.as_str() && b.as_ref() == d.as_str())
    }

    /// The owned copy.
    pub fn to_owned_key(&self) -> GroupKey {
        GroupKey {
            service: self.service.to_owned(),
            name: self.name.to_owned(),
            resource: self.resource.to_owned(),
            span_type: self.span_type.to_owned(),
            span_kind: self.span_kind.to_owned(),
            http_method: self.http_method.to_owned(),
            http_endpoint: self.http_endpoint.to_owned(),
            service_source: self.service_source.to_owned(),
            http_status_code: self.http_status_code,
            grpc_status_code: self.grpc_status_code,
            synthetics: self.synthetics,
            is_trace_root: self.is_trace_root,
            peer_tags: self
                .peer_tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone().into_owned()))
                .collect(),
        }
    }

    /// The key of the overflow group.
    pub fn overflow() -> GroupKeyRef<'static> {
        GroupKeyRef {
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
        GroupKeyRef {
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

impl GroupKey {
    /// Hashes the fields the same way as [`GroupKeyRef::hash_fields`].
    pub fn hash_fields<H: Hasher>(&self, h: &mut H) {
        self.as_ref().hash_fields(h);
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> GroupKeyRef<'_> {
        GroupKeyRef {
            service: &self.service,
            name: &self.name,
            resource: &self.resource,
            span_type: &self.span_type,
            span_kind: &self.span_kind,
            http_method: &self.http_method,
            http_endpoint: &self.http_endpoint,
            service_source: &self.service_source,
            http_status_code: self.http_status_code,
            grpc_status_code: self.grpc_status_code,
            synthetics: self.synthetics,
            is_trace_root: self.is_trace_root,
            peer_tags: self
                .peer_tags
                .iter()
                .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                .collect(),
        }
    }

    /// The exported `ClientGroupedStats` with this key and no counts.
    pub fn to_grouped_stats(&self) -> pb::ClientGroupedStats {
        pb::ClientGroupedStats {
            service: self.service.clone(),
            name: self.name.clone(),
            resource: self.resource.clone(),
            http_status_code: self.http_status_code,
            r#type: self.span_type.clone(),
            span_kind: self.span_kind.clone(),
            peer_tags: self.peer_tags.iter().map(|(k, v)| format!("{k}:{v}")).collect(),
            is_trace_root: self.is_trace_root,
            grpc_status_code: self.grpc_status_code.map(|c| c.to_string()).unwrap_or_default(),
            http_method: self.http_method.clone(),
            http_endpoint: self.http_endpoint.clone(),
            service_source: self.service_source.clone(),
            synthetics: self.synthetics,
            ..Default::default()
        }
    }
}

impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash_fields(state);
    }
}

fn hash_common<H: Hasher>(h: &mut H, strs: [&str; 8], scalars: (u32, Option<u32>, bool, i32)) {
    for s in strs {
        h.write(s.as_bytes());
        h.write_u8(0xff);
    }
    scalars.hash(h);
}

/// A payload key borrowed from a tracer payload (spec 6.2 "per-payload").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PayloadKeyRef<'a> {
    /// Env (tracer env, else agent env).
    pub env: &'a str,
    /// Hostname (tracer hostname, else agent hostname).
    pub hostname: &'a str,
    /// Application version.
    pub version: &'a str,
    /// Container id (only as a configured dimension).
    pub container_id: &'a str,
    /// Git commit sha.
    pub git_commit_sha: &'a str,
    /// Image tag.
    pub image_tag: &'a str,
    /// Tracer language.
    pub lang: &'a str,
    /// Process tags.
    pub process_tags: &'a str,
}

/// The owned form of [`PayloadKeyRef`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PayloadKey {
    /// Env.
    pub env: String,
    /// Hostname.
    pub hostname: String,
    /// Version.
    pub version: String,
    /// Container id.
    pub container_id: String,
    /// Git commit sha.
    pub git_commit_sha: String,
    /// Image tag.
    pub image_tag: String,
    /// Language.
    pub lang: String,
    /// Process tags.
    pub process_tags: String,
}

impl PayloadKeyRef<'_> {
    /// The owned copy.
    pub fn to_owned_key(&self) -> PayloadKey {
        PayloadKey {
            env: self.env.to_owned(),
            hostname: self.hostname.to_owned(),
            version: self.version.to_owned(),
            container_id: self.container_id.to_owned(),
            git_commit_sha: self.git_commit_sha.to_owned(),
            image_tag: self.image_tag.to_owned(),
            lang: self.lang.to_owned(),
            process_tags: self.process_tags.to_owned(),
        }
    }

    /// Field-by-field equality with a stored key.
    pub fn matches(&self, k: &PayloadKey) -> bool {
        *self == k.as_ref()
    }
}

impl PayloadKey {
    /// A borrowed view.
    pub fn as_ref(&self) -> PayloadKeyRef<'_> {
        PayloadKeyRef {
            env: &self.env,
            hostname: &self.hostname,
            version: &self.version,
            container_id: &self.container_id,
            git_commit_sha: &self.git_commit_sha,
            image_tag: &self.image_tag,
            lang: &self.lang,
            process_tags: &self.process_tags,
        }
    }

    /// A `ClientStatsPayload` with this key and no buckets.
    pub fn to_client_payload(&self) -> pb::ClientStatsPayload {
        pb::ClientStatsPayload {
            env: self.env.clone(),
            hostname: self.hostname.clone(),
            version: self.version.clone(),
            container_id: self.container_id.clone(),
            git_commit_sha: self.git_commit_sha.clone(),
            image_tag: self.image_tag.clone(),
            lang: self.lang.clone(),
            process_tags: self.process_tags.clone(),
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
    let mut status_metric: Option<f64> = None;
    let mut otel_status_metric: Option<f64> = None;
    let mut grpc_metric: [Option<f64>; 4] = [None; 4];
    for (k, v) in &span.metrics {
        match k.as_str() {
            "_top_level" | "_dd.top_level" => top_level |= *v == 1.0,
            "_dd.measured" => measured = *v == 1.0,
            "_dd.partial_version" if *v >= 0.0 => return None,
            "http.status_code" => status_metric = Some(*v),
            "http.response.status_code" => otel_status_metric = Some(*v),
            other => {
                if let Some(slot) = grpc_index(other).and_then(|i| grpc_metric.get_mut(i)) {
                    *slot = Some(*v);
                }
            }
        }
    }
    // Meta, last occurrence wins (as lookups do).
    let mut kind = "";
    let mut method = "";
    let mut otel_method = "";
    let mut endpoint = "";
    let mut route = "";
    let mut status_meta: Option<&str> = None;
    let mut otel_status_meta: Option<&str> = None;
    let mut svc_src = "";
    let mut base_service = "";
    let mut grpc_meta: [Option<&str>; 4] = [None; 4];
    let mut peer: Vec<(&'a str, &'a str)> = Vec::new();
    for (k, v) in &span.meta {
        let (k, v): (&'a str, &'a str) = (k.as_str(), v.as_str());
        match k {
            "span.kind" => kind = v,
            "http.method" => method = v,
            "http.request.method" => otel_method = v,
            "http.endpoint" => endpoint = v,
            "http.route" => route = v,
            "http.status_code" => status_meta = Some(v),
            "http.response.status_code" => otel_status_meta = Some(v),
            "_dd.svc_src" => svc_src = v,
            _ => {
                if let Some(slot) = grpc_index(k).and_then(|i| grpc_meta.get_mut(i)) {
                    *slot = Some(v);
                }
            }
        }
        if k == BASE_SERVICE {
            base_service = v;
        }
        if !peer_keys.is_empty() && peer_keys.binary_search_by(|p| p.as_str().cmp(k)).is_ok() {
            peer.push((k, v));
        }
    }
    let kind_lower = KindClass::of(kind);
    let counted_kind = matches!(
        kind_lower,
        KindClass::Server | KindClass::Client | KindClass::Producer | KindClass::Consumer
    );
    if !(top_level || measured || (by_span_kind && counted_kind)) {
        return None;
    }
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
    let http_status_code = status_code(status_metric, status_meta, otel_status_metric, otel_status_meta);
    let grpc_status_code = grpc_meta
        .iter()
        .flatten()
        .find_map(|v| grpc_code_from_str(v))
        .or_else(|| grpc_metric.iter().flatten().find_map(|f| float_code(*f)));
    Some(SpanStats {
        key: GroupKeyRef {
            service: &span.service,
            name: &span.name,
            resource: &span.resource,
            span_type: &span.r#type,
            span_kind: kind,
            http_method: if method.is_empty() { otel_method } else { method },
            http_endpoint: if endpoint.is_empty() { route } else { endpoint },
            service_source: svc_src,
            http_status_code,
            grpc_status_code,
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

fn grpc_index(key: &str) -> Option<usize> {
    match key {
        "rpc.grpc.status_code" => Some(0),
        "grpc.code" => Some(1),
        "rpc.grpc.status.code" => Some(2),
        "grpc.status.code" => Some(3),
        _ => None,
    }
}

/// HTTP status code: `http.status_code` metric (as is), else its meta (parsed, 0 if invalid);
/// else the OTel `http.response.status_code`, only when a valid code (100–599).
fn status_code(metric: Option<f64>, meta: Option<&str>, otel_metric: Option<f64>, otel_meta: Option<&str>) -> u32 {
    if let Some(m) = metric {
        return m as u32;
    }
    if let Some(s) = meta {
        return s.trim().parse().unwrap_or(0);
    }
    let valid = |c: u32| (100..600).contains(&c);
    otel_metric
        .and_then(float_code)
        .filter(|c| valid(*c))
        .or_else(|| otel_meta.and_then(|s| s.trim().parse().ok()).filter(|c| valid(*c)))
        .unwrap_or(0)
}

fn float_code(f: f64) -> Option<u32> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
}

/// A gRPC status code from a number or a code name (`NOT_FOUND`, `NotFound`,
/// `StatusCode.NOT_FOUND`, case-insensitive).
pub fn grpc_code_from_str(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u32>() {
        return Some(n);
    }
    let name = v
        .strip_prefix("StatusCode.")
        .or_else(|| v.strip_prefix("STATUSCODE."))
        .unwrap_or(v);
    let upper: String = name
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Some(match upper.as_str() {
        "OK" => 0,
        "CANCELLED" | "CANCELED" => 1,
        "UNKNOWN" => 2,
        "INVALIDARGUMENT" => 3,
        "DEADLINEEXCEEDED" => 4,
        "NOTFOUND" => 5,
        "ALREADYEXISTS" => 6,
        "PERMISSIONDENIED" => 7,
        "RESOURCEEXHAUSTED" => 8,
        "FAILEDPRECONDITION" => 9,
        "ABORTED" => 10,
        "OUTOFRANGE" => 11,
        "UNIMPLEMENTED" => 12,
        "INTERNAL" => 13,
        "UNAVAILABLE" => 14,
        "DATALOSS" => 15,
        "UNAUTHENTICATED" => 16,
        _ => return None,
    })
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
    fn grpc_codes() {
        assert_eq!(grpc_code_from_str("0"), Some(0));
        assert_eq!(grpc_code_from_str("CANCELLED"), Some(1));
        assert_eq!(grpc_code_from_str("canceled"), Some(1));
        assert_eq!(grpc_code_from_str("StatusCode.DEADLINE_EXCEEDED"), Some(4));
        assert_eq!(grpc_code_from_str("PermissionDenied"), Some(7));
        assert_eq!(grpc_code_from_str("UNAUTHENTICATED"), Some(16));
        assert_eq!(grpc_code_from_str("nope"), None);
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
