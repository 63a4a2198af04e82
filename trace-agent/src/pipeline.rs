//! The hand-off from the receiver to the next stage (samplers, stats, writers):
//! processed trace payloads and decoded `/v0.6/stats` payloads travel, as [`PipelineItem`]s, over
//! one channel bounded in items (`pipeline_capacity`) **and** in bytes (`pipeline_max_bytes`,
//! a [`ByteBudget`]) to a [`ChunkSink`] that runs on its own thread. Each payload carries a
//! [`BytePermit`] for its estimated size, released once the sink has consumed it; a handler that
//! finds no room within its wait refuses the payload (429) instead of accepting it.
//! [`CountingSink`] stands in for the forwarding stage in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::span::{OwnedPayload, TracerPayload};
use crate::stats::ClientStatsInput;

/// Bytes shared by many holders (bodies being read, payloads waiting for the next stage): each
/// holds a [`BytePermit`] for what it keeps in memory, and waits (bounded) or is refused when
/// the budget is spent. Budgets are capped at 4 GiB (one permit counts up to `u32::MAX` bytes).
#[derive(Debug)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    total: u64,
    held: Arc<AtomicU64>,
}

/// What `status` shows of the receivers' byte budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BufferStatus {
    /// Bytes of request bodies held (being read, decompressed, decoded).
    pub body_bytes: u64,
    /// `apm_config.receiver_max_buffered_bytes` (as applied).
    pub body_bytes_max: u64,
    /// Estimated bytes of processed payloads waiting for (or in) the forwarding stage.
    pub pipeline_bytes: u64,
    /// `apm_config.pipeline_max_bytes`.
    pub pipeline_bytes_max: u64,
}

/// Bytes held from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BytePermit {
    permit: Option<OwnedSemaphorePermit>,
    held: Arc<AtomicU64>,
}

impl ByteBudget {
    /// A budget of `total` bytes (at least 1, at most 4 GiB).
    pub fn new(total: u64) -> Self {
        let total = total.clamp(1, u64::from(u32::MAX));
        Self {
            sem: Arc::new(Semaphore::new(usize::try_from(total).unwrap_or(usize::MAX))),
            total,
            held: Arc::default(),
        }
    }

    /// The budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes held right now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn clamp(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX)
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> BytePermit {
        self.held.fetch_add(permit.num_permits() as u64, Ordering::Relaxed);
        BytePermit {
            permit: Some(permit),
            held: Arc::clone(&self.held),
        }
    }

    /// `bytes` (at most the whole budget) within `wait`, or `None`.
    pub async fn acquire(&self, bytes: u64, wait: Duration) -> Option<BytePermit> {
        let n = self.clamp(bytes);
        match tokio::time::timeout(wait, Arc::clone(&self.sem).acquire_many_owned(n)).await {
            Ok(Ok(p)) => Some(self.wrap(p)),
            _ => None,
        }
    }

    /// `bytes` (at most the whole budget) if free right now.
    pub fn try_acquire(&self, bytes: u64) -> Option<BytePermit> {
        Arc::clone(&self.sem)
            .try_acquire_many_owned(self.clamp(bytes))
            .ok()
            .map(|p| self.wrap(p))
    }

    /// Whether fewer than `bytes` are free right now.
    pub fn short_of(&self, bytes: u64) -> bool {
        (self.sem.available_permits() as u64) < bytes.min(self.total)
    }
}

impl BytePermit {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// Adds `other`'s bytes to this permit.
    pub fn merge(&mut self, mut other: BytePermit) {
        match (&mut self.permit, other.permit.take()) {
            (Some(p), Some(o)) => p.merge(o),
            (slot @ None, o) => *slot = o,
            (Some(_), None) => {}
        }
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.held.fetch_sub(p.num_permits() as u64, Ordering::Relaxed);
        }
    }
}

