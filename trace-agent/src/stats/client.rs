//! Client-computed stats (`/v0.6/stats`, spec 6.5).
//!
//! 1. [`process_client_stats`] (in the receiver, per request): container id only as a configured
//!    dimension, empty env → agent env (then tag-normalized), empty lang / tracer version from
//!    the headers; per group: name and service normalized like span fields, empty resource →
//!    name, resource truncated, groups whose resource matches `ignore_resources` dropped,
//!    resources obfuscated by type (unless the tracer sent `Datadog-Obfuscation-Version`),
//!    `replace_tags` applied, duplicate groups of a bucket merged (counts summed into the first,
//!    zeroed in the others, whose sketches stay).
//! 2. The processed payload travels to the pipeline as a [`ClientStatsInput`].
//! 3. [`ClientStatsAggregator`] (on the pipeline thread): 2 s buckets aligned to **odd** seconds
//!    (never on the concentrator's 10 s boundaries). A client bucket older than the oldest open
//!    bucket (20 s back) is moved to it, one from the future to now (`AgentTimeShift` records the
//!    shift, `Start` the new time). The first payload of an aggregation bucket is held and
//!    forwarded unchanged when the bucket closes. When a second one arrives, both go out at once
//!    with their counts zeroed (`AgentAggregation = "distributions"`, sketches kept), and so does
//!    every later one; their hits/errors/duration are summed per (payload key, group key) and
//!    sent when the bucket closes as one payload per payload key with
//!    `AgentAggregation = "counts"` and a 10 s duration. Everything leaves with
//!    `ClientComputed = true`.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use libdd_trace_protobuf::pb;

use super::key::{GroupKey, GroupKeyRef, PayloadKey, PayloadKeyRef};
use super::{StatsConfig, align, unix_nanos};
use crate::identity::AgentIdentity;
use crate::process::ProcessConfig;
use crate::process::filter::apply_replace_rules;
use crate::process::normalize::{
    DEFAULT_SPAN_NAME, MAX_NAME_LEN, MAX_RESOURCE_LEN, normalize_name, normalize_service, normalize_tag_value,
    truncate_utf8,
};
use crate::process::obfuscate::obfuscate_span_cached;
use crate::span::{Span, Str, tag_get};

const SEC: i64 = 1_000_000_000;
/// Aggregation bucket size.
pub const AGG_BUCKET_NS: i64 = 2 * SEC;
/// Duration written on aggregated-counts buckets (the tracers' bucket size).
pub const CLIENT_BUCKET_NS: i64 = 10 * SEC;
/// How far back client buckets are accepted before being time-shifted.
pub const OLDEST_BUCKET_NS: i64 = 20 * SEC;
/// `AgentAggregation` of forwarded originals whose counts were moved to an aggregate.
pub const KEY_DISTRIBUTIONS: &str = "distributions";
/// `AgentAggregation` of aggregated counts.
pub const KEY_COUNTS: &str = "counts";

/// One processed `/v0.6/stats` payload on its way from the receiver to the aggregator.
#[derive(Debug, Clone)]
pub struct ClientStatsInput {
    /// The payload after [`process_client_stats`].
    pub payload: pb::ClientStatsPayload,
    /// When the receiver accepted it.
    pub received_at: SystemTime,
}

/// Facts about the `/v0.6/stats` request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientStatsFacts<'a> {
    /// `Datadog-Meta-Lang`.
    pub lang: &'a str,
    /// `Datadog-Meta-Tracer-Version`.
    pub tracer_version: &'a str,
    /// Container id from the origin-detection headers.
    pub container_id: &'a str,
    /// `Datadog-Obfuscation-Version` present: the tracer already obfuscated resources.
    pub tracer_obfuscated: bool,
}

/// What [`process_client_stats`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStatsReport {
    /// Groups dropped by `ignore_resources`.
    pub ignored_groups: u64,
    /// Duplicate groups whose counts were merged into an earlier one.
    pub merged_groups: u64,
}

