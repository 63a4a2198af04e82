//! The HTTP receiver: listeners and limits ([`server`]), the route table ([`routes`]), trace
//! payload handling ([`traces`]) and `/info` ([`info`]); the sampling-rates table it replies
//! with is [`crate::sample::rates`].

pub mod budget;
pub mod info;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod traces;
pub mod watchdog;

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::AgentConfig;
use crate::pipeline::PipelineSender;
use crate::process::ProcessConfig;
use crate::status::AgentStats;

/// State shared by every request handler.
#[derive(Debug)]
pub struct AppState {
    /// Effective configuration.
    pub config: Arc<AgentConfig>,
    /// Compiled processing configuration.
    pub process: Arc<ProcessConfig>,
    /// `/info`.
    pub info: info::InfoDoc,
    /// Rates returned on trace replies.
    pub rates: Arc<crate::sample::rates::RatesTable>,
    /// Counters.
    pub stats: Arc<AgentStats>,
    /// Decoder slots (`apm_config.decoders`): held for the CPU-bound decoding only.
    pub decoders: Semaphore,
    /// Bytes of request bodies held at once, every route together
    /// (`apm_config.receiver_max_buffered_bytes`, see [`budget`]).
    pub body_budget: Arc<crate::pipeline::ByteBudget>,
    /// Hand-off to the next stage.
    pub pipeline: PipelineSender,
    /// Where the receiver listens, for `status`.
    pub listening: Vec<String>,
    /// The proxy routes (`/evp_proxy/…`, `/telemetry/proxy/…`, `/v0.7/config`).
    pub proxy: proxy::Proxy,
    /// Unix time (s) of the last warning logged for a bad payload (rate limit).
    pub last_warn: std::sync::atomic::AtomicU64,
    /// `apm_config.max_memory` / `max_cpu_percent`: refuse payloads while over them.
    pub watchdog: Arc<watchdog::Watchdog>,
}

/// Logs a warning about bad input at most once every 10 seconds (one limiter for the msgpack
/// and OTLP receivers) and remembers it as the last error.
pub(crate) fn warn_limited(state: &AppState, msg: &str) {
    use std::sync::atomic::Ordering;
    use std::time::{SystemTime, UNIX_EPOCH};
    state.stats.record_error(msg.to_owned());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = state.last_warn.load(Ordering::Relaxed);
    if now >= last + 10
        && state
            .last_warn
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!("{msg}");
    }
}
