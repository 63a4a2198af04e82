//! Batching of tracer payloads before they are encoded into one request (spec 7.2): a batch is
//! sealed when the flush period passes or when adding a payload would take its estimated size
//! (protobuf encoded length) past the maximum (3.2 MB for the Datadog intake).
//!
//! * [`EncodedBatcher`] (Datadog writer): payloads already encoded as protobuf
//!   ([`EncodedPayload`]); a batch is **filled** up to the maximum across requests, cutting a
//!   payload at a chunk boundary when only part of it fits (the rest starts the next batch), so
//!   a stream of 1000-trace requests becomes full 3.2 MB payloads instead of two per request;
//! * [`Batcher`] (OTLP writer): `pb` payloads, sealed before the one that would not fit
//!   (split by chunks only when a payload is larger than the maximum on its own).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::pb;
use super::pb_encode::{EncodedPayload, Part};

/// Largest estimated batch: the Datadog intake's limit (`3 200 000` bytes).
pub const MAX_BATCH_BYTES: usize = 3_200_000;

/// A sealed batch.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The tracer payloads.
    pub(crate) payloads: Vec<Arc<pb::TracerPayload>>,
    /// Sum of their encoded lengths.
    pub(crate) bytes: usize,
    /// Trace chunks inside.
    pub(crate) chunks: u64,
    /// The span ledger's per-service counts, settled when the batch is dropped (empty when no
    /// ledger is attached).
    pub(crate) ledger: crate::ledger::Ticket,
}

/// The batch being built.
#[derive(Debug)]
pub(crate) struct Batcher {
    pending: Mutex<Batch>,
    max_bytes: usize,
    /// The span ledger and the writer's name, once attached.
    ledger: std::sync::OnceLock<(Arc<crate::ledger::Ledger>, String)>,
}

impl Batcher {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            pending: Mutex::new(Batch::default()),
            max_bytes: max_bytes.max(1),
            ledger: std::sync::OnceLock::new(),
        }
    }

    /// Batches from now on carry a ledger ticket for `writer`.
    pub(crate) fn attach_ledger(&self, ledger: Arc<crate::ledger::Ledger>, writer: &str) {
        ledger.register_writer(writer);
        let _ = self.ledger.set((ledger, writer.to_owned()));
    }

    /// Adds `tp`; returns the batches sealed on the way (zero, one, or — for a payload larger
    /// than the maximum on its own — several).
    pub(crate) fn add(&self, tp: Arc<pb::TracerPayload>) -> Vec<Batch> {
        let size = tp.encoded_len();
        let parts = if size > self.max_bytes && tp.chunks.len() > 1 {
            split(&tp, self.max_bytes)
        } else {
            vec![(tp, size)]
        };
        let mut sealed = Vec::new();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (part, size) in parts {
            if !pending.payloads.is_empty() && pending.bytes + size > self.max_bytes {
                sealed.push(std::mem::take(&mut *pending));
            }
            if let Some((ledger, writer)) = self.ledger.get() {
                pending.ledger.merge(ledger.ticket(writer, &part));
            }
            pending.chunks += part.chunks.len() as u64;
            pending.bytes += size;
            pending.payloads.push(part);
            if pending.bytes >= self.max_bytes {
                sealed.push(std::mem::take(&mut *pending));
            }
        }
        sealed
    }

    /// Takes the pending batch, if it holds anything.
    pub(crate) fn take(&self) -> Option<Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!pending.payloads.is_empty()).then(|| std::mem::take(&mut *pending))
    }
}

/// Splits a payload by chunks into parts of at most `max_bytes` (a single chunk larger than
/// that forms a part alone; the intake decides about it).
fn split(tp: &pb::TracerPayload, max_bytes: usize) -> Vec<(Arc<pb::TracerPayload>, usize)> {
    let header = || without_chunks(tp);
    let mut parts = Vec::new();
    let mut cur = header();
    let mut cur_size = cur.encoded_len();
    for chunk in &tp.chunks {
        // Field tag + length prefix + message.
        let n = chunk.encoded_len();
        let add = n + prost::length_delimiter_len(n) + 1;
        if !cur.chunks.is_empty() && cur_size + add > max_bytes {
            let done = std::mem::replace(&mut cur, header());
            parts.push((Arc::new(done), cur_size));
            cur_size = cur.encoded_len();
        }
        cur.chunks.push(chunk.clone());
        cur_size += add;
    }
    if !cur.chunks.is_empty() {
        parts.push((Arc::new(cur), cur_size));
    }
    parts
}

