//! Datadog-compatible trace agent: a drop-in receiver for Datadog tracers on `127.0.0.1:8126`.
//!
//! Everything `main.rs` runs lives here so it can be driven in-process by tests:
//!
//! * [`config`] — `datadog.yaml` + `DD_*` environment, typed and validated once, with the origin
//!   of every value;
//! * [`decode`] — lenient zero-copy decoders for the v0.3/v0.4 (msgpack and JSON), v0.5 and
//!   v0.7 trace payloads into the [`span`] model, whose strings borrow the request body;
//! * [`process`] — the pure per-chunk stages of the Datadog agent (normalization, filters,
//!   obfuscation, tag rules, top-level computation);
//! * [`receiver`] — the hyper HTTP server with its limits, the `/info` document and the
//!   sampling-rates table;
//! * [`pipeline`] — the bounded hand-off of processed payloads ([`span::OwnedPayload`]: spans
//!   plus the body they borrow) to the next stage, a [`pipeline::ChunkSink`] on its own thread
//!   (a counting sink until samplers, stats and writers exist; see [`start_with_sink`]);
//! * [`sample`] — the samplers (priority feedback loop, errors, no-priority, rare,
//!   probabilistic, single-span) and their counters;
//! * [`stats`] — the stats concentrator (DDSketch latencies) and the client-stats aggregator;
//! * [`upstream`] — the writers: Datadog intake (protobuf + zstd, msgpack stats), OTLP/HTTP;
//! * [`forward`] — the real next stage: stats → samplers → upstream writers;
//! * [`status`] — the counters behind `trace-agent status`.
//!
//! Per request: limits (cross-site, declared size, decoder slot) → bounded body read →
//! decode + process on a blocking thread → hand-off (the decoder slot is held until the
//! next stage accepted the payload, so a slow stage turns into 429s, not memory) → rates reply.
//!
//! ```no_run
//! # async fn demo() -> Result<(), trace_agent::RunError> {
//! let config = trace_agent::config::AgentConfig::default();
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! trace_agent::run(config, shutdown).await?;
//! # Ok(()) }
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod alloc;
pub mod config;
pub mod decode;
pub mod env;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod ledger;
pub mod local;
pub mod net;
pub mod otlp_in;
pub mod pipeline;
pub mod process;
pub mod receiver;
pub mod sample;
pub mod secret;
pub mod span;
pub mod stats;
pub mod status;
pub mod text;
pub mod upstream;

mod agent;

pub use agent::{Agent, RunError, run, start, start_with_sink, start_with_upstreams, upstreams_from_config};
