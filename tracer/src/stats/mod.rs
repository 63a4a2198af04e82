//! Client-side stats (`DD_TRACE_STATS_COMPUTATION_ENABLED`): the export worker aggregates
//! every finished top-level or measured span (and, when the agent asks, every span of a
//! listed `span.kind`) into 10 s buckets keyed as the agent keys them, before sampling, and
//! sends the buckets to `/v0.6/stats`. Pure: every call takes `now`.
//!
//! Aggregation key (the agent's): service, name, resource, type, `span.kind`, HTTP status
//! code (metric `http.status_code`, else its meta; else a valid OTel
//! `http.response.status_code`), synthetics (chunk origin `synthetics*`), trace root
//! (`parent_id == 0`), gRPC status code (`rpc.grpc.status_code`, `grpc.code`,
//! `rpc.grpc.status.code`, `grpc.status.code`; numbers or names), `_dd.svc_src`, HTTP method
//! (`http.method`, else `http.request.method`), endpoint (`http.endpoint`, else `http.route`)
//! and peer tags (for client/producer/consumer spans, the agent's `peer_tags` keys present
//! with a value; `_dd.base_service` for internal and kind-less spans).
//!
//! Bounds: at most [`MAX_GROUPS`] groups per bucket (later keys count into one overflow group
//! whose strings are `tracer_blocked_value`, as libdatadog does); spans ending before the
//! last flush go to the oldest open bucket, spans ending in the future to the current one, so
//! the open buckets are those between the last flush and `now`.

mod payload;
mod sketch;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use smallvec::SmallVec;

pub(crate) use payload::{PayloadIdentity, encode_payload};
pub(crate) use sketch::Sketch;

use apm_conventions::stats::{BASE_SERVICE, KeyMetrics, KeyTags};

use crate::span::SpanData;

/// Bucket width (the agent's and every tracer's).
pub(crate) const BUCKET_NS: i64 = 10_000_000_000;
/// Groups per bucket before the overflow group.
pub(crate) const MAX_GROUPS: usize = 10_000;
/// Value of every string of the overflow group.
pub(crate) const OVERFLOW_VALUE: &str = "tracer_blocked_value";

/// What the agent's `/info` decides about aggregation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StatsSettings {
    /// `peer_tags`, sorted (empty: no peer-tag aggregation).
    pub(crate) peer_tag_keys: Vec<String>,
    /// `span_kinds_stats_computed`, lower case: spans of these kinds count even when neither
    /// top-level nor measured.
    pub(crate) span_kinds: Vec<String>,
}

/// One aggregation group's key, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct GroupKey {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) resource: String,
    pub(crate) span_type: String,
    pub(crate) span_kind: String,
    pub(crate) http_status_code: u32,
    pub(crate) synthetics: bool,
    pub(crate) is_trace_root: bool,
    /// Empty when none.
    pub(crate) grpc_status_code: String,
    pub(crate) service_source: String,
    pub(crate) http_method: String,
    pub(crate) http_endpoint: String,
    /// `key:value`, in key order.
    pub(crate) peer_tags: Vec<String>,
}

/// A group key borrowed from a span: looking a group up allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    service: &'a str,
    name: &'a str,
    resource: &'a str,
    span_type: &'a str,
    span_kind: &'a str,
    http_status_code: u32,
    synthetics: bool,
    is_trace_root: bool,
    grpc_status_code: Option<u32>,
    service_source: &'a str,
    http_method: &'a str,
    http_endpoint: &'a str,
    peer_tags: SmallVec<[(&'a str, &'a str); 2]>,
}

