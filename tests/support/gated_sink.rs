//! A next stage for an in-process agent that blocks in `consume` until the test opens its gate,
//! and says when it is blocked (backpressure tests). Included by `support/mod.rs` and, on its
//! own, by tests that need nothing else of `support`.

/// Blocks on every payload until the test opens the gate; counts what passed.
pub(crate) struct GatedSink {
    /// Told when a payload is blocked in `consume`.
    pub(crate) entered: std::sync::mpsc::Sender<()>,
    /// One message lets one payload through.
    pub(crate) gate: std::sync::mpsc::Receiver<()>,
    /// The pipeline's counters of what the sink consumed.
    pub(crate) counters: std::sync::Arc<trace_agent::pipeline::SinkCounters>,
}

impl trace_agent::pipeline::ChunkSink for GatedSink {
    fn consume(&mut self, p: trace_agent::pipeline::ProcessedPayload) {
        let _ = self.entered.send(());
        let _ = self.gate.recv();
        let c = &self.counters;
        c.payloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.spans.fetch_add(
            p.payload.get().span_count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