fn without_chunks(tp: &pb::TracerPayload) -> pb::TracerPayload {
    pb::TracerPayload {
        container_id: tp.container_id.clone(),
        language_name: tp.language_name.clone(),
        language_version: tp.language_version.clone(),
        tracer_version: tp.tracer_version.clone(),
        runtime_id: tp.runtime_id.clone(),
        chunks: Vec::new(),
        tags: tp.tags.clone(),
        env: tp.env.clone(),
        hostname: tp.hostname.clone(),
        app_version: tp.app_version.clone(),
        container_debug: tp.container_debug.clone(),
    }
}

/// What a sealed [`EncodedBatch`] carries besides its parts, read by the sender's counters
/// (and, e.g., an acknowledgement hook) without decoding anything: add fields here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    /// Sum of the parts' `TracerPayload` message lengths (the estimate of [`MAX_BATCH_BYTES`]).
    pub(crate) bytes: usize,
    /// Trace chunks inside.
    pub(crate) chunks: u64,
    /// Spans inside.
    pub(crate) spans: u64,
}

/// A sealed batch of encoded payloads: one `AgentPayload`.
#[derive(Debug, Default)]
pub(crate) struct EncodedBatch {
    /// Chunk ranges of encoded payloads, in arrival order.
    pub(crate) parts: Vec<Part>,
    /// Counts.
    pub(crate) meta: BatchMeta,
    /// The span ledger's per-service counts (empty when no ledger is attached).
    pub(crate) ledger: crate::ledger::Ticket,
}

/// Fills batches of [`EncodedPayload`]s up to a maximum size.
#[derive(Debug)]
pub(crate) struct EncodedBatcher {
    pending: Mutex<EncodedBatch>,
    max_bytes: usize,
    /// The span ledger and the writer's name, once attached.
    ledger: std::sync::OnceLock<(Arc<crate::ledger::Ledger>, String)>,
}

impl EncodedBatcher {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            pending: Mutex::new(EncodedBatch::default()),
            max_bytes: max_bytes.max(1),
            ledger: std::sync::OnceLock::new(),
        }
    }

    /// Batches from now on carry a ledger ticket for `writer`.
    pub(crate) fn attach_ledger(&self, ledger: Arc<crate::ledger::Ledger>, writer: &str) {
        ledger.register_writer(writer);
        let _ = self.ledger.set((ledger, writer.to_owned()));
    }

    /// Adds `payload`'s chunks, filling the pending batch up to the maximum and cutting
    /// `payload` at a chunk boundary where it does not fit; returns the batches filled on the
    /// way. A batch always takes at least one chunk (a chunk larger than the maximum travels
    /// alone; the intake decides about it). Work is linear in the chunks.
    pub(crate) fn add(&self, payload: Arc<EncodedPayload>) -> Vec<EncodedBatch> {
        let n = payload.chunks();
        let mut sealed = Vec::new();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut start = 0;
        while start < n {
            let mut len = payload.header_len();
            let mut end = start;
            while end < n {
                let add = payload.chunk_field_len(end);
                let fits = pending.meta.bytes + len + add <= self.max_bytes;
                if !fits && (end > start || !pending.parts.is_empty()) {
                    break;
                }
                len += add;
                end += 1;
            }
            if end == start {
                // Not even one chunk fits next to what is pending: seal it and start anew.
                sealed.push(std::mem::take(&mut *pending));
                continue;
            }
            pending.meta.bytes += len;
            pending.meta.chunks += (end - start) as u64;
            pending.meta.spans += payload.spans(start..end);
            if let Some((ledger, writer)) = self.ledger.get() {
                let ticket = ledger.ticket_for(writer, payload.service_spans(start..end));
                pending.ledger.merge(ticket);
            }
            pending.parts.push(Part {
                payload: Arc::clone(&payload),
                chunks: start..end,
            });
            start = end;
            if start < n || pending.meta.bytes >= self.max_bytes {
                sealed.push(std::mem::take(&mut *pending));
            }
        }
        sealed
    }

    /// Takes the pending batch, if it holds anything.
    pub(crate) fn take(&self) -> Option<EncodedBatch> {
        self.take_if(|_| true)
    }

    /// Takes the pending batch if it holds anything and `ready(its meta)`.
    pub(crate) fn take_if(&self, ready: impl FnOnce(&BatchMeta) -> bool) -> Option<EncodedBatch> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!pending.parts.is_empty() && ready(&pending.meta)).then(|| std::mem::take(&mut *pending))
    }
}

/// Where a writer keeps its flush ticker ([`spawn_ticker`]) so shutdown can stop it once.
#[derive(Debug, Default)]
pub(crate) struct TickerSlot(Mutex<Option<JoinHandle<()>>>);

impl TickerSlot {
    /// Keeps the running ticker.
    pub(crate) fn set(&self, ticker: JoinHandle<()>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ticker);
    }

    /// Stops the ticker, if it still runs.
    pub(crate) fn stop(&self) {
        let ticker = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(t) = ticker {
            t.abort();
        }
    }
}