impl KeyRef<'_> {
    /// SipHash with this process's random keys: span fields (a resource from a request
    /// path) cannot be chosen to collide.
    fn hash64(&self, keys: &RandomState) -> u64 {
        keys.hash_one(self)
    }

    fn matches(&self, k: &GroupKey) -> bool {
        self.service == k.service
            && self.name == k.name
            && self.resource == k.resource
            && self.span_type == k.span_type
            && self.span_kind == k.span_kind
            && self.http_status_code == k.http_status_code
            && self.synthetics == k.synthetics
            && self.is_trace_root == k.is_trace_root
            && grpc_matches(self.grpc_status_code, &k.grpc_status_code)
            && self.service_source == k.service_source
            && self.http_method == k.http_method
            && self.http_endpoint == k.http_endpoint
            && self.peer_tags.len() == k.peer_tags.len()
            && self
                .peer_tags
                .iter()
                .zip(&k.peer_tags)
                .all(|((pk, pv), t)| t.strip_prefix(pk).and_then(|r| r.strip_prefix(':')) == Some(pv))
    }

    fn to_owned_key(&self) -> GroupKey {
        GroupKey {
            service: self.service.to_owned(),
            name: self.name.to_owned(),
            resource: self.resource.to_owned(),
            span_type: self.span_type.to_owned(),
            span_kind: self.span_kind.to_owned(),
            http_status_code: self.http_status_code,
            synthetics: self.synthetics,
            is_trace_root: self.is_trace_root,
            grpc_status_code: self.grpc_status_code.map(|c| c.to_string()).unwrap_or_default(),
            service_source: self.service_source.to_owned(),
            http_method: self.http_method.to_owned(),
            http_endpoint: self.http_endpoint.to_owned(),
            peer_tags: self.peer_tags.iter().map(|(k, v)| format!("{k}:{v}")).collect(),
        }
    }

    fn overflow<'b>() -> KeyRef<'b> {
        KeyRef {
            service: OVERFLOW_VALUE,
            name: OVERFLOW_VALUE,
            resource: OVERFLOW_VALUE,
            span_type: OVERFLOW_VALUE,
            span_kind: OVERFLOW_VALUE,
            http_status_code: 0,
            synthetics: false,
            is_trace_root: false,
            grpc_status_code: None,
            service_source: "",
            http_method: OVERFLOW_VALUE,
            http_endpoint: OVERFLOW_VALUE,
            peer_tags: SmallVec::new(),
        }
    }
}

fn grpc_matches(code: Option<u32>, owned: &str) -> bool {
    match code {
        None => owned.is_empty(),
        Some(c) => owned.parse::<u32>().ok() == Some(c),
    }
}

/// Counts and latencies of one group in one bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupStats {
    pub(crate) hits: u64,
    pub(crate) errors: u64,
    pub(crate) top_level_hits: u64,
    /// Sum of durations, ns.
    pub(crate) duration: u64,
    pub(crate) ok: Sketch,
    pub(crate) error: Sketch,
}

#[derive(Debug, Default)]
struct Bucket {
    /// By key hash; a collision list of (usually) one.
    groups: HashMap<u64, SmallVec<[(GroupKey, GroupStats); 1]>>,
    len: usize,
}

/// A flushed bucket.
#[derive(Debug)]
pub(crate) struct FlushedBucket {
    /// Start, unix ns (a multiple of [`BUCKET_NS`]).
    pub(crate) start: i64,
    pub(crate) groups: Vec<(GroupKey, GroupStats)>,
}

/// The aggregator.
#[derive(Debug, Default)]
pub(crate) struct Concentrator {
    settings: StatsSettings,
    buckets: BTreeMap<i64, Bucket>,
    /// Buckets starting before this were flushed; later spans there go to the oldest open one.
    flushed_until: i64,
    /// Spans aggregated.
    spans: u64,
    /// Keys of the group-key hash.
    keys: RandomState,
}

fn align(ts: i64) -> i64 {
    ts - ts.rem_euclid(BUCKET_NS)
}

/// A duration as Datadog agents and tracers put it into a sketch: truncated to a 10-bit
/// mantissa (at most 0.2 % lower; Go `nsTimestampToFloat`).
pub(crate) fn truncate_duration(ns: i64) -> f64 {
    f64::from_bits((ns as f64).to_bits() & 0xffff_f800_0000_0000)
}

