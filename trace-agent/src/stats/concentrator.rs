//! The agent-side stats concentrator (spec 6.1–6.3): spans in, `pb::StatsPayload` out.
//!
//! ```text
//! add(&TracerPayload, client, now)   skips client-computed payloads, else add_payload
//! add_payload(&TracerPayload, now)   every eligible span → bucket(end time) → group(key) += weight
//! flush(now, force)                  buckets older than 2 × bucket size (all when forced) → StatsPayload
//! ```
//!
//! * **Weight**: `1 / root._sample_rate` when that rate is in (0, 1], else 1. Hits, errors,
//!   top-level hits and durations are summed weighted as floats and exported by stochastic
//!   rounding; the ok/error latency sketches get each span once (unweighted) with its duration
//!   truncated to a 10-bit mantissa (Go agent behaviour).
//! * **Buckets**: a span counts in the bucket holding its end time (`start + duration`, aligned
//!   down to the bucket size). At creation only the current bucket is open: older spans count
//!   in the oldest open bucket (`late_spans`), so a restart never re-emits a flushed window.
//!   After each flush the oldest open bucket is `align(now) − bucket`. Future buckets are allowed
//!   up to [`MAX_FUTURE_BUCKETS`] ahead of `now`; later ends are clamped there
//!   (`future_clamped_spans`) so the number of buckets stays bounded.
//! * **Flush**: a bucket is flushed once `start ≤ now − 2 × bucket size` (`bufferLen = 2`), or on
//!   `force` (shutdown). Groups of one payload key across the flushed buckets form one
//!   `ClientStatsPayload`. Output is sorted (payload keys, then groups) so it is deterministic.
//! * **Cardinality**: a bucket holds at most `max_groups_per_bucket` (payload key, group key)
//!   pairs. Past that, a span of a new pair counts into its payload key's overflow group (every
//!   string field [`OVERFLOW_VALUE`](super::key::OVERFLOW_VALUE)) — or, if its payload key is new
//!   too, into the overflow group of the agent's own payload key (agent env and hostname) — and
//!   into `overflow_spans`. At most `2 × max + 2` groups exist per bucket.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::SystemTime;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use libdd_trace_protobuf::pb;

use super::key::{GroupKey, GroupKeyRef, PayloadKey, PayloadKeyRef, span_stats};
use super::sketch::Sketch;
use super::{Rng, StatsConfig, align, truncate_duration, unix_nanos};
use crate::identity::AgentIdentity;
use crate::process::toplevel::root_index;
use crate::span::{TracerPayload, tag_get};

/// Buckets kept before flushing (`bufferLen` in the Go agent).
pub const BUFFER_LEN: i64 = 2;
/// How many buckets past the current one a span may end in before it is clamped.
pub const MAX_FUTURE_BUCKETS: i64 = 6;

const SAMPLE_RATE_KEY: &str = "_sample_rate";
const GIT_COMMIT_SHA_KEY: &str = "_dd.git.commit.sha";
const CONTAINER_TAGS_KEY: &str = "_dd.tags.container";
const PROCESS_TAGS_KEY: &str = "_dd.tags.process";

/// What the concentrator did, for `status` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConcentratorCounters {
    /// Tracer payloads added.
    pub payloads: u64,
    /// Payloads skipped because the tracer computed stats (`Datadog-Client-Computed-Stats`).
    pub skipped_client_computed: u64,
    /// Spans looked at.
    pub spans_seen: u64,
    /// Eligible spans counted.
    pub spans_counted: u64,
    /// Spans counted into an overflow group (cardinality cap).
    pub overflow_spans: u64,
    /// Spans older than the oldest open bucket, counted in it.
    pub late_spans: u64,
    /// Spans ending too far in the future, counted in the latest allowed bucket.
    pub future_clamped_spans: u64,
    /// Buckets flushed.
    pub buckets_flushed: u64,
    /// Groups flushed.
    pub groups_flushed: u64,
}

/// Weighted counts and latency sketches of one group.
#[derive(Debug, Clone, Default)]
struct GroupStats {
    hits: f64,
    top_level_hits: f64,
    errors: f64,
    duration: f64,
    ok: Sketch,
    err: Sketch,
}

