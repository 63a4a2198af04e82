//! What the samplers decided, counted (spec 5.7): totals, every decision by sampler and
//! reason, and seen/kept per `(service, env, sampler, priority)` with a bounded number of keys
//! (the Go agent's `datadog.trace_agent.sampler.seen/kept`). [`SamplerStats`] is the plain
//! snapshot `status` prints.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::rare::RareCounters;
use super::signature::service_signature;

/// Which sampler made the final decision (names of the Go agent's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    /// No sampler ran (empty chunk).
    Unknown,
    /// Tracer priority (feedback-loop sampler).
    Priority,
    /// Chunks without a priority.
    NoPriority,
    /// Errors sampler.
    Error,
    /// Rare sampler.
    Rare,
    /// Probabilistic sampler.
    Probabilistic,
}

impl SamplerName {
    /// Name used in counters and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Priority => "priority",
            Self::NoPriority => "no_priority",
            Self::Error => "error",
            Self::Rare => "rare",
            Self::Probabilistic => "probabilistic",
        }
    }
}

/// Why a chunk was kept or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Kept: the tracer's priority is > 0.
    TracerKeep,
    /// Dropped: the tracer's priority is ≤ 0 and no other sampler rescued the chunk.
    TracerDrop,
    /// Dropped: priority < 0 (user drop; with feature `error_rare_sample_tracer_drop`, only a
    /// manual drop `_dd.p.dm=-4`). Never rescued.
    UserDrop,
    /// Kept: the rare sampler saw a new shape.
    Rare,
    /// Kept: selected by the probabilistic sampler's hash.
    ProbabilisticKeep,
    /// Dropped: not selected by the probabilistic sampler (and not rare or error-kept).
    ProbabilisticDrop,
    /// Kept: the no-priority sampler's rate.
    NoPriorityKeep,
    /// Dropped: the no-priority sampler's rate (no error span).
    NoPriorityDrop,
    /// Kept: the errors sampler's rate.
    ErrorsKeep,
    /// Dropped: the chunk has an error but the errors sampler's rate declined it.
    ErrorsDrop,
    /// Dropped: error-tracking-standalone mode and no error in the chunk.
    #[serde(rename = "ets_no_error")]
    NoError,
    /// Dropped: no spans.
    Empty,
}

impl Reason {
    /// Name used in counters and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TracerKeep => "tracer_keep",
            Self::TracerDrop => "tracer_drop",
            Self::UserDrop => "user_drop",
            Self::Rare => "rare",
            Self::ProbabilisticKeep => "probabilistic_keep",
            Self::ProbabilisticDrop => "probabilistic_drop",
            Self::NoPriorityKeep => "no_priority_keep",
            Self::NoPriorityDrop => "no_priority_drop",
            Self::ErrorsKeep => "errors_keep",
            Self::ErrorsDrop => "errors_drop",
            Self::NoError => "ets_no_error",
            Self::Empty => "empty",
        }
    }

    /// Whether this reason keeps the chunk.
    pub fn keeps(self) -> bool {
        matches!(
            self,
            Self::TracerKeep | Self::Rare | Self::ProbabilisticKeep | Self::NoPriorityKeep | Self::ErrorsKeep
        )
    }
}

/// Most `(service, env, sampler, priority)` keys counted; later ones go to
/// [`SamplerStats::other`].
pub const MAX_KEYS: usize = 1000;

/// Seen/kept for one `(service, env, sampler, priority)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    /// Root service.
    pub service: String,
    /// Tracer env.
    pub env: String,
    /// Sampler that decided.
    pub sampler: SamplerName,
    /// Chunk priority (only for the priority sampler, like the Go agent's tags).
    pub priority: Option<i32>,
    /// Chunks seen.
    pub seen: u64,
    /// Chunks kept.
    pub kept: u64,
}

/// Seen/kept beyond the key cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherCounts {
    /// Chunks seen.
    pub seen: u64,
    /// Chunks kept.
    pub kept: u64,
}

/// Chunks decided by one sampler for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCount {
    /// The sampler.
    pub sampler: SamplerName,
    /// The reason.
    pub reason: Reason,
    /// Chunks.
    pub chunks: u64,
}

/// Signatures tracked by each rate engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureCounts {
    /// Priority sampler (`(service, env)` signatures).
    pub priority: usize,
    /// No-priority sampler.
    pub no_priority: usize,
    /// Errors sampler.
    pub errors: usize,
}

/// A snapshot of every sampler counter (serializable, for `status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerStats {
    /// Chunks given to the samplers.
    pub chunks_seen: u64,
    /// Chunks kept as traces.
    pub chunks_kept: u64,
    /// Chunks not kept as traces (`chunks_seen = chunks_kept + chunks_dropped`).
    pub chunks_dropped: u64,
    /// Of the dropped chunks, those forwarded with only their single-span-sampled spans.
    pub single_span_chunks: u64,
    /// Spans forwarded by single-span sampling.
    pub single_span_spans: u64,
    /// Spans removed (dropped chunks, and the other spans of single-span-sampled chunks).
    pub spans_dropped: u64,
    /// Chunks per `(sampler, reason)`, sorted.
    pub decisions: Vec<DecisionCount>,
    /// Seen/kept per key, sorted by service, env, sampler, priority.
    pub by_key: Vec<KeyCounts>,
    /// Seen/kept of keys past [`MAX_KEYS`].
    pub other: OtherCounts,
    /// Times the priority rates were recomputed (new `rate_by_service` available).
    pub rate_updates: u64,
    /// Signatures tracked by the rate engines.
    pub signatures: SignatureCounts,
    /// `(service, env)` pairs in the priority catalog.
    pub catalog_entries: usize,
    /// Pairs evicted from the full catalog.
    pub catalog_evicted: u64,
    /// Rare sampler hits, misses, shrinks.
    pub rare: RareCounters,
}

