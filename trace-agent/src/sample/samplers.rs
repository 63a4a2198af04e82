//! [`Samplers`]: every sampler, run in the Go agent's order (spec 5.1, `runSamplers` and
//! `sample` in `pkg/trace/agent/agent.go`), then single-span sampling.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::SamplersConfig;
use super::counters::{Counters, Reason, SamplerName, SamplerStats, SignatureCounts};
use super::priority::PrioritySampler;
use super::probabilistic::{self, ProbabilisticSampler};
use super::rare::RareSampler;
use super::score::ScoreSampler;
use crate::process::toplevel::root_index;
use crate::span::{PRIORITY_NONE, Span, Str, TraceChunk, TracerPayload, tag_get, tag_set};

/// Span metric set by tracers on spans kept by a single-span sampling rule.
pub const KEY_SPAN_SAMPLING_MECHANISM: &str = "_dd.span_sampling.mechanism";
/// Chunk tag: decision maker.
pub const TAG_DECISION_MAKER: &str = "_dd.p.dm";
/// Decision maker of a manual (user) decision.
pub const MANUAL_DECISION_MAKER: &str = "-4";
/// Chunk tag written in error-tracking-standalone mode on chunks with an error.
pub const TAG_ETS_ERROR: &str = "_dd.error_tracking_standalone.error";
/// Feature flag: negative priorities other than manual drops go on to the rare and errors
/// samplers.
pub const FEATURE_ERROR_RARE_SAMPLE_TRACER_DROP: &str = "error_rare_sample_tracer_drop";
/// Priority of a user keep (what single-span-sampled chunks get).
pub const PRIORITY_USER_KEEP: i32 = 2;

/// Facts about the payload a chunk came in.
#[derive(Debug, Clone, Copy)]
pub struct ChunkContext<'a> {
    /// The tracer payload's env (after processing: the tracer's, the root's, or the agent's).
    pub tracer_env: &'a str,
    /// `Datadog-Client-Dropped-P0-Traces` / chunks in the payload: P0 traces the tracer did not
    /// send, spread over the chunks it did (they count in the priority feedback loop).
    pub client_dropped_p0s_weight: f64,
}

impl<'a> ChunkContext<'a> {
    /// The context for chunks of a payload with env `tracer_env` and `chunks` chunks, whose
    /// request said `client_dropped_p0_traces`.
    pub fn new(tracer_env: &'a str, client_dropped_p0_traces: u64, chunks: usize) -> Self {
        let weight = if chunks == 0 {
            0.0
        } else {
            client_dropped_p0_traces as f64 / chunks as f64
        };
        Self {
            tracer_env,
            client_dropped_p0s_weight: weight,
        }
    }
}

/// The decision for one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingOutcome {
    /// Kept as a trace (`dropped_trace = false`).
    pub keep: bool,
    /// The sampler that decided.
    pub sampler: SamplerName,
    /// Why.
    pub reason: Reason,
    /// The chunk's priority as received (`None` when it had none).
    pub priority: Option<i32>,
    /// When not kept: spans forwarded anyway by single-span sampling (the chunk now holds
    /// only those, with priority 2).
    pub single_span_spans: usize,
}

impl SamplingOutcome {
    /// Whether the chunk still has spans to forward (kept, or rescued by single-span sampling);
    /// when false the chunk is empty and should be removed.
    pub fn forward(&self) -> bool {
        self.keep || self.single_span_spans > 0
    }
}

/// What [`Samplers::sample_payload`] did to a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadSampling {
    /// Chunks kept as traces.
    pub kept: usize,
    /// Chunks forwarded with only single-span-sampled spans.
    pub single_span: usize,
    /// Chunks removed from the payload.
    pub removed: usize,
}

/// All samplers of the agent, with their counters. Owned by one thread; every method takes
/// the current time so tests drive it with a simulated clock.
#[derive(Debug)]
pub struct Samplers {
    priority: PrioritySampler,
    no_priority: ScoreSampler,
    errors: ScoreSampler,
    rare: RareSampler,
    probabilistic: ProbabilisticSampler,
    error_tracking_standalone: bool,
    error_rare_sample_tracer_drop: bool,
    rates_changed: bool,
    counters: Counters,
}