impl GroupStats {
    fn add(&mut self, weight: f64, duration: i64, error: bool, top_level: bool) {
        self.hits += weight;
        if top_level {
            self.top_level_hits += weight;
        }
        self.duration += duration as f64 * weight;
        let sketch = if error {
            self.errors += weight;
            &mut self.err
        } else {
            &mut self.ok
        };
        // Durations are normalized to ≥ 0 and i64-sized: always in the sketch's range.
        if let Err(e) = sketch.add(truncate_duration(duration.max(0))) {
            tracing::debug!("duration not added to a stats sketch: {e}");
        }
    }

    fn export(&self, key: &GroupKey, rng: &mut Rng) -> pb::ClientGroupedStats {
        pb::ClientGroupedStats {
            hits: rng.round(self.hits),
            errors: rng.round(self.errors),
            duration: rng.round(self.duration),
            top_level_hits: rng.round(self.top_level_hits),
            ok_summary: self.ok.encode(),
            error_summary: self.err.encode(),
            ..key.to_grouped_stats()
        }
    }
}

#[derive(Debug)]
struct Group {
    hash: u64,
    payload: u32,
    key: GroupKey,
    stats: GroupStats,
}

/// One time bucket: interned payload keys and the groups under them.
#[derive(Debug, Default)]
struct Bucket {
    payloads: Vec<PayloadKey>,
    payload_index: HashTable<(u64, u32)>,
    groups: HashTable<Group>,
}

impl Bucket {
    /// Index of `key`, interning it unless the bucket is full (then the agent's own key).
    fn payload_id(&mut self, key: &PayloadKeyRef<'_>, hash: u64, agent: (&PayloadKeyRef<'_>, u64), max: usize) -> u32 {
        let Self {
            payloads,
            payload_index,
            groups,
        } = self;
        let find = |payloads: &Vec<PayloadKey>, table: &HashTable<(u64, u32)>, key: &PayloadKeyRef<'_>, hash: u64| {
            table
                .find(hash, |(h, i)| {
                    *h == hash && payloads.get(*i as usize).is_some_and(|p| key.matches(p))
                })
                .map(|(_, i)| *i)
        };
        if let Some(i) = find(payloads, payload_index, key, hash) {
            return i;
        }
        let (key, hash) = if groups.len() >= max {
            if let Some(i) = find(payloads, payload_index, agent.0, agent.1) {
                return i;
            }
            agent
        } else {
            (key, hash)
        };
        let id = payloads.len() as u32;
        payloads.push(key.to_owned_key());
        payload_index.insert_unique(hash, (hash, id), |(h, _)| *h);
        id
    }
}

/// The concentrator (see the module docs).
#[derive(Debug)]
pub struct Concentrator {
    by_span_kind: bool,
    peer_keys: Vec<String>,
    container_id_dimension: bool,
    bucket_ns: i64,
    max_groups: usize,
    agent: AgentIdentity,
    buckets: BTreeMap<i64, Bucket>,
    oldest: i64,
    hasher: DefaultHashBuilder,
    rng: Rng,
    counters: ConcentratorCounters,
}

impl Concentrator {
    /// A concentrator for `config`, writing `agent` on its payloads; only the bucket holding
    /// `now` is open.
    pub fn new(config: &StatsConfig, agent: AgentIdentity, now: SystemTime) -> Self {
        let bucket_ns = i64::try_from(config.bucket_size.as_nanos()).unwrap_or(i64::MAX).max(1);
        let now = unix_nanos(now);
        Self {
            by_span_kind: config.compute_stats_by_span_kind,
            peer_keys: config.peer_tag_keys(),
            container_id_dimension: config.container_id_dimension,
            bucket_ns,
            max_groups: config.max_groups_per_bucket,
            agent,
            buckets: BTreeMap::new(),
            oldest: align(now, bucket_ns),
            hasher: DefaultHashBuilder::default(),
            rng: Rng::new(now as u64 ^ 0x5bd1_e995),
            counters: ConcentratorCounters::default(),
        }
    }