/// Normalizes, filters and obfuscates a decoded `ClientStatsPayload` in place (step 1 above).
pub fn process_client_stats(
    p: &mut pb::ClientStatsPayload,
    facts: &ClientStatsFacts<'_>,
    config: &ProcessConfig,
    stats: &StatsConfig,
) -> ClientStatsReport {
    let mut report = ClientStatsReport::default();
    if stats.container_id_dimension {
        p.container_id = facts.container_id.to_owned();
    } else {
        p.container_id.clear();
        p.tags.clear();
    }
    if p.env.is_empty() {
        p.env.clone_from(&config.default_env);
    }
    if let std::borrow::Cow::Owned(env) = normalize_tag_value(&p.env) {
        p.env = env;
    }
    if p.tracer_version.is_empty() {
        p.tracer_version = facts.tracer_version.to_owned();
    }
    if p.lang.is_empty() {
        p.lang = facts.lang.to_owned();
    }
    for bucket in &mut p.stats {
        let groups = std::mem::take(&mut bucket.stats);
        for mut g in groups {
            normalize_group(&mut g, facts.lang);
            if config
                .filters
                .ignore_resources
                .as_ref()
                .is_some_and(|set| set.is_match(&g.resource))
            {
                report.ignored_groups += 1;
                continue;
            }
            rewrite_group(&mut g, config, !facts.tracer_obfuscated);
            bucket.stats.push(g);
        }
        report.merged_groups += merge_duplicates(&mut bucket.stats);
    }
    report
}

fn normalize_group(g: &mut pb::ClientGroupedStats, lang: &str) {
    g.name = if g.name.is_empty() {
        DEFAULT_SPAN_NAME.to_owned()
    } else {
        normalize_name(truncate_utf8(&g.name, MAX_NAME_LEN))
            .filter(|n| !n.is_empty())
            .map_or_else(|| DEFAULT_SPAN_NAME.to_owned(), std::borrow::Cow::into_owned)
    };
    if let Some(service) = normalize_service(&g.service, lang) {
        g.service = service;
    }
    if g.resource.is_empty() {
        g.resource.clone_from(&g.name);
    } else if g.resource.len() > MAX_RESOURCE_LEN {
        g.resource = truncate_utf8(&g.resource, MAX_RESOURCE_LEN).to_owned();
    }
}

/// Obfuscation by type and `replace_tags` (resource and status code), through a scratch span.
fn rewrite_group(g: &mut pb::ClientGroupedStats, config: &ProcessConfig, obfuscate: bool) {
    if !obfuscate && config.replace_rules.is_empty() {
        return;
    }
    let mut span = Span {
        resource: Str::borrowed(&g.resource),
        r#type: Str::borrowed(&g.r#type),
        metrics: vec![(Str::from_static("http.status_code"), f64::from(g.http_status_code))],
        ..Span::default()
    };
    if obfuscate {
        obfuscate_span_cached(&mut span, &config.obfuscation, config.sql_cache.as_deref());
    }
    apply_replace_rules(&config.replace_rules, &mut span);
    let code = tag_get(&span.metrics, "http.status_code")
        .copied()
        .filter(|c| c.is_finite() && *c >= 0.0 && *c <= f64::from(u32::MAX))
        .map(|c| c as u32);
    if !span.resource.is_borrowed() {
        g.resource = span.resource.to_string();
    }
    if let Some(code) = code {
        g.http_status_code = code;
    }
}

/// Sums the counts of duplicate groups into the first one; returns how many were merged.
fn merge_duplicates(groups: &mut [pb::ClientGroupedStats]) -> u64 {
    let mut first: HashMap<GroupKey, usize> = HashMap::with_capacity(groups.len());
    let mut merged = 0;
    for i in 0..groups.len() {
        let Some(g) = groups.get(i) else { continue };
        let key = GroupKeyRef::from_client_group(g, true).to_owned_key();
        match first.get(&key) {
            None => {
                first.insert(key, i);
            }
            Some(&j) => {
                let (hits, errors, duration) = (g.hits, g.errors, g.duration);
                if let Some(dup) = groups.get_mut(i) {
                    dup.hits = 0;
                    dup.errors = 0;
                    dup.duration = 0;
                }
                if let Some(target) = groups.get_mut(j) {
                    target.hits = target.hits.saturating_add(hits);
                    target.errors = target.errors.saturating_add(errors);
                    target.duration = target.duration.saturating_add(duration);
                }
                merged += 1;
            }
        }
    }
    merged
}

