//! A Datadog-compatible APM tracer for Rust services.
//!
//! Spans carry a service, an operation name, a resource, a type, tags and errors, as
//! Datadog defines them. Finished traces go into a bounded lock-free queue; a background
//! thread samples them, encodes msgpack (v0.5 when the agent offers it, else v0.4) and
//! sends it to a trace agent
//! (`127.0.0.1:8126` by default: Datadog's agent, this workspace's `trace-agent`, or any
//! compatible one), applying the agent's sampling feedback. The application thread never
//! blocks on the agent, and a full queue drops and counts rather than waits.
//!
//! # Quickstart
//!
//! ```no_run
//! use std::time::Duration;
//! use tracer::{Tracer, TracerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // DD_SERVICE, DD_ENV, DD_VERSION, DD_TRACE_AGENT_URL, ... are read here.
//! let tracer = Tracer::new(TracerConfig::from_env()?.with_service("checkout"))?;
//! let _shutdown = tracer.shutdown_guard(Duration::from_secs(5));
//!
//! let mut request = tracer.span("http.request").resource("GET /cart").span_type("web").start();
//! request.set_tag("http.method", "GET");
//! {
//!     let _query = request.child("postgres.query").resource("SELECT * FROM cart").span_type("sql").start();
//! } // finishes here
//! request.set_tag("http.status_code", "200");
//! # Ok(())
//! # }
//! ```
//!
//! Inside async code, [`Instrument::in_span`] keeps a span current across `.await`, so
//! spans started without an explicit parent nest under it.
//!
//! With the `tower` feature (`axum` for axum's route templates), `http` has tower layers
//! that trace an HTTP server's requests and a client's calls, with context propagation.
//!
//! # Configuration
//!
//! [`TracerConfig::from_env`] reads `DD_SERVICE`, `DD_ENV`, `DD_VERSION`, `DD_TAGS`,
//! `DD_AGENT_HOST`, `DD_TRACE_AGENT_PORT`, `DD_TRACE_AGENT_URL` (`http://` or `unix://`),
//! `DD_TRACE_ENABLED`, `DD_TRACE_SAMPLE_RATE`, `DD_TRACE_SAMPLING_RULES`,
//! `DD_TRACE_RATE_LIMIT`, `DD_TRACE_PARTIAL_FLUSH_ENABLED`,
//! `DD_TRACE_PARTIAL_FLUSH_MIN_SPANS`, `DD_TRACE_AGENT_TIMEOUT`, `DD_TRACE_API_VERSION` and
//! `DD_TRACE_STATS_COMPUTATION_ENABLED` (client-side stats and P0 dropping); a
//! bad value is an error
//! naming the variable. Every `with_*` method overrides in code.
//!
//! # Integrations (cargo features)
//!
//! - `tracing-layer`: [`layer::DatadogLayer`], a `tracing-subscriber` layer that records
//!   `tracing` spans (`#[instrument]`, `info_span!`) as spans of this tracer, and
//!   [`layer::WithLogCorrelation`], a log formatter adding `dd.trace_id`/`dd.span_id`.
//! - `opentelemetry`: [`otel::TracerProvider`], the OpenTelemetry trace API on this
//!   tracer's pipeline, with Datadog's OpenTelemetry→Datadog span mapping.
//!
//! [`log_correlation`] (always available) gives the fields to put in log lines.
//!
//! Spans carry links ([`Span::add_link`], [`SpanBuilder::link`]) and events
//! ([`Span::add_event`]), sent as the Datadog tracers send them (native `span_links` /
//! `span_events` in v0.4, the `_dd.span_links` / `events` JSON tags otherwise). With the
//! `reqwest` feature, `http::ReqwestMiddleware` traces `reqwest` calls.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

mod buffer;
mod clock;
pub mod config;
mod core;
mod export;
mod health;
#[cfg(feature = "tower")]
pub mod http;
mod ledger;
pub mod propagation;
pub mod sampling;
mod span;
mod stats;
mod tracer;

// Integrations: log correlation, the `tracing` Layer, the OpenTelemetry bridge.
#[cfg(feature = "tracing-layer")]
pub mod layer;
mod log_correlation;
#[cfg(feature = "opentelemetry")]
pub mod otel;
pub use log_correlation::{LogCorrelation, log_correlation};
#[cfg(all(test, feature = "tracing-layer", feature = "opentelemetry"))]
mod equivalence_tests;

#[cfg(test)]
mod tests;

pub use config::{AgentEndpoint, ConfigError, TraceApi, TracerConfig};
pub use core::FlushError;
pub use health::Health;
pub use span::{AttributeValue, Entered, SpanContext, SpanData, SpanEvent, SpanId, SpanLink, Str, TraceId};
pub use tracer::{Instrument, Instrumented, ShutdownGuard, Span, SpanBuilder, Tracer, TracerError, WithContext};
