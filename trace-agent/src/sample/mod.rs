//! The agent's samplers (spec section 5): what to keep of the chunks tracers send, and the
//! `rate_by_service` feedback that steers tracers towards the target TPS.
//!
//! [`Samplers::sample`] runs them in the Go agent's order on one processed chunk:
//! error-tracking-standalone mode, the rare sampler (always, to learn shapes), the
//! probabilistic sampler when enabled (it replaces priority sampling), the user-drop rule, the
//! priority sampler (chunks with a priority: keep iff > 0, and count P0/P1 for the feedback
//! loop) or the no-priority sampler, then the errors sampler for what is still dropped.
//! Chunks not kept keep only their single-span-sampled spans.
//!
//! Everything is a plain struct owned by one thread and every decision takes `now`, so tests
//! drive the 5 s buckets with a simulated clock. Counters: [`Samplers::stats`].
//!
//! ```
//! use std::time::SystemTime;
//! use trace_agent::sample::{ChunkContext, Samplers};
//! use trace_agent::span::{Span, TraceChunk};
//!
//! let config = trace_agent::config::AgentConfig::default();
//! let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&config));
//! let mut chunk = TraceChunk::from_spans(vec![Span { trace_id: 1, span_id: 1, ..Span::default() }]);
//! chunk.priority = 1;
//! let outcome = samplers.sample(&mut chunk, &ChunkContext::new("prod", 0, 1), SystemTime::now());
//! assert!(outcome.keep);
//! if let Some(rates) = samplers.take_rates_update() {
//!     // push `rates` into the receiver's RatesTable
//!     # let _ = rates;
//! }
//! ```

mod catalog;
mod config;
mod counters;
mod engine;
mod priority;
mod probabilistic;
mod rare;
pub mod rates;
mod samplers;
mod score;
mod signature;

pub use catalog::{DEFAULT_MAX_CATALOG_ENTRIES, DEFAULT_RATE_KEY, ServiceCatalog, rate_key};
pub use config::{DEFAULT_ERROR_TPS, SamplerConfig, SamplersConfig};
pub use counters::{
    DecisionCount, KeyCounts, MAX_KEYS, OtherCounts, Reason, SamplerName, SamplerStats, SignatureCounts,
};
pub use engine::{
    BUCKET_SECS, KEY_PRE_SAMPLER_RATE, KEY_SAMPLE_RATE, MAX_RATE_INCREASE, NUM_BUCKETS, RateEngine, root_weight,
    sample_by_rate,
};
pub use priority::{KEY_AGENT_RATE, KEY_PRIORITY_RATE, KEY_RULE_RATE, PrioritySampler};
pub use probabilistic::{
    DECISION_MAKER as PROBABILISTIC_DECISION_MAKER, FEATURE_FULL_TRACE_ID, KEY_PROB_RATE, ProbabilisticConfig,
    ProbabilisticSampler,
};
pub use rare::{BURST as RARE_BURST, KEY_MEASURED, KEY_RARE, PRIORITY_TTL, RareConfig, RareCounters, RareSampler};
pub use samplers::{
    ChunkContext, FEATURE_ERROR_RARE_SAMPLE_TRACER_DROP, KEY_SPAN_SAMPLING_MECHANISM, MANUAL_DECISION_MAKER,
    PRIORITY_USER_KEEP, PayloadSampling, Samplers, SamplingOutcome, TAG_DECISION_MAKER, TAG_ETS_ERROR,
};
pub use score::{KEY_ERRORS_RATE, KEY_NO_PRIORITY_RATE, MAX_SIGNATURES, ScoreSampler};
pub use signature::{Signature, chunk_signature, service_signature, span_hash};

#[cfg(test)]
mod tests;