/// The memory a processed payload is charged for in the pipeline: the body it borrows from
/// plus its decoded structures (chunks, spans, tag entries), by their sizes in memory.
pub fn estimated_bytes(payload: &TracerPayload<'_>, body_len: usize) -> u64 {
    use std::mem::size_of;
    let tag = size_of::<(crate::span::Str<'_>, crate::span::Str<'_>)>();
    let mut n = body_len.saturating_add(size_of::<TracerPayload<'_>>());
    for chunk in &payload.chunks {
        n = n.saturating_add(size_of::<crate::span::TraceChunk<'_>>());
        for span in &chunk.spans {
            let tags = span.meta.len() + span.metrics.len() + span.meta_struct.len() + span.raw_fields.len();
            n = n
                .saturating_add(size_of::<crate::span::Span<'_>>())
                .saturating_add(tags.saturating_mul(tag));
        }
    }
    n as u64
}

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

/// An item with the bytes it is charged for (released after the sink handled it).
struct Envelope {
    item: PipelineItem,
    charge: Option<BytePermit>,
}

/// Why a payload could not be handed to the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandOffError {
    /// No room (items or bytes) within the wait: refuse the payload (429).
    #[error("the pipeline to the forwarding stage is full (pipeline_capacity / apm_config.pipeline_max_bytes)")]
    Full,
    /// The stage is gone (shutdown).
    #[error("the pipeline is closed (shutting down)")]
    Closed,
}

/// Sending half of the pipeline, cloned into every request handler: a channel bounded in
/// items, and a byte budget charged with each payload's estimated size.
#[derive(Debug, Clone)]
pub struct PipelineSender {
    tx: mpsc::Sender<Envelope>,
    bytes: Arc<ByteBudget>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("charge", &self.charge.as_ref().map(BytePermit::bytes))
            .finish_non_exhaustive()
    }
}

/// Room reserved in the pipeline: one item slot and its bytes. [`Reservation::send`] cannot fail.
#[derive(Debug)]
pub struct Reservation<'a> {
    slot: mpsc::Permit<'a, Envelope>,
    charge: BytePermit,
}

impl Reservation<'_> {
    /// Hands `item` over; its bytes stay charged until the sink has consumed it.
    pub fn send(self, item: PipelineItem) {
        self.slot.send(Envelope {
            item,
            charge: Some(self.charge),
        });
    }
}

impl PipelineSender {
    /// Reserves an item slot and `bytes` (at most the whole byte budget) within `wait`.
    ///
    /// # Errors
    /// [`HandOffError::Full`] when there is no room in time, [`HandOffError::Closed`] at shutdown.
    pub async fn reserve(&self, bytes: u64, wait: Duration) -> Result<Reservation<'_>, HandOffError> {
        let deadline = tokio::time::Instant::now() + wait;
        let charge = self.bytes.acquire(bytes, wait).await.ok_or(HandOffError::Full)?;
        match tokio::time::timeout_at(deadline, self.tx.reserve()).await {
            Ok(Ok(slot)) => Ok(Reservation { slot, charge }),
            Ok(Err(_)) => Err(HandOffError::Closed),
            Err(_) => Err(HandOffError::Full),
        }
    }

    /// Sends `item` without a byte charge, waiting for an item slot (ticks, tests).
    ///
    /// # Errors
    /// The item back when the stage is gone.
    pub async fn send(&self, item: PipelineItem) -> Result<(), mpsc::error::SendError<PipelineItem>> {
        self.tx
            .send(Envelope { item, charge: None })
            .await
            .map_err(|e| mpsc::error::SendError(e.0.item))
    }

    /// Sends `item` without a byte charge if an item slot is free (ticks: the item is dropped
    /// when there is no room).
    ///
    /// # Errors
    /// Why it was not sent (full or closed).
    pub fn try_send(&self, item: PipelineItem) -> Result<(), mpsc::error::TrySendError<()>> {
        use mpsc::error::TrySendError;
        self.tx.try_send(Envelope { item, charge: None }).map_err(|e| match e {
            TrySendError::Full(_) => TrySendError::Full(()),
            TrySendError::Closed(_) => TrySendError::Closed(()),
        })
    }

    /// Whether there is room (an item slot and at least one byte) within `wait`, without
    /// reserving it: handlers ask before reading a body, so that a full pipeline refuses the
    /// payload before it costs anything (a slot only taken for a moment, e.g. by the 1 s tick,
    /// does not count as full).
    pub async fn has_room(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let Some(_byte) = self.bytes.acquire(1, wait).await else {
            return false;
        };
        matches!(tokio::time::timeout_at(deadline, self.tx.reserve()).await, Ok(Ok(_)))
    }

    /// Whether a payload of `bytes` would find no room right now (no item slot, or fewer free
    /// bytes).
    pub fn is_full(&self, bytes: u64) -> bool {
        self.tx.capacity() == 0 || self.bytes.short_of(bytes)
    }

    /// Estimated bytes of the payloads queued or being consumed.
    pub fn queued_bytes(&self) -> u64 {
        self.bytes.held()
    }

    /// `apm_config.pipeline_max_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.bytes.total()
    }

    /// The byte budget (for `status`; holding it does not keep the channel open).
    pub fn byte_budget(&self) -> Arc<ByteBudget> {
        Arc::clone(&self.bytes)
    }
}

