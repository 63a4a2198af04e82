//! Local mode: with no Datadog API key and no OTLP endpoint, the agent keeps what it would
//! forward — kept traces and stats buckets with their latency sketches — in an embedded SQLite
//! database, and shows it in a web view on loopback (`127.0.0.1:8128` by default).
//!
//! * [`LocalStore`] — the third upstream (next to Datadog and OTLP). `push_traces` /
//!   `push_stats` only enqueue (bounded; a full queue drops and counts); a writer thread turns
//!   payloads into rows and writes them in batches, one transaction each, and runs
//!   [retention] every minute (age, then size). The database is
//!   `<data_dir>/local.sqlite3` in WAL mode, so the web view reads while the writer writes.
//!   A corrupt or locked file, or an unusable directory, is reported clearly (log, `status`,
//!   a banner on every page) and the store runs in memory instead: the agent keeps receiving.
//! * [`query`] — the figures behind the pages, from stored rows only: hits/errors/durations
//!   summed and DDSketches merged over the chosen window.
//! * [`web`] — the pages (services, a service's resources, a resource, a trace waterfall,
//!   trace search, the service map, monitors) and the JSON API under `/api/v1`.
//! * [`search`], [`service_map`], [`versions`] — trace search, who calls whom, per-version
//!   figures of a resource; [`anomaly`] — the expected band of a chart's points;
//!   [`monitor`] — thresholds evaluated on the store, webhooks, downtimes.
//!
//! Wiring (the agent's start-up):
//!
//! ```no_run
//! # async fn demo(config: trace_agent::config::AgentConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use trace_agent::local::LocalService;
//! use trace_agent::upstream::Upstream;
//!
//! if config.local_mode_active() {
//!     let local = LocalService::start(config.local.clone()).await?;
//!     let upstream: Arc<dyn Upstream> = Arc::new(local.store().clone()); // next to datadog/otlp
//!     // `AgentStats::local.set((local.web_url(), local.store().clone()))` for `status`;
//!     // at exit, after the pipeline drained: `local.shutdown(timeout).await`.
//! #   drop(upstream);
//! }
//! # Ok(()) }
//! ```

pub mod anomaly;
mod codec;
mod config;
mod mode;
pub mod monitor;
mod prepare;
mod quantiles;
pub mod query;
pub mod retention;
mod rows;
mod schema;
mod scoped;
pub mod search;
pub mod service_map;
mod state;
mod store;
mod upstream;
pub mod versions;
pub mod web;
mod writer;

pub use config::{
    DB_FILE_NAME, DEFAULT_MAX_SIZE_MB, DEFAULT_RETENTION, DEFAULT_WEB_PORT, LocalConfig, LocalMode, default_data_dir,
    parse_duration,
};
pub use mode::{LocalService, LocalStartError};
pub use schema::StoreError;
pub use store::{LocalStore, StoreMode, StoreStatus, unix_nanos};
pub use upstream::writer_status;

/// What `trace-agent status` shows about local mode.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalModeStatus {
    /// Where the web view is (`http://127.0.0.1:8128`).
    pub web_url: String,
    /// The store's counters.
    pub store: StoreStatus,
}

impl LocalModeStatus {
    /// The `status` section: where to look, where the data is, what was written or lost.
    pub fn render(&self) -> String {
        let s = &self.store;
        let mut out = format!("Local mode: web view on {}\n", self.web_url);
        out.push_str(&format!("  Store: {}\n", s.mode));
        if s.fallbacks > 0 {
            out.push_str(&format!(
                "  Fell back to memory {} time(s): data is NOT kept across restarts\n",
                s.fallbacks
            ));
        }
        out.push_str(&format!(
            "  Written: {} trace chunks ({} spans), {} stats groups; {:.1} of {} MiB used, retention {} h\n",
            s.chunks_written,
            s.spans_written,
            s.stats_groups_written,
            s.size_bytes as f64 / 1_048_576.0,
            s.max_size_bytes / 1_048_576,
            s.retention_seconds / 3600
        ));
        out.push_str(&format!(
            "  Dropped: {} trace / {} stats payloads (writer behind), {} / {} (write errors), {} after shutdown; queue {}/{}\n",
            s.dropped_trace_payloads_queue_full,
            s.dropped_stats_payloads_queue_full,
            s.dropped_trace_payloads_write_error,
            s.dropped_stats_payloads_write_error,
            s.dropped_after_shutdown,
            s.queue_depth,
            s.queue_capacity
        ));
        out.push_str(&format!(
            "  Accepted, not yet written: {} payloads ({} trace chunks, {:.1} of {:.1} MiB queued){}\n",
            s.pending_payloads,
            s.pending_chunks,
            s.pending_bytes as f64 / 1_048_576.0,
            s.queue_max_bytes as f64 / 1_048_576.0,
            if s.opening { "; opening the database file" } else { "" }
        ));
        if s.spooled_payloads + s.replayed_payloads > 0 {
            out.push_str(&format!(
                "  Spool: {} payloads spooled at shutdown, {} written back after a start\n",
                s.spooled_payloads, s.replayed_payloads
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
