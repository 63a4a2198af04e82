//! The hand-off from the receiver to the next stage (samplers, stats, writers of a later issue):
//! processed trace payloads and decoded `/v0.6/stats` payloads travel, as [`PipelineItem`]s, over
//! one bounded channel to a [`ChunkSink`] that runs on its own task. Until that stage exists,
//! [`CountingSink`] counts what it would have forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::span::OwnedPayload;
use crate::stats::ClientStatsInput;

/// One processed payload, ready for sampling, stats and writing.
#[derive(Debug)]
pub struct ProcessedPayload {
    /// The payload with its surviving, processed chunks (borrowing the request body).
    pub payload: OwnedPayload,
    /// `Datadog-Client-Computed-Stats` was truthy: do not compute stats again.
    pub client_computed_stats: bool,
    /// P0 traces the tracer dropped locally (`Datadog-Client-Dropped-P0-Traces`).
    pub client_dropped_p0_traces: u64,
    /// When the receiver accepted it.
    pub received_at: SystemTime,
}

/// What travels from the receiver to the [`ChunkSink`].
#[derive(Debug)]
pub enum PipelineItem {
    /// A processed trace payload (`/v0.x/traces`).
    Traces(ProcessedPayload),
    /// A decoded and processed client-stats payload (`/v0.6/stats`).
    ClientStats(ClientStatsInput),
    /// Time passed (sent every second by the agent): flush what is due.
    Tick,
}

/// The consumer of processed payloads (samplers, stats, writers). Runs on its own thread, one
/// payload at a time; while it is busy, payloads queue in the bounded channel and then the
/// receiver answers "overloaded".
pub trait ChunkSink: Send + 'static {
    /// Takes one processed payload. Its stats belong to the concentrator unless
    /// `payload.client_computed_stats` (see `stats::Concentrator::add`).
    fn consume(&mut self, payload: ProcessedPayload);
    /// Takes one client-stats payload (for the `stats::ClientStatsAggregator`). The default
    /// drops it (logged at debug level): override it in a sink that aggregates client stats.
    fn consume_client_stats(&mut self, input: ClientStatsInput) {
        tracing::debug!(
            groups = input.payload.stats.iter().map(|b| b.stats.len()).sum::<usize>(),
            "client stats payload dropped: this sink does not aggregate client stats"
        );
    }
    /// Called about every second (and not at all while the sink is busy): flush what is due.
    fn tick(&mut self) {}
    /// Called once when the channel is closed and drained (shutdown): flush what is buffered.
    fn flush(&mut self) {}
}

/// What [`CountingSink`] saw, shared with `status`.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Payloads consumed.
    pub payloads: AtomicU64,
    /// Trace chunks consumed.
    pub traces: AtomicU64,
    /// Spans consumed.
    pub spans: AtomicU64,
    /// Client-stats payloads consumed.
    pub client_stats: AtomicU64,
    /// Times [`ChunkSink::flush`] ran.
    pub flushes: AtomicU64,
    /// Items whose handling panicked (dropped; the sink carries on with the next one).
    pub panics: AtomicU64,
}

/// A sink that only counts (stands in for samplers and writers).
#[derive(Debug, Clone, Default)]
pub struct CountingSink {
    counters: Arc<SinkCounters>,
}

impl CountingSink {
    /// A sink counting into `counters`.
    pub fn new(counters: Arc<SinkCounters>) -> Self {
        Self { counters }
    }
}

impl ChunkSink for CountingSink {
    fn consume(&mut self, p: ProcessedPayload) {
        self.counters.payloads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .traces
            .fetch_add(p.payload.get().chunks.len() as u64, Ordering::Relaxed);
        self.counters
            .spans
            .fetch_add(p.payload.get().span_count() as u64, Ordering::Relaxed);
    }

    fn consume_client_stats(&mut self, _input: ClientStatsInput) {
        self.counters.client_stats.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sending half of the pipeline, cloned into every request handler.
pub type PipelineSender = mpsc::Sender<PipelineItem>;

/// Starts the sink on its own blocking thread behind a channel of `capacity` payloads (so a
/// slow sink never stalls the HTTP runtime). It ends, after draining and [`ChunkSink::flush`],
/// when every sender is dropped. An item whose handling panics is dropped, counted in
/// `counters.panics` and logged (the first time, and then every 1000th), and the sink goes on:
/// a bug on one odd payload must not turn the agent into a black hole.
pub fn spawn_pipeline<S: ChunkSink>(
    capacity: usize,
    mut sink: S,
    counters: Arc<SinkCounters>,
) -> (PipelineSender, JoinHandle<()>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let (tx, mut rx) = mpsc::channel::<PipelineItem>(capacity.max(1));
    let handle = tokio::task::spawn_blocking(move || {
        while let Some(item) = rx.blocking_recv() {
            let handled = catch_unwind(AssertUnwindSafe(|| match item {
                PipelineItem::Traces(p) => sink.consume(p),
                PipelineItem::ClientStats(s) => sink.consume_client_stats(s),
                PipelineItem::Tick => sink.tick(),
            }));
            if handled.is_err() {
                let n = counters.panics.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::error!(
                        panics = n + 1,
                        "the forwarding stage panicked on an item; it was dropped (please report this bug)"
                    );
                }
            }
        }
        if catch_unwind(AssertUnwindSafe(|| sink.flush())).is_err() {
            counters.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("the forwarding stage panicked while flushing at shutdown");
        }
    });
    (tx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::TracerPayload;

    /// Panics on its first payload, counts the others.
    struct Flaky {
        seen: Arc<AtomicU64>,
        flushed: Arc<AtomicU64>,
    }

    impl ChunkSink for Flaky {
        fn consume(&mut self, _p: ProcessedPayload) {
            if self.seen.fetch_add(1, Ordering::Relaxed) == 0 {
                panic!("a bug on an odd payload");
            }
        }

        fn flush(&mut self) {
            self.flushed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn payload() -> PipelineItem {
        PipelineItem::Traces(ProcessedPayload {
            payload: OwnedPayload::from_owned(TracerPayload::default()),
            client_computed_stats: false,
            client_dropped_p0_traces: 0,
            received_at: SystemTime::now(),
        })
    }

    #[tokio::test]
    async fn a_panicking_item_is_dropped_and_counted_and_the_sink_goes_on() {
        let counters = Arc::new(SinkCounters::default());
        let seen = Arc::new(AtomicU64::new(0));
        let flushed = Arc::new(AtomicU64::new(0));
        let sink = Flaky {
            seen: Arc::clone(&seen),
            flushed: Arc::clone(&flushed),
        };
        let (tx, task) = spawn_pipeline(4, sink, Arc::clone(&counters));
        for _ in 0..3 {
            tx.send(payload()).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            seen.load(Ordering::Relaxed),
            3,
            "items after the panic are still handled"
        );
        assert_eq!(counters.panics.load(Ordering::Relaxed), 1);
        assert_eq!(flushed.load(Ordering::Relaxed), 1, "flushed once at the end");
    }
}
