//! The export worker's pure stages, between the queue and the transport:
//! drain (pop chunks) → client stats → sample → tag and encode into the next payload →
//! hand the span boxes back to the pool. No I/O here: the worker (`worker.rs`) decides when
//! to send, and calls [`Encoder::drain_some`] also while a send is in flight.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::encode::{ChunkHeader, EncodeContext, Format, Payload, Spare};
use crate::buffer::{Chunk, PoolReturn};
use crate::core::TracerInner;
use crate::sampling::{RateCache, RuleInput, SamplingDecision, SamplingInput};
use crate::span::SpanBox;
use crate::stats::Concentrator;

/// Unix nanoseconds now.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What [`Encoder::drain_some`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// The queue is empty.
    Empty,
    /// The payload reached `flush_size`: send it before draining more.
    Full,
    /// `max` chunks were taken; more may wait.
    More,
}

/// The most payload buffer kept for reuse between two payloads.
const SPARE_MAX: usize = 8 * 1024 * 1024;

/// Chunks encoded between two clock reads (the rate limiter's `now`).
const CLOCK_EVERY: u32 = 256;

/// The stages' state: the payload being built and what the stages need.
pub(super) struct Encoder {
    tracer: &'static TracerInner,
    pub(super) payload: Payload,
    /// Size of the last payload sent: the next one starts with that much room.
    last_size: usize,
    /// Cleared span boxes on their way back to the pool.
    returns: PoolReturn,
    /// The format of the next payload.
    pub(super) format: Format,
    pub(super) ctx: EncodeContext,
    /// Client-side stats, while on and the agent takes `/v0.6/stats`.
    pub(super) stats: Option<Concentrator>,
    /// Whether rejected chunks are dropped here (stats on and `client_drop_p0s`).
    pub(super) drop_p0s: bool,
    /// P0 chunks and spans dropped since the last trace payload went out.
    pub(super) p0_pending: (u64, u64),
    rates: RateCache,
    /// Spans encoded since the last ledger update, and the root service of their chunks:
    /// the ledger (a mutex) is told once per run of one service and drain, not per chunk.
    ledger_run: (String, u64),
    /// `now` for the sampler, re-read every [`CLOCK_EVERY`] chunks.
    now: Instant,
    since_clock: u32,
    /// The buffers of the last payload sent, for the next one.
    spare: Option<Spare>,
}

impl Encoder {
    pub(super) fn new(tracer: &'static TracerInner, format: Format, ctx: EncodeContext) -> Self {
        Self {
            tracer,
            payload: Payload::new(format),
            last_size: 0,
            returns: PoolReturn::default(),
            format,
            ctx,
            stats: None,
            drop_p0s: false,
            p0_pending: (0, 0),
            rates: RateCache::default(),
            ledger_run: (String::new(), 0),
            now: Instant::now(),
            since_clock: CLOCK_EVERY,
            spare: None,
        }
    }

    /// Uses `format` for the next payloads (the current one, if it holds traces, is sent
    /// as it is).
    pub(super) fn use_format(&mut self, format: Format) {
        self.format = format;
        if self.payload.is_empty() && self.payload.format() != format {
            self.payload = Payload::new(format);
        }
    }

    /// The payload built so far, replaced by an empty one (in the buffers of the last
    /// payload sent, when [`Encoder::recycle`] gave them back).
    pub(super) fn take_payload(&mut self) -> Payload {
        let next = match self.spare.take() {
            Some(spare) => Payload::reusing(self.format, spare),
            None => Payload::with_capacity(self.format, self.last_size),
        };
        let payload = std::mem::replace(&mut self.payload, next);
        self.last_size = payload.size();
        payload
    }

    /// Keeps the buffers of a finished payload for the next one (unless an outsized
    /// payload grew them past [`SPARE_MAX`]: those are freed).
    pub(super) fn recycle(&mut self, spare: Option<Spare>) {
        self.spare = spare.filter(|s| s.capacity() <= SPARE_MAX);
    }