/// Calls `tick` every `period`, and whenever `wake` is notified, until `tick` returns false.
pub(crate) fn spawn_ticker(
    period: Duration,
    wake: Arc<Notify>,
    mut tick: impl FnMut() -> bool + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = wake.notified() => {}
            }
            if !tick() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(chunks: usize, spans_per_chunk: usize) -> Arc<pb::TracerPayload> {
        let span = pb::Span {
            service: "s".repeat(100),
            ..Default::default()
        };
        Arc::new(pb::TracerPayload {
            language_name: "rust".to_owned(),
            chunks: (0..chunks)
                .map(|_| pb::TraceChunk {
                    spans: vec![span.clone(); spans_per_chunk],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn seals_before_the_size_would_pass_the_maximum() {
        let p = payload(1, 10);
        let size = p.encoded_len();
        let b = Batcher::new(size * 3 + size / 2);
        assert!(b.add(Arc::clone(&p)).is_empty());
        assert!(b.add(Arc::clone(&p)).is_empty());
        assert!(b.add(Arc::clone(&p)).is_empty());
        let sealed = b.add(Arc::clone(&p));
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].payloads.len(), 3);
        assert_eq!(sealed[0].bytes, size * 3);
        let rest = b.take().unwrap();
        assert_eq!((rest.payloads.len(), rest.chunks), (1, 1));
        assert!(b.take().is_none());
    }

    fn encoded(chunks: usize, spans_per_chunk: usize) -> Arc<EncodedPayload> {
        Arc::new(EncodedPayload::from_pb(&payload(chunks, spans_per_chunk)))
    }

    #[test]
    fn encoded_batches_are_filled_across_payloads_cutting_at_chunk_boundaries() {
        // 1000-chunk payloads where ~835 chunks fit in a batch (the 835 + 165 split).
        let p = encoded(1000, 2);
        let chunk = p.chunk_field_len(0);
        let max = p.header_len() + chunk * 835;
        let b = EncodedBatcher::new(max);
        let mut sealed = Vec::new();
        for _ in 0..6 {
            sealed.extend(b.add(Arc::clone(&p)));
        }
        let rest = b.take().unwrap();
        let chunks: u64 = sealed.iter().chain([&rest]).map(|s| s.meta.chunks).sum();
        assert_eq!(chunks, 6000, "no chunk lost or duplicated");
        assert_eq!(
            sealed.len(),
            7,
            "6000 chunks in batches of ~835, not 12 payloads of 835 + 165"
        );
        for s in &sealed {
            assert!(s.meta.bytes <= max, "{} > {max}", s.meta.bytes);
            assert!(
                s.meta.bytes + chunk + p.header_len() > max,
                "filled: {} of {max}",
                s.meta.bytes
            );
            let exact: usize = s.parts.iter().map(|p| p.payload.message_len(p.chunks.clone())).sum();
            assert_eq!(exact, s.meta.bytes);
            assert_eq!(s.meta.spans, s.meta.chunks * 2);
        }
        // The parts follow each other: every chunk of every payload exactly once, in order.
        let mut next = 0;
        for part in sealed.iter().chain([&rest]).flat_map(|s| &s.parts) {
            assert_eq!(part.chunks.start, next % 1000);
            next += part.chunks.len();
        }
        assert_eq!(next, 6000);
    }

    #[test]
    fn an_encoded_chunk_larger_than_the_maximum_travels_alone() {
        let small = encoded(1, 1);
        let big = encoded(1, 50);
        let b = EncodedBatcher::new(big.message_len(0..1) / 2);
        assert!(b.add(Arc::clone(&small)).is_empty());
        let sealed = b.add(Arc::clone(&big));
        assert_eq!(sealed.iter().map(|s| s.meta.chunks).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(sealed[1].parts[0].chunks, 0..1);
        assert!(b.take().is_none());
    }

    #[test]
    fn an_oversized_payload_is_split_by_chunks_keeping_its_header() {
        let p = payload(10, 10);
        let one_chunk = p.chunks[0].encoded_len();
        let b = Batcher::new(one_chunk * 3);
        let mut sealed = b.add(Arc::clone(&p));
        sealed.extend(b.take());
        let chunks: u64 = sealed.iter().map(|s| s.chunks).sum();
        assert_eq!(chunks, 10, "no chunk lost or duplicated");
        assert!(sealed.len() >= 4);
        for s in &sealed {
            assert!(s.bytes <= one_chunk * 3, "{} > {}", s.bytes, one_chunk * 3);
            assert_eq!(
                s.payloads.iter().map(|p| p.encoded_len()).sum::<usize>(),
                s.bytes,
                "exact estimate"
            );
            assert!(s.payloads.iter().all(|p| p.language_name == "rust"));
        }
    }
}