fn contains_error(spans: &[Span<'_>], consider_exception_events: bool) -> bool {
    spans
        .iter()
        .any(|s| s.error != 0 || (consider_exception_events && s.meta("_dd.span_events.has_exception") == Some("true")))
}

fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Samplers {
    /// Samplers configured from their section (`config::compile::samplers`):
    /// `max_traces_per_second` (target of the priority and no-priority samplers),
    /// `extra_sample_rate`, `default_env`, `features` and `sampler`.
    pub fn new(config: &SamplersConfig) -> Self {
        let s = &config.sampler;
        let feature = |f: &str| config.features.iter().any(|x| x == f);
        Self {
            priority: PrioritySampler::new(
                config.max_traces_per_second,
                config.extra_sample_rate,
                &config.default_env,
                s.max_catalog_entries,
            ),
            no_priority: ScoreSampler::no_priority(config.max_traces_per_second, config.extra_sample_rate),
            errors: ScoreSampler::errors(s.errors_per_second, config.extra_sample_rate),
            rare: RareSampler::new(s.rare),
            probabilistic: ProbabilisticSampler::new(s.probabilistic, feature(probabilistic::FEATURE_FULL_TRACE_ID)),
            error_tracking_standalone: s.error_tracking_standalone,
            error_rare_sample_tracer_drop: feature(FEATURE_ERROR_RARE_SAMPLE_TRACER_DROP),
            rates_changed: false,
            counters: Counters::default(),
        }
    }

    /// Samples one processed chunk at `now` and rewrites it: priority (probabilistic mode),
    /// `dropped_trace`, chunk tags (`_dd.p.dm=-9`, ETS error tag), root metrics
    /// (`_sampling_priority_rate_v1`, `_dd.errors_sr`, `_dd.no_p_sr`, `_dd.prob_sr`), span
    /// metric `_dd.rare`. When not kept, only single-span-sampled spans stay (priority 2,
    /// `dropped_trace = false`); with none, the chunk is left empty: remove it unless
    /// [`SamplingOutcome::forward`].
    pub fn sample(&mut self, chunk: &mut TraceChunk<'_>, ctx: &ChunkContext<'_>, now: SystemTime) -> SamplingOutcome {
        let received_priority = (chunk.priority != PRIORITY_NONE).then_some(chunk.priority);
        let Some(root_i) = root_index(&chunk.spans) else {
            self.counters.record(
                "",
                ctx.tracer_env,
                SamplerName::Unknown,
                Reason::Empty,
                received_priority,
            );
            return SamplingOutcome {
                keep: false,
                sampler: SamplerName::Unknown,
                reason: Reason::Empty,
                priority: received_priority,
                single_span_spans: 0,
            };
        };
        let (sampler, reason) = self.run_samplers(chunk, root_i, ctx, since_epoch(now));
        let keep = reason.keeps();
        let service = chunk.spans.get(root_i).map(|r| r.service.clone()).unwrap_or_default();
        self.counters
            .record(&service, ctx.tracer_env, sampler, reason, received_priority);
        chunk.dropped_trace = !keep;
        let mut single_span_spans = 0;
        if !keep {
            let before = chunk.spans.len();
            if !self.error_tracking_standalone
                && chunk
                    .spans
                    .iter()
                    .any(|s| s.metric(KEY_SPAN_SAMPLING_MECHANISM).is_some())
            {
                chunk.spans.retain(|s| s.metric(KEY_SPAN_SAMPLING_MECHANISM).is_some());
                chunk.priority = PRIORITY_USER_KEEP;
                chunk.dropped_trace = false;
                single_span_spans = chunk.spans.len();
                self.counters.stats.single_span_chunks += 1;
                self.counters.stats.single_span_spans += single_span_spans as u64;
            } else {
                // Legacy analytics events are not extracted: nothing else survives.
                chunk.spans.clear();
            }
            self.counters.stats.spans_dropped += (before - chunk.spans.len()) as u64;
        }
        SamplingOutcome {
            keep,
            sampler,
            reason,
            priority: received_priority,
            single_span_spans,
        }
    }

    fn run_samplers(
        &mut self,
        chunk: &mut TraceChunk<'_>,
        root_i: usize,
        ctx: &ChunkContext<'_>,
        now: Duration,
    ) -> (SamplerName, Reason) {
        let now_secs = now.as_secs() as i64;
        let env = ctx.tracer_env;
        let errors = |s: &mut ScoreSampler, spans: &mut [Span<'_>]| {
            if s.sample(now_secs, spans, root_i, env) {
                (SamplerName::Error, Reason::ErrorsKeep)
            } else {
                (SamplerName::Error, Reason::ErrorsDrop)
            }
        };
        if self.error_tracking_standalone {
            if contains_error(&chunk.spans, true) {
                tag_set(&mut chunk.tags, TAG_ETS_ERROR, Str::from("true"));
                return errors(&mut self.errors, &mut chunk.spans);
            }
            return (SamplerName::Error, Reason::NoError);
        }

        let priority = (chunk.priority != PRIORITY_NONE).then_some(chunk.priority);
        // Always first, so the rare sampler sees every chunk's shapes.
        let rare = self.rare.sample(now, priority, &mut chunk.spans, env);

        if self.probabilistic.enabled() {
            let decision = if rare {
                (SamplerName::Rare, Reason::Rare)
            } else if chunk
                .spans
                .get_mut(root_i)
                .is_some_and(|root| self.probabilistic.sample(root))
            {
                tag_set(
                    &mut chunk.tags,
                    TAG_DECISION_MAKER,
                    Str::from(probabilistic::DECISION_MAKER),
                );
                (SamplerName::Probabilistic, Reason::ProbabilisticKeep)
            } else if contains_error(&chunk.spans, false) {
                errors(&mut self.errors, &mut chunk.spans)
            } else {
                (SamplerName::Probabilistic, Reason::ProbabilisticDrop)
            };
            chunk.priority = i32::from(decision.1.keeps());
            return decision;
        }

        let dm = tag_get(&chunk.tags, TAG_DECISION_MAKER).map(Str::as_str);
        let name = match priority {
            Some(_) if dm == Some(probabilistic::DECISION_MAKER) => SamplerName::Probabilistic,
            Some(_) => SamplerName::Priority,
            None => SamplerName::NoPriority,
        };
        let user_drop = if self.error_rare_sample_tracer_drop {
            priority == Some(-1) && dm == Some(MANUAL_DECISION_MAKER)
        } else {
            priority.is_some_and(|p| p < 0)
        };
        if user_drop {
            return (name, Reason::UserDrop);
        }
        if rare {
            return (SamplerName::Rare, Reason::Rare);
        }
        match priority {
            Some(p) => {
                if let Some(root) = chunk.spans.get_mut(root_i) {
                    let (keep, rotated) = self
                        .priority
                        .sample(now_secs, p, root, env, ctx.client_dropped_p0s_weight);
                    if rotated {
                        self.rates_changed = true;
                        self.counters.stats.rate_updates += 1;
                    }
                    if keep {
                        return (name, Reason::TracerKeep);
                    }
                }
            }
            None => {
                if self.no_priority.sample(now_secs, &mut chunk.spans, root_i, env) {
                    return (name, Reason::NoPriorityKeep);
                }
            }
        }
        if contains_error(&chunk.spans, false) {
            return errors(&mut self.errors, &mut chunk.spans);
        }
        match priority {
            Some(_) => (name, Reason::TracerDrop),
            None => (name, Reason::NoPriorityDrop),
        }
    }

    /// Samples every chunk of `payload` (see [`Self::sample`]) and removes the chunks left
    /// with nothing to forward. `client_dropped_p0_traces` is the request's
    /// `Datadog-Client-Dropped-P0-Traces`.
    pub fn sample_payload(
        &mut self,
        payload: &mut TracerPayload<'_>,
        client_dropped_p0_traces: u64,
        now: SystemTime,
    ) -> PayloadSampling {
        let TracerPayload { env, chunks, .. } = payload;
        let ctx = ChunkContext::new(env, client_dropped_p0_traces, chunks.len());
        let mut out = PayloadSampling::default();
        chunks.retain_mut(|chunk| {
            let o = self.sample(chunk, &ctx, now);
            if o.keep {
                out.kept += 1;
            } else if o.forward() {
                out.single_span += 1;
            } else {
                out.removed += 1;
            }
            o.forward()
        });
        out
    }

    /// The new `rate_by_service` table when the priority rates were recomputed since the last
    /// call (at most once per 5 s bucket), else `None`. Keys are `service:S,env:E`,
    /// `service:S,env:` (when E is the agent env) and `service:,env:`; push them with
    /// [`crate::sample::rates::RatesTable::replace_all`].
    pub fn take_rates_update(&mut self) -> Option<BTreeMap<String, f64>> {
        if !std::mem::take(&mut self.rates_changed) {
            return None;
        }
        Some(self.priority.rates_by_service())
    }

    /// The current `rate_by_service` table (see [`Self::take_rates_update`]).
    pub fn rates_by_service(&mut self) -> BTreeMap<String, f64> {
        self.priority.rates_by_service()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SamplerStats {
        let mut s = self.counters.snapshot();
        s.signatures = SignatureCounts {
            priority: self.priority.engine().size(),
            no_priority: self.no_priority.engine().size(),
            errors: self.errors.engine().size(),
        };
        s.catalog_entries = self.priority.catalog().len();
        s.catalog_evicted = self.priority.catalog().evicted();
        s.rare = self.rare.counters();
        s
    }

    /// Changes the priority and no-priority target (e.g. remote configuration).
    pub fn set_target_tps(&mut self, target_tps: f64) {
        self.priority.set_target_tps(target_tps);
        self.no_priority.set_target_tps(target_tps);
    }

    /// Changes the errors-sampler target.
    pub fn set_error_tps(&mut self, error_tps: f64) {
        self.errors.set_target_tps(error_tps);
    }
}