    /// Pops and encodes up to `max` chunks, stopping early when the queue is empty or the
    /// payload reached `flush_size`.
    pub(super) fn drain_some(&mut self, max: usize) -> Drained {
        let drained = self.drain_chunks(max);
        self.flush_ledger_run();
        drained
    }

    fn drain_chunks(&mut self, max: usize) -> Drained {
        let flush_size = self.tracer.config.flush_size;
        let mut taken = 0usize;
        loop {
            // (A payload holds at least one chunk, whatever `flush_size`.)
            if !self.payload.is_empty() && self.payload.size() >= flush_size {
                return Drained::Full;
            }
            if taken >= max {
                return Drained::More;
            }
            let Some(chunk) = self.tracer.queue.pop() else {
                return Drained::Empty;
            };
            self.encode(chunk);
            taken += 1;
        }
    }

    /// The sampling decision of `chunk`'s trace (taken now unless an earlier chunk or an
    /// inject took it).
    fn sample(&mut self, chunk: &Chunk, root: &SpanBox) -> SamplingDecision {
        if self.since_clock >= CLOCK_EVERY {
            self.now = Instant::now();
            self.since_clock = 0;
        }
        self.since_clock += 1;
        let (sampler, now, rates, ctx) = (&self.tracer.sampler, self.now, &mut self.rates, &self.ctx);
        let mut decide = || {
            let input = SamplingInput {
                trace_id_low: root.trace_id.low(),
                root: RuleInput {
                    service: root.service.as_deref().unwrap_or(&ctx.service),
                    name: &root.name,
                    resource: root.resource.as_deref().unwrap_or(&root.name),
                    meta: &root.meta,
                    metrics: &root.metrics,
                },
            };
            sampler.decide_cached(&input, now, rates)
        };
        match &chunk.trace {
            Some(t) => match t.decision.get() {
                Some(d) => *d,
                // Nothing else holds the trace's state (every span finished and no context
                // of it is kept): no later chunk or inject can read the decision, so it is
                // not stored (a `OnceLock` initialisation costs more than the decision).
                None if std::sync::Arc::strong_count(t) == 1 => decide(),
                None => *t.decision.get_or_init(decide),
            },
            None => decide(),
        }
    }

    /// One chunk through stats, sampling, encoding; its boxes go back to the pool.
    pub(super) fn encode(&mut self, chunk: Chunk) {
        let Some(root) = chunk.spans.first() else {
            return;
        };
        if let Some(stats) = self.stats.as_mut() {
            let synthetics = chunk
                .trace
                .as_ref()
                .and_then(|t| t.tags.origin.as_deref())
                .is_some_and(|o| o.starts_with("synthetics"));
            let now_ns = unix_now();
            for span in &chunk.spans {
                stats.add(span, &self.ctx.service, synthetics, now_ns);
            }
        }
        let decision = self.sample(&chunk, root);
        if self.drop_p0s && decision.priority <= 0 && !must_keep(&chunk.spans) {
            // Counted in the stats just above; the agent learns of it from the headers.
            let n = chunk.spans.len() as u64;
            self.p0_pending.0 += 1;
            self.p0_pending.1 += n;
            self.tracer.counters.p0_traces_dropped.fetch_add(1, Relaxed);
            self.tracer.counters.p0_spans_dropped.fetch_add(n, Relaxed);
            (self.tracer.ledger).dropped(crate::ledger::LedgerDrop::ClientP0, &chunk.spans, &self.ctx.service);
        } else {
            let header = ChunkHeader {
                decision,
                tags: chunk.trace.as_ref().map(|t| &t.tags),
            };
            self.payload.push_chunk(&chunk.spans, header, &self.ctx);
            self.count_in_ledger(&chunk.spans);
        }
        for span in chunk.spans {
            self.returns.give(&self.tracer.pool, span);
        }
    }
}

