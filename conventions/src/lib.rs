//! Datadog's conventions that both sides apply the same way, below `tracer` and
//! `trace-agent` (no dependencies): the span type of a database system (the agent's
//! `checkDBType`), the gRPC status code of a span for client stats, and the operation name,
//! resource and span type of an OpenTelemetry span ([`otel`]), and the tags a span's stats
//! group key is read from ([`stats`]). One copy, so the tracer's
//! client-side stats and OpenTelemetry bridge agree with the agent's.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod db;
pub mod grpc;
pub mod otel;
pub mod stats;

/// A status code (HTTP or gRPC) from a numeric attribute: a whole number in
/// `0..=u32::MAX`, else `None`.
pub fn code_from_f64(f: f64) -> Option<u32> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
}