/// What the aggregator did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStatsCounters {
    /// Payloads added.
    pub payloads: u64,
    /// Client buckets moved in time (too old or in the future).
    pub shifted_buckets: u64,
    /// Client buckets that collided with another in the same aggregation bucket.
    pub collisions: u64,
    /// Group counts summed into an overflow group (cardinality cap).
    pub overflow_groups: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    hits: u64,
    errors: u64,
    duration: u64,
}

#[derive(Debug, Default)]
struct AggBucket {
    /// Client payloads seen (each with one bucket).
    n: usize,
    first: Option<pb::ClientStatsPayload>,
    counts: HashMap<PayloadKey, HashMap<GroupKey, Counts>>,
    groups: usize,
}

/// The client-stats aggregator (see the module docs).
#[derive(Debug)]
pub struct ClientStatsAggregator {
    agent: AgentIdentity,
    peer_tags: bool,
    max_groups: usize,
    buckets: BTreeMap<i64, AggBucket>,
    oldest: i64,
    counters: ClientStatsCounters,
}

/// Aggregation timestamps: 2 s windows starting on odd seconds.
fn align_agg(ns: i64) -> i64 {
    align(ns, AGG_BUCKET_NS) + SEC
}

impl ClientStatsAggregator {
    /// An aggregator accepting client buckets from 20 s before `now`.
    pub fn new(config: &StatsConfig, agent: AgentIdentity, now: SystemTime) -> Self {
        let now = unix_nanos(now);
        Self {
            agent,
            peer_tags: config.peer_tags_aggregation,
            max_groups: config.max_groups_per_bucket,
            buckets: BTreeMap::new(),
            oldest: align_agg(now + AGG_BUCKET_NS - OLDEST_BUCKET_NS),
            counters: ClientStatsCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> ClientStatsCounters {
        self.counters
    }

    /// Open aggregation buckets.
    pub fn open_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Adds one processed payload; returns what must be sent at once (originals of colliding
    /// buckets with their counts zeroed), if anything.
    pub fn add(&mut self, payload: pb::ClientStatsPayload, now: SystemTime) -> Option<pb::StatsPayload> {
        self.counters.payloads += 1;
        let now = unix_nanos(now);
        let pb::ClientStatsPayload { stats, .. } = &payload;
        let header = pb::ClientStatsPayload {
            stats: Vec::new(),
            ..payload.clone()
        };
        let mut out = Vec::new();
        for client_bucket in stats {
            let mut client_bucket = client_bucket.clone();
            let start = i64::try_from(client_bucket.start).unwrap_or(i64::MAX);
            let (ts, shifted) = if start < self.oldest {
                (self.oldest, true)
            } else if start > now {
                (align_agg(now), true)
            } else {
                (align_agg(start), false)
            };
            if shifted {
                self.counters.shifted_buckets += 1;
                client_bucket.agent_time_shift = ts.saturating_sub(start);
                client_bucket.start = u64::try_from(ts).unwrap_or(0);
            }
            let mut p = header.clone();
            p.stats = vec![client_bucket];
            let bucket = self.buckets.entry(ts).or_default();
            bucket.n += 1;
            match bucket.n {
                1 => bucket.first = Some(p),
                n => {
                    self.counters.collisions += 1;
                    if n == 2
                        && let Some(first) = bucket.first.take()
                    {
                        self.aggregate(ts, &first);
                        out.push(trim_counts(first));
                    }
                    self.aggregate(ts, &p);
                    out.push(trim_counts(p));
                }
            }
        }
        self.wrap(out)
    }

    fn aggregate(&mut self, ts: i64, p: &pb::ClientStatsPayload) {
        let Some(bucket) = self.buckets.get_mut(&ts) else {
            return;
        };
        let pkey = PayloadKeyRef {
            env: &p.env,
            hostname: &p.hostname,
            version: &p.version,
            container_id: &p.container_id,
            git_commit_sha: &p.git_commit_sha,
            image_tag: &p.image_tag,
            ..PayloadKeyRef::default()
        };
        let agent_key = PayloadKeyRef {
            env: &self.agent.env,
            hostname: &self.agent.hostname,
            ..PayloadKeyRef::default()
        };
        for g in p.stats.iter().flat_map(|b| &b.stats) {
            let key = GroupKeyRef::from_client_group(g, self.peer_tags).to_owned_key();
            let full = bucket.groups >= self.max_groups;
            let payload_key = if full && !bucket.counts.contains_key(&pkey.to_owned_key()) {
                agent_key.to_owned_key()
            } else {
                pkey.to_owned_key()
            };
            let groups = bucket.counts.entry(payload_key).or_default();
            let key = if full && !groups.contains_key(&key) {
                self.counters.overflow_groups += 1;
                GroupKeyRef::overflow().to_owned_key()
            } else {
                key
            };
            let before = groups.len();
            let c = groups.entry(key).or_default();
            c.hits = c.hits.saturating_add(g.hits);
            c.errors = c.errors.saturating_add(g.errors);
            c.duration = c.duration.saturating_add(g.duration);
            bucket.groups += groups.len() - before;
        }
    }

    /// Closes the aggregation buckets that are due at `now` (every bucket when `force`).
    pub fn flush(&mut self, now: SystemTime, force: bool) -> Option<pb::StatsPayload> {
        let due = if force {
            std::mem::take(&mut self.buckets)
        } else {
            let flush_ts = align_agg(unix_nanos(now) + AGG_BUCKET_NS - OLDEST_BUCKET_NS);
            let keep = self.buckets.split_off(&flush_ts);
            self.oldest = self.oldest.max(flush_ts);
            std::mem::replace(&mut self.buckets, keep)
        };
        let mut out = Vec::new();
        for (ts, bucket) in due {
            if bucket.n == 1 {
                out.extend(bucket.first);
                continue;
            }
            let mut counts: Vec<_> = bucket.counts.into_iter().collect();
            counts.sort_by(|a, b| a.0.cmp(&b.0));
            for (pkey, groups) in counts {
                let mut groups: Vec<_> = groups.into_iter().collect();
                groups.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(pb::ClientStatsPayload {
                    stats: vec![pb::ClientStatsBucket {
                        start: u64::try_from(ts).unwrap_or(0),
                        duration: CLIENT_BUCKET_NS as u64,
                        stats: groups
                            .into_iter()
                            .map(|(k, c)| pb::ClientGroupedStats {
                                hits: c.hits,
                                errors: c.errors,
                                duration: c.duration,
                                ..k.to_grouped_stats()
                            })
                            .collect(),
                        agent_time_shift: 0,
                    }],
                    agent_aggregation: KEY_COUNTS.to_owned(),
                    ..pkey.to_client_payload()
                });
            }
        }
        self.wrap(out)
    }

    fn wrap(&self, stats: Vec<pb::ClientStatsPayload>) -> Option<pb::StatsPayload> {
        (!stats.is_empty()).then(|| pb::StatsPayload {
            agent_hostname: self.agent.hostname.clone(),
            agent_env: self.agent.env.clone(),
            agent_version: self.agent.version.clone(),
            stats,
            client_computed: true,
            split_payload: false,
        })
    }
}

fn trim_counts(mut p: pb::ClientStatsPayload) -> pb::ClientStatsPayload {
    p.agent_aggregation = KEY_DISTRIBUTIONS.to_owned();
    for g in p.stats.iter_mut().flat_map(|b| b.stats.iter_mut()) {
        g.hits = 0;
        g.errors = 0;
        g.duration = 0;
    }
    p
}

#[cfg(test)]
mod tests;