    /// Seeds the stochastic rounding (tests, reproducible runs).
    #[must_use]
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng = Rng::new(seed);
        self
    }

    /// The counters so far.
    pub fn counters(&self) -> ConcentratorCounters {
        self.counters
    }

    /// Open buckets.
    pub fn open_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Groups held across all open buckets.
    pub fn group_count(&self) -> usize {
        self.buckets.values().map(|b| b.groups.len()).sum()
    }

    /// Adds a processed payload — unless its tracer computed the stats itself
    /// (`client_computed_stats`, from `Datadog-Client-Computed-Stats`), which is counted and
    /// skipped. Returns whether it was added.
    pub fn add(&mut self, payload: &TracerPayload<'_>, client_computed_stats: bool, now: SystemTime) -> bool {
        if client_computed_stats {
            self.counters.skipped_client_computed += 1;
            return false;
        }
        self.add_payload(payload, now);
        true
    }

    /// Adds every eligible span of `payload`. The caller must already have excluded payloads
    /// with client-computed stats (see [`Concentrator::add`]).
    pub fn add_payload(&mut self, payload: &TracerPayload<'_>, now: SystemTime) {
        self.counters.payloads += 1;
        let now = unix_nanos(now);
        let latest = align(now, self.bucket_ns).saturating_add(MAX_FUTURE_BUCKETS.saturating_mul(self.bucket_ns));
        let container_tags = tag_get(&payload.tags, CONTAINER_TAGS_KEY).map_or("", |s| s.as_str());
        let (container_git_sha, image_tag) = if container_tags.is_empty() {
            ("", "")
        } else {
            (
                container_tag(container_tags, "git.commit.sha"),
                container_tag(container_tags, "image_tag"),
            )
        };
        let process_tags = tag_get(&payload.tags, PROCESS_TAGS_KEY).map_or("", |s| s.as_str());
        let agent_key = PayloadKeyRef {
            env: &self.agent.env,
            hostname: &self.agent.hostname,
            ..PayloadKeyRef::default()
        };
        let agent_hash = self.hasher.hash_one(agent_key);
        let mut last_payload: Option<(i64, &str, u32)> = None;
        for chunk in &payload.chunks {
            let root = root_index(&chunk.spans).and_then(|i| chunk.spans.get(i));
            let weight = root.and_then(|r| r.metric(SAMPLE_RATE_KEY)).map_or(1.0, weight_of_rate);
            let git_commit_sha = root
                .and_then(|r| r.meta(GIT_COMMIT_SHA_KEY))
                .or_else(|| tag_get(&chunk.tags, GIT_COMMIT_SHA_KEY).map(|s| s.as_str()))
                .filter(|s| !s.is_empty())
                .unwrap_or(container_git_sha);
            let pkey = PayloadKeyRef {
                env: non_empty_or(&payload.env, &self.agent.env),
                hostname: non_empty_or(&payload.hostname, &self.agent.hostname),
                version: &payload.app_version,
                container_id: if self.container_id_dimension {
                    &payload.container_id
                } else {
                    ""
                },
                git_commit_sha,
                image_tag,
                lang: &payload.language_name,
                process_tags,
            };
            // Hashed only when the payload key must be looked up.
            let phash = std::cell::OnceCell::new();
            let synthetics = chunk.origin.starts_with("synthetics");
            // Spans of a chunk mostly end in the same bucket, and chunks of a payload mostly share
            // their payload key (only the git sha can differ): remember the last payload id.
            if last_payload.is_some_and(|(_, sha, _)| sha != git_commit_sha) {
                last_payload = None;
            }
            for span in &chunk.spans {
                self.counters.spans_seen += 1;
                let Some(st) = span_stats(span, synthetics, self.by_span_kind, &self.peer_keys) else {
                    continue;
                };
                self.counters.spans_counted += 1;
                let end = span.start.saturating_add(span.duration.max(0));
                let mut btime = align(end, self.bucket_ns);
                if btime < self.oldest {
                    btime = self.oldest;
                    self.counters.late_spans += 1;
                } else if btime > latest {
                    btime = latest;
                    self.counters.future_clamped_spans += 1;
                }
                let bucket = self.buckets.entry(btime).or_default();
                let pid = match last_payload {
                    Some((t, _, id)) if t == btime => id,
                    _ => {
                        let phash = *phash.get_or_init(|| self.hasher.hash_one(pkey));
                        let id = bucket.payload_id(&pkey, phash, (&agent_key, agent_hash), self.max_groups);
                        last_payload = Some((btime, git_commit_sha, id));
                        id
                    }
                };
                let hash = group_hash(&self.hasher, pid, &st.key);
                let found = bucket
                    .groups
                    .find_mut(hash, |g| g.hash == hash && g.payload == pid && st.key.matches(&g.key));
                if let Some(g) = found {
                    g.stats.add(weight, span.duration, st.error, st.top_level);
                    continue;
                }
                let (key, hash) = if bucket.groups.len() >= self.max_groups {
                    self.counters.overflow_spans += 1;
                    let key = GroupKeyRef::overflow();
                    let hash = group_hash(&self.hasher, pid, &key);
                    (key, hash)
                } else {
                    (st.key, hash)
                };
                let entry = bucket.groups.entry(
                    hash,
                    |g| g.hash == hash && g.payload == pid && key.matches(&g.key),
                    |g| g.hash,
                );
                entry
                    .or_insert_with(|| Group {
                        hash,
                        payload: pid,
                        key: key.to_owned_key(),
                        stats: GroupStats::default(),
                    })
                    .get_mut()
                    .stats
                    .add(weight, span.duration, st.error, st.top_level);
            }
        }
    }

    /// Removes and returns the buckets due at `now` (all of them when `force`), as one payload
    /// with the agent's hostname, env and version; `None` when nothing was due.
    pub fn flush(&mut self, now: SystemTime, force: bool) -> Option<pb::StatsPayload> {
        let now = unix_nanos(now);
        let due: BTreeMap<i64, Bucket> = if force {
            std::mem::take(&mut self.buckets)
        } else {
            let threshold = now.saturating_sub(BUFFER_LEN.saturating_mul(self.bucket_ns));
            let keep = self.buckets.split_off(&threshold.saturating_add(1));
            std::mem::replace(&mut self.buckets, keep)
        };
        let oldest = align(now, self.bucket_ns).saturating_sub((BUFFER_LEN - 1).saturating_mul(self.bucket_ns));
        self.oldest = self.oldest.max(oldest);
        let mut by_payload: BTreeMap<PayloadKey, Vec<pb::ClientStatsBucket>> = BTreeMap::new();
        for (start, bucket) in due {
            self.counters.buckets_flushed += 1;
            let Bucket { payloads, groups, .. } = bucket;
            let mut per_payload: Vec<Vec<Group>> = payloads.iter().map(|_| Vec::new()).collect();
            for g in groups {
                if let Some(v) = per_payload.get_mut(g.payload as usize) {
                    v.push(g);
                }
            }
            for (key, mut groups) in payloads.into_iter().zip(per_payload) {
                if groups.is_empty() {
                    continue;
                }
                groups.sort_by(|a, b| a.key.cmp(&b.key));
                self.counters.groups_flushed += groups.len() as u64;
                let stats = groups.iter().map(|g| g.stats.export(&g.key, &mut self.rng)).collect();
                by_payload.entry(key).or_default().push(pb::ClientStatsBucket {
                    start: u64::try_from(start).unwrap_or(0),
                    duration: self.bucket_ns as u64,
                    stats,
                    agent_time_shift: 0,
                });
            }
        }
        if by_payload.is_empty() {
            return None;
        }
        Some(pb::StatsPayload {
            agent_hostname: self.agent.hostname.clone(),
            agent_env: self.agent.env.clone(),
            agent_version: self.agent.version.clone(),
            stats: by_payload
                .into_iter()
                .map(|(key, stats)| pb::ClientStatsPayload {
                    stats,
                    ..key.to_client_payload()
                })
                .collect(),
            client_computed: false,
            split_payload: false,
        })
    }
}

/// Stats weight of a chunk whose root carries `_sample_rate = rate`.
pub fn weight_of_rate(rate: f64) -> f64 {
    if rate > 0.0 && rate <= 1.0 { 1.0 / rate } else { 1.0 }
}

fn group_hash(hasher: &DefaultHashBuilder, payload: u32, key: &GroupKeyRef<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u32(payload);
    key.hash_fields(&mut h);
    h.finish()
}

fn non_empty_or<'a>(v: &'a str, fallback: &'a str) -> &'a str {
    if v.is_empty() { fallback } else { v }
}

/// The value of `name:` in a comma-separated container tag list (`image_tag:1.2,git.commit.sha:…`).
fn container_tag<'a>(tags: &'a str, name: &str) -> &'a str {
    tags.split(',')
        .filter_map(|t| t.trim().split_once(':'))
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| v)
}

#[cfg(test)]
mod tests;
