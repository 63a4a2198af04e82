//! [`LocalStore`] as the third [`Upstream`] (next to Datadog and OTLP).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LocalStore, StoreMode, StoreStatus};
use crate::upstream::{DropReason, ShutdownFuture, SignalStatus, Upstream, WriterStatus, pb};

impl Upstream for LocalStore {
    fn name(&self) -> &str {
        "local"
    }

    fn send_traces(&self, payload: Arc<pb::TracerPayload>) {
        self.push_traces(payload);
    }

    fn send_borrowed_traces(&self, payload: &crate::span::TracerPayload<'_>) -> bool {
        self.push_borrowed_traces(payload);
        true
    }

    fn send_stats(&self, payload: Arc<pb::StatsPayload>) {
        self.push_stats(payload);
    }

    fn status(&self) -> WriterStatus {
        writer_status(&self.status())
    }

    fn attach_ledger(&self, ledger: Arc<crate::ledger::Ledger>) {
        self.attach_ledger_inner(ledger);
    }

    fn pressure(&self) -> crate::upstream::Pressure {
        LocalStore::pressure(self)
    }

    fn room_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.room_notify())
    }

    fn shutdown(&self, timeout: Duration) -> ShutdownFuture<'_> {
        let store = self.clone();
        Box::pin(async move {
            // The writer thread finishes its batch; wait for it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || store.shutdown_blocking(timeout)).await;
            Upstream::status(self)
        })
    }
}

/// The store's counters in the shape every writer reports (`status`): "sent" = written.
pub fn writer_status(s: &StoreStatus) -> WriterStatus {
    let endpoint = match &s.mode {
        StoreMode::File { path } => format!("sqlite://{}", path.display()),
        StoreMode::Memory { .. } => "sqlite::memory: (fallback)".to_owned(),
    };
    let last_error = s
        .last_error
        .as_ref()
        .map(|(at, msg)| (UNIX_EPOCH + Duration::from_secs(*at), msg.clone()));
    let signal = |written: u64, items: u64, full: u64, failed: u64| SignalStatus {
        payloads_sent: written,
        items_sent: items,
        failures: if s.write_errors > 0 {
            [("write_error".to_owned(), s.write_errors)].into()
        } else {
            Default::default()
        },
        dropped_payloads: [
            (DropReason::QueueFull, full),
            (DropReason::Rejected, failed),
            (DropReason::Shutdown, s.dropped_after_shutdown),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect(),
        queue_depth: s.queue_depth,
        queue_capacity: s.queue_capacity,
        queue_bytes: usize::try_from(s.pending_bytes).unwrap_or(usize::MAX),
        queue_capacity_bytes: usize::try_from(s.queue_max_bytes).unwrap_or(usize::MAX),
        in_flight: usize::try_from(s.pending_payloads)
            .unwrap_or(usize::MAX)
            .saturating_sub(s.queue_depth),
        last_success: (written > 0).then(SystemTime::now),
        last_error: last_error.clone(),
        ..SignalStatus::default()
    };
    WriterStatus {
        name: "local".to_owned(),
        endpoints: vec![endpoint],
        traces: signal(
            s.trace_payloads_written,
            s.chunks_written,
            s.dropped_trace_payloads_queue_full,
            s.dropped_trace_payloads_write_error,
        ),
        stats: signal(
            s.stats_payloads_written,
            s.stats_groups_written,
            s.dropped_stats_payloads_queue_full,
            s.dropped_stats_payloads_write_error,
        ),
    }
}