impl Concentrator {
    pub(crate) fn new(settings: StatsSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Replaces what `/info` decides (new spans only).
    pub(crate) fn set_settings(&mut self, settings: StatsSettings) {
        self.settings = settings;
    }

    /// Spans aggregated so far.
    #[cfg(test)]
    pub(crate) fn spans(&self) -> u64 {
        self.spans
    }

    /// Whether the span counts in stats: top-level, measured, or of a kind the agent lists.
    pub(crate) fn eligible(&self, span: &SpanData) -> bool {
        if span.top_level || span.measured {
            return true;
        }
        !self.settings.span_kinds.is_empty()
            && span
                .tag("span.kind")
                .is_some_and(|k| self.settings.span_kinds.iter().any(|s| s.eq_ignore_ascii_case(k)))
    }

    /// Aggregates `span` if it is eligible. `service` is the tracer's (for spans without
    /// their own), `synthetics` whether the chunk's origin is Synthetics, `now` unix ns.
    pub(crate) fn add(&mut self, span: &SpanData, service: &str, synthetics: bool, now: i64) {
        if !self.eligible(span) {
            return;
        }
        let key = key_of(span, service, synthetics, &self.settings.peer_tag_keys);
        let end = span.start.saturating_add(span.duration.max(0));
        let mut ts = align(end);
        if ts < self.flushed_until {
            ts = self.flushed_until;
        }
        let current = align(now);
        if ts > current {
            ts = current.max(self.flushed_until);
        }
        let bucket = self.buckets.entry(ts).or_default();
        let keys = &self.keys;
        let (key, hash) = if bucket.len >= MAX_GROUPS {
            let h = key.hash64(keys);
            let known = bucket
                .groups
                .get(&h)
                .is_some_and(|list| list.iter().any(|(k, _)| key.matches(k)));
            if known {
                (key, h)
            } else {
                let o = KeyRef::overflow();
                let h = o.hash64(keys);
                (o, h)
            }
        } else {
            let h = key.hash64(keys);
            (key, h)
        };
        let list = bucket.groups.entry(hash).or_default();
        let slot = match list.iter().position(|(k, _)| key.matches(k)) {
            Some(i) => i,
            None => {
                list.push((key.to_owned_key(), GroupStats::default()));
                bucket.len += 1;
                list.len() - 1
            }
        };
        let Some((_, g)) = list.get_mut(slot) else {
            return;
        };
        let duration = span.duration.max(0);
        g.hits += 1;
        g.duration = g.duration.saturating_add(duration as u64);
        if span.top_level {
            g.top_level_hits += 1;
        }
        if span.error {
            g.errors += 1;
            g.error.add(truncate_duration(duration));
        } else {
            g.ok.add(truncate_duration(duration));
        }
        self.spans += 1;
    }

    /// Takes the buckets that are over at `now` (unix ns), or all of them with `force`.
    pub(crate) fn flush(&mut self, now: i64, force: bool) -> Vec<FlushedBucket> {
        let current = align(now);
        let keep = if force {
            BTreeMap::new()
        } else {
            self.buckets.split_off(&current)
        };
        let done = std::mem::replace(&mut self.buckets, keep);
        if let Some(last) = done.keys().next_back() {
            self.flushed_until = self.flushed_until.max(last + BUCKET_NS);
        }
        if !force {
            self.flushed_until = self.flushed_until.max(current);
        }
        done.into_iter()
            .filter(|(_, b)| b.len > 0)
            .map(|(start, b)| {
                let mut groups: Vec<(GroupKey, GroupStats)> = b.groups.into_values().flatten().collect();
                groups.sort_by(|a, b| a.0.resource.cmp(&b.0.resource).then_with(|| a.0.name.cmp(&b.0.name)));
                FlushedBucket { start, groups }
            })
            .collect()
    }

    /// Whether nothing waits to be flushed.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

fn key_of<'a>(span: &'a SpanData, service: &'a str, synthetics: bool, peer_keys: &[String]) -> KeyRef<'a> {
    let mut metrics = KeyMetrics::default();
    for (k, v) in &span.metrics {
        metrics.offer(k.as_str(), *v);
    }
    let mut tags = KeyTags::default();
    let mut peer: SmallVec<[(&str, &str); 2]> = SmallVec::new();
    let mut peers_seen: SmallVec<[(&str, &str); 4]> = SmallVec::new();
    for (k, v) in &span.meta {
        let (k, v) = (k.as_str(), v.as_str());
        tags.offer(k, v);
        if !peer_keys.is_empty() && peer_keys.binary_search_by(|p| p.as_str().cmp(k)).is_ok() {
            peers_seen.push((k, v));
        }
    }
    let (kind, base) = (tags.span_kind, tags.base_service);
    let lower = |s: &str, want: &str| s.eq_ignore_ascii_case(want);
    if !peer_keys.is_empty() {
        if lower(kind, "client") || lower(kind, "producer") || lower(kind, "consumer") {
            // Key order, the last value of a repeated key, non-empty values.
            peers_seen.reverse();
            peers_seen.sort_by(|a, b| a.0.cmp(b.0));
            peers_seen.dedup_by(|a, b| a.0 == b.0);
            peer.extend(peers_seen.into_iter().filter(|(_, v)| !v.is_empty()));
        } else if (kind.is_empty() || lower(kind, "internal")) && !base.is_empty() {
            peer.push((BASE_SERVICE, base));
        }
    }
    KeyRef {
        service: span.service.as_deref().unwrap_or(service),
        name: &span.name,
        resource: span.resource.as_deref().unwrap_or(&span.name),
        span_type: span.span_type.as_deref().unwrap_or(""),
        span_kind: kind,
        http_status_code: tags.http_status_code(&metrics),
        synthetics,
        is_trace_root: span.parent_id.to_u64() == 0,
        grpc_status_code: tags.grpc_status_code(&metrics),
        service_source: tags.service_source,
        http_method: tags.http_method(),
        http_endpoint: tags.http_endpoint(),
        peer_tags: peer,
    }
}

#[cfg(test)]
mod tests;