impl SamplerStats {
    /// Chunks counted for `(sampler, reason)`.
    pub fn decided(&self, sampler: SamplerName, reason: Reason) -> u64 {
        self.decisions
            .iter()
            .filter(|d| d.sampler == sampler && d.reason == reason)
            .map(|d| d.chunks)
            .sum()
    }

    /// Human-readable lines for `trace-agent status` (two-space indented).
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "  Traces: {} seen, {} kept, {} dropped ({} forwarded as single spans: {} spans)",
            self.chunks_seen, self.chunks_kept, self.chunks_dropped, self.single_span_chunks, self.single_span_spans
        );
        for d in &self.decisions {
            let _ = writeln!(
                o,
                "    {:<14} {:<20} {}",
                d.sampler.as_str(),
                d.reason.as_str(),
                d.chunks
            );
        }
        if !self.by_key.is_empty() {
            let _ = writeln!(o, "  By service (seen / kept):");
        }
        for k in &self.by_key {
            let priority = k.priority.map(|p| format!(" priority {p}")).unwrap_or_default();
            let _ = writeln!(
                o,
                "    service:{} env:{} {}{}: {} / {}",
                k.service,
                k.env,
                k.sampler.as_str(),
                priority,
                k.seen,
                k.kept
            );
        }
        if self.other.seen > 0 {
            let _ = writeln!(o, "    (other keys): {} / {}", self.other.seen, self.other.kept);
        }
        let _ = writeln!(
            o,
            "  Signatures: priority {}, no_priority {}, errors {}; catalog {} (evicted {}); rate updates {}",
            self.signatures.priority,
            self.signatures.no_priority,
            self.signatures.errors,
            self.catalog_entries,
            self.catalog_evicted,
            self.rate_updates
        );
        let _ = writeln!(
            o,
            "  Rare sampler: {} hits, {} misses, {} shrinks",
            self.rare.hits, self.rare.misses, self.rare.shrinks
        );
        o
    }
}

/// The mutable side of [`SamplerStats`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Tallies {
    pub(crate) chunks_seen: u64,
    pub(crate) chunks_kept: u64,
    pub(crate) chunks_dropped: u64,
    pub(crate) single_span_chunks: u64,
    pub(crate) single_span_spans: u64,
    pub(crate) spans_dropped: u64,
    pub(crate) rate_updates: u64,
    decisions: BTreeMap<(SamplerName, Reason), u64>,
    by_key: Vec<KeyCounts>,
    other: OtherCounts,
}

/// Mutable counters owned by [`super::Samplers`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub(crate) stats: Tallies,
    keys: HashMap<u64, Vec<usize>>,
}

fn key_hash(service: &str, env: &str, sampler: SamplerName, priority: Option<i32>) -> u64 {
    let p = priority.map_or(0x100, |p| u64::from(p as u8));
    service_signature(service, env) ^ ((sampler as u64) << 32) ^ (p << 40)
}

impl Counters {
    /// Records one decision.
    pub(crate) fn record(
        &mut self,
        service: &str,
        env: &str,
        sampler: SamplerName,
        reason: Reason,
        priority: Option<i32>,
    ) {
        let keep = reason.keeps();
        let s = &mut self.stats;
        s.chunks_seen += 1;
        if keep {
            s.chunks_kept += 1;
        } else {
            s.chunks_dropped += 1;
        }
        *s.decisions.entry((sampler, reason)).or_insert(0) += 1;
        let priority = if sampler == SamplerName::Priority {
            priority
        } else {
            None
        };
        let h = key_hash(service, env, sampler, priority);
        let slot = self.keys.entry(h).or_default();
        let found = slot.iter().copied().find(|&i| {
            s.by_key
                .get(i)
                .is_some_and(|k| k.service == service && k.env == env && k.sampler == sampler && k.priority == priority)
        });
        let counts = match found {
            Some(i) => s.by_key.get_mut(i),
            None if s.by_key.len() < MAX_KEYS => {
                slot.push(s.by_key.len());
                s.by_key.push(KeyCounts {
                    service: service.to_owned(),
                    env: env.to_owned(),
                    sampler,
                    priority,
                    seen: 0,
                    kept: 0,
                });
                s.by_key.last_mut()
            }
            None => None,
        };
        match counts {
            Some(c) => {
                c.seen += 1;
                c.kept += u64::from(keep);
            }
            None => {
                s.other.seen += 1;
                s.other.kept += u64::from(keep);
            }
        }
    }

    /// The snapshot, keys sorted (engine sizes, catalog and rare counters filled by the caller).
    pub(crate) fn snapshot(&self) -> SamplerStats {
        let t = &self.stats;
        let mut by_key = t.by_key.clone();
        by_key.sort_by(|a, b| {
            (&a.service, &a.env, a.sampler, a.priority).cmp(&(&b.service, &b.env, b.sampler, b.priority))
        });
        SamplerStats {
            chunks_seen: t.chunks_seen,
            chunks_kept: t.chunks_kept,
            chunks_dropped: t.chunks_dropped,
            single_span_chunks: t.single_span_chunks,
            single_span_spans: t.single_span_spans,
            spans_dropped: t.spans_dropped,
            decisions: t
                .decisions
                .iter()
                .map(|(&(sampler, reason), &chunks)| DecisionCount {
                    sampler,
                    reason,
                    chunks,
                })
                .collect(),
            by_key,
            other: t.other,
            rate_updates: t.rate_updates,
            signatures: SignatureCounts::default(),
            catalog_entries: 0,
            catalog_evicted: 0,
            rare: RareCounters::default(),
        }
    }
}