/// [`spawn_pipeline_bounded`] with the default byte bound
/// ([`crate::config::DEFAULT_PIPELINE_MAX_BYTES`]).
pub fn spawn_pipeline<S: ChunkSink>(
    capacity: usize,
    sink: S,
    counters: Arc<SinkCounters>,
) -> (PipelineSender, JoinHandle<()>) {
    spawn_pipeline_bounded(capacity, crate::config::DEFAULT_PIPELINE_MAX_BYTES, sink, counters)
}

/// Starts the sink on its own blocking thread behind a channel of `capacity` payloads and
/// `max_bytes` estimated bytes (so a slow sink never stalls the HTTP runtime, and what waits
/// for it is bounded in memory). It ends, after draining and [`ChunkSink::flush`], when every
/// sender is dropped. An item whose handling panics is dropped, counted in `counters.panics`
/// and logged (the first time, and then every 1000th), and the sink goes on: a bug on one odd
/// payload must not turn the agent into a black hole.
pub fn spawn_pipeline_bounded<S: ChunkSink>(
    capacity: usize,
    max_bytes: u64,
    mut sink: S,
    counters: Arc<SinkCounters>,
) -> (PipelineSender, JoinHandle<()>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let (tx, mut rx) = mpsc::channel::<Envelope>(capacity.max(1));
    let bytes = Arc::new(ByteBudget::new(max_bytes));
    let handle = tokio::task::spawn_blocking(move || {
        while let Some(Envelope { item, charge }) = rx.blocking_recv() {
            let handled = catch_unwind(AssertUnwindSafe(|| match item {
                PipelineItem::Traces(p) => sink.consume(p),
                PipelineItem::ClientStats(s) => sink.consume_client_stats(s),
                PipelineItem::Tick => sink.tick(),
            }));
            // The payload is gone (consumed or dropped): its bytes are free again.
            drop(charge);
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
    (PipelineSender { tx, bytes }, handle)
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

    /// Blocks in `consume` until the test opens its gate; says when it has a payload.
    struct Gated {
        entered: std::sync::mpsc::Sender<()>,
        gate: std::sync::mpsc::Receiver<()>,
    }

    impl ChunkSink for Gated {
        fn consume(&mut self, _p: ProcessedPayload) {
            let _ = self.entered.send(());
            let _ = self.gate.recv();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn payloads_are_charged_their_bytes_until_the_stage_has_consumed_them() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let sink = Gated {
            entered: entered_tx,
            gate,
        };
        // Room for 8 items but only 1000 bytes.
        let (tx, task) = spawn_pipeline_bounded(8, 1000, sink, Arc::default());
        assert_eq!(tx.max_bytes(), 1000);
        let long = Duration::from_secs(10);
        tx.reserve(600, long).await.unwrap().send(payload());
        tokio::task::block_in_place(|| entered.recv_timeout(long)).unwrap();
        assert_eq!(tx.queued_bytes(), 600, "charged while the sink holds it");
        assert!(tx.is_full(600) && !tx.is_full(400));
        assert_eq!(
            tx.reserve(600, Duration::from_millis(20)).await.unwrap_err(),
            HandOffError::Full,
            "bytes, not items, refuse it"
        );
        // 400 still fit; a payload larger than the whole budget is charged the whole budget.
        tx.reserve(400, long).await.unwrap().send(payload());
        open.send(()).unwrap();
        tokio::task::block_in_place(|| entered.recv_timeout(long)).unwrap();
        assert_eq!(
            tx.queued_bytes(),
            400,
            "the first payload's bytes came back once consumed"
        );
        open.send(()).unwrap();
        let whole = tx.reserve(5_000, long).await.unwrap();
        assert_eq!(tx.queued_bytes(), 1000);
        whole.send(payload());
        open.send(()).unwrap();
        let closing = tx.clone();
        drop(tx);
        drop(closing);
        task.await.unwrap();
    }

    #[test]
    fn a_payload_is_estimated_at_its_body_plus_its_structs() {
        let p = crate::span::TracerPayload::default();
        let empty = estimated_bytes(&p, 1000);
        assert!(empty >= 1000);
        let mut p = crate::span::TracerPayload::default();
        p.chunks.push(crate::span::TraceChunk::from_spans(vec![
            crate::span::Span::default();
            100
        ]));
        let full = estimated_bytes(&p, 1000);
        assert!(full >= empty + 100 * std::mem::size_of::<crate::span::Span<'_>>() as u64);
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