impl Encoder {
    /// Adds `spans` to the run of spans the ledger is told about next.
    fn count_in_ledger(&mut self, spans: &[SpanBox]) {
        let Some(service) = crate::ledger::root_service(spans, &self.ctx.service) else {
            return;
        };
        let run = &mut self.ledger_run;
        // (A word compare: a call to `memcmp` per chunk costs more.)
        if !crate::span::intern::same_bytes(run.0.as_bytes(), service.as_bytes()) {
            if run.1 > 0 {
                self.tracer.ledger.add_count(&run.0, std::mem::take(&mut run.1));
            }
            service.clone_into(&mut run.0);
        }
        run.1 += spans.len() as u64;
    }

    /// Tells the ledger about the spans encoded since it was last told.
    fn flush_ledger_run(&mut self) {
        let n = std::mem::take(&mut self.ledger_run.1);
        if n > 0 {
            self.tracer.ledger.add_count(&self.ledger_run.0, n);
        }
    }
}

/// Whether a rejected chunk must still be sent: it holds an error or a span kept by
/// single-span sampling (`_dd.span_sampling.mechanism`).
fn must_keep(spans: &[SpanBox]) -> bool {
    spans
        .iter()
        .any(|s| s.error || s.metric("_dd.span_sampling.mechanism").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tracer, TracerConfig};

    fn encoder(config: TracerConfig) -> (Tracer, Encoder) {
        let t = Tracer::without_worker(config);
        let enc = Encoder::new(t.inner(), Format::V05, EncodeContext::of(t.inner()));
        (t, enc)
    }

    #[test]
    fn drains_in_steps_and_stops_at_empty() {
        let (t, mut enc) = encoder(TracerConfig::default());
        for _ in 0..3 {
            drop(t.span("op").start());
        }
        assert_eq!(enc.drain_some(2), Drained::More);
        assert_eq!(enc.payload.traces(), 2);
        assert_eq!(enc.drain_some(usize::MAX), Drained::Empty);
        assert_eq!((enc.payload.traces(), enc.payload.spans()), (3, 3));
        let sent = enc.take_payload();
        assert_eq!(sent.traces(), 3);
        assert!(enc.payload.is_empty());
    }

    #[test]
    fn stops_when_the_payload_is_full() {
        let (t, mut enc) = encoder(TracerConfig::default().with_flush_size(1));
        drop(t.span("a").start());
        drop(t.span("b").start());
        assert_eq!(enc.drain_some(usize::MAX), Drained::Full, "a payload at flush_size");
        assert_eq!(enc.payload.traces(), 1);
        let _ = enc.take_payload();
        assert_eq!(enc.drain_some(usize::MAX), Drained::Full);
        let _ = enc.take_payload();
        assert_eq!(enc.drain_some(usize::MAX), Drained::Empty);
    }

    #[test]
    fn agent_rate_changes_reach_cached_decisions() {
        use crate::sampling::{AUTO_KEEP, AUTO_REJECT, AgentRates, Mechanism};
        let (t, mut enc) = encoder(TracerConfig::default().with_service("web").with_env("prod"));
        let take = |enc: &mut Encoder| {
            drop(t.span("op").start());
            let chunk = t.inner().queue.pop();
            chunk.map(|c| {
                let root = c.spans.first().cloned();
                root.map(|r| enc.sample(&c, &r))
            })
        };
        let first = take(&mut enc).flatten();
        assert_eq!(
            first.map(|d| (d.priority, d.mechanism)),
            Some((AUTO_KEEP, Mechanism::Default))
        );
        let zero = AgentRates::from_response(br#"{"rate_by_service":{"service:web,env:prod":0}}"#)
            .ok()
            .flatten()
            .unwrap_or_default();
        t.inner().sampler.set_agent_rates(zero);
        let second = take(&mut enc).flatten();
        assert_eq!(
            second.map(|d| (d.priority, d.mechanism, d.agent_rate)),
            Some((AUTO_REJECT, Mechanism::AgentRate, Some(0.0)))
        );
    }
}
