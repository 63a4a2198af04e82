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
