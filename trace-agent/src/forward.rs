//! The stage after the receiver (spec section 0): stats on every chunk the tracer did not
//! compute stats for, then the samplers, then the upstream writers.
//!
//! [`ForwardSink`] runs on the pipeline's own thread, one item at a time:
//! - a trace payload goes to the [`Concentrator`] (unless `Datadog-Client-Computed-Stats`), then
//!   through [`Samplers::sample_payload`], which rewrites or removes chunks in place; what is
//!   left is encoded once to protobuf bytes and/or converted once to `pb` types (whichever the
//!   writers take) and handed to every [`Upstream`] (which never blocks);
//!   new `rate_by_service` rates go to the receiver's [`RatesTable`];
//! - a `/v0.6/stats` payload goes to the [`ClientStatsAggregator`];
//! - a tick (every second, from the agent's timer or, when the channel is too busy for it, from
//!   the next item) flushes the aggregator, and the concentrator every bucket period
//!   (or, with [`StatsFlush::Eager`], all open buckets on every tick: the local store sums
//!   partial rows, so a newcomer sees numbers within seconds), and refreshes the report
//!   `status` shows.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::pipeline::{ChunkSink, ProcessedPayload, SinkCounters};
use crate::sample::rates::RatesTable;
use crate::sample::{SamplerStats, Samplers};
use crate::stats::payload::split_stats;
use crate::stats::{ClientStatsAggregator, ClientStatsInput, Concentrator};
use crate::upstream::{EncodedPayload, SizeHint, Upstream, convert, pb};

/// How often the sink flushes what is due and refreshes its report.
const TICK: Duration = Duration::from_secs(1);

/// Most grouped-stats entries in one stats payload (spec 7.3).
pub const MAX_GROUPS_PER_STATS_PAYLOAD: usize = 4000;

/// When the concentrator hands its buckets over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFlush {
    /// As the Datadog agent does: a bucket leaves two bucket periods after it started.
    Standard,
    /// Every tick, all open buckets (partial buckets; for the local store, which sums them).
    Eager,
}

/// What the forwarding stage did, as shown by `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardReport {
    /// Sampler decisions.
    pub samplers: SamplerStats,
    /// Trace payloads whose spans went into the concentrator.
    pub stats_payloads: u64,
    /// Trace payloads skipped by the concentrator (the tracer computed stats).
    pub stats_skipped_client_computed: u64,
    /// Spans counted in stats.
    pub stats_spans_counted: u64,
    /// Spans counted in the overflow group (cardinality cap).
    pub stats_overflow_spans: u64,
    /// Spans older than the oldest open bucket (counted in it).
    pub stats_late_spans: u64,
    /// Stats buckets flushed.
    pub stats_buckets_flushed: u64,
    /// Stats payloads handed to the writers (after splitting).
    pub stats_payloads_sent: u64,
    /// Client-stats payloads aggregated.
    pub client_stats_payloads: u64,
    /// Tracer payloads handed to the writers (chunks left after sampling).
    pub trace_payloads_sent: u64,
}

/// Shared between the sink and `status`.
#[derive(Debug, Default)]
pub struct ForwardShared {
    report: Mutex<ForwardReport>,
    /// The span ledger (`crate::ledger`), shared by the receiver, this stage, the writers and
    /// `status`.
    pub ledger: Arc<crate::ledger::Ledger>,
}

impl ForwardShared {
    /// The last report (refreshed every tick and at shutdown).
    pub fn report(&self) -> ForwardReport {
        self.report.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, r: ForwardReport) {
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) = r;
    }
}

/// A clock for the sink (tests pass a simulated one).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The real sink: stats → samplers → upstream writers.
pub struct ForwardSink {
    samplers: Arc<Mutex<Samplers>>,
    concentrator: Concentrator,
    client_stats: ClientStatsAggregator,
    upstreams: Vec<Arc<dyn Upstream>>,
    rates: Arc<RatesTable>,
    counters: Arc<SinkCounters>,
    shared: Arc<ForwardShared>,
    flush_mode: StatsFlush,
    bucket: Duration,
    /// When the concentrator's due buckets leave next (monotonic: a wall-clock jump does not
    /// stop the flushes).
    next_stats_flush: Instant,
    /// When the next tick is due: ticks also run from `consume`, because under sustained load
    /// the agent's 1 s tick cannot get into the full channel.
    next_tick: Instant,
    stats_payloads_sent: u64,
    trace_payloads_sent: u64,
    client_stats_payloads: u64,
    /// Encoded bytes per span of the last payload (sizes the next one's buffer).
    size_hint: SizeHint,
    clock: Clock,
}

impl std::fmt::Debug for ForwardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSink")
            .field("upstreams", &self.upstreams)
            .field("flush_mode", &self.flush_mode)
            .finish_non_exhaustive()
    }
}

/// Everything [`ForwardSink::new`] needs.
#[derive(Debug)]
pub struct ForwardParts {
    /// Samplers built from the config.
    pub samplers: Samplers,
    /// The concentrator.
    pub concentrator: Concentrator,
    /// The client-stats aggregator.
    pub client_stats: ClientStatsAggregator,
    /// Where kept traces and stats go.
    pub upstreams: Vec<Arc<dyn Upstream>>,
    /// The receiver's rate table (sampler feedback).
    pub rates: Arc<RatesTable>,
    /// Forwarded counters (`status`).
    pub counters: Arc<SinkCounters>,
    /// The report shared with `status`.
    pub shared: Arc<ForwardShared>,
    /// Concentrator flush policy.
    pub flush_mode: StatsFlush,
    /// Stats bucket period.
    pub bucket: Duration,
}

impl ForwardSink {
    /// A sink over `parts`, reading time from `clock`.
    pub fn new(parts: ForwardParts, clock: Clock) -> Self {
        Self {
            samplers: Arc::new(Mutex::new(parts.samplers)),
            concentrator: parts.concentrator,
            client_stats: parts.client_stats,
            upstreams: parts.upstreams,
            rates: parts.rates,
            counters: parts.counters,
            shared: parts.shared,
            flush_mode: parts.flush_mode,
            bucket: parts.bucket.max(Duration::from_secs(1)),
            next_stats_flush: Instant::now() + parts.bucket.max(Duration::from_secs(1)),
            next_tick: Instant::now() + TICK,
            stats_payloads_sent: 0,
            trace_payloads_sent: 0,
            client_stats_payloads: 0,
            size_hint: SizeHint::default(),
            clock,
        }
    }

    fn send_stats(&mut self, payload: Option<pb::StatsPayload>) {
        let Some(payload) = payload else { return };
        for part in split_stats(payload, MAX_GROUPS_PER_STATS_PAYLOAD) {
            let part = Arc::new(part);
            self.stats_payloads_sent += 1;
            for u in &self.upstreams {
                u.send_stats(Arc::clone(&part));
            }
        }
    }

    fn flush_stats(&mut self, now: SystemTime, force: bool) {
        let p = self.client_stats.flush(now, force);
        self.send_stats(p);
        let eager = self.flush_mode == StatsFlush::Eager;
        let mono = Instant::now();
        if force || eager || mono >= self.next_stats_flush {
            let p = self.concentrator.flush(now, force || eager);
            self.send_stats(p);
            self.next_stats_flush = mono + self.bucket;
        }
    }

    /// Runs [`ChunkSink::tick`] when one is due (see `next_tick`).
    fn tick_if_due(&mut self) {
        if Instant::now() >= self.next_tick {
            self.tick();
        }
    }

    fn publish_report(&self) {
        let samplers = self.samplers.lock().unwrap_or_else(PoisonError::into_inner).stats();
        let c = self.concentrator.counters();
        self.shared.set(ForwardReport {
            samplers,
            stats_payloads: c.payloads,
            stats_skipped_client_computed: c.skipped_client_computed,
            stats_spans_counted: c.spans_counted,
            stats_overflow_spans: c.overflow_spans,
            stats_late_spans: c.late_spans,
            stats_buckets_flushed: c.buckets_flushed,
            stats_payloads_sent: self.stats_payloads_sent,
            client_stats_payloads: self.client_stats_payloads,
            trace_payloads_sent: self.trace_payloads_sent,
        });
    }
}

impl ChunkSink for ForwardSink {
    fn consume(&mut self, mut p: ProcessedPayload) {
        let now = (self.clock)();
        // Stats first: on 100% of what the tracer sent, before sampling drops anything.
        self.concentrator.add(p.payload.get(), p.client_computed_stats, now);
        let ledger_before = crate::ledger::count_payload(p.payload.get());
        let spans_before = p.payload.get().span_count();
        let samplers = Arc::clone(&self.samplers);
        let dropped_p0 = p.client_dropped_p0_traces;
        let received_at = p.received_at;
        let (rates, kept) = p.payload.with_mut(move |tp| {
            let mut s = samplers.lock().unwrap_or_else(PoisonError::into_inner);
            s.sample_payload(tp, dropped_p0, received_at);
            (s.take_rates_update(), !tp.chunks.is_empty())
        });
        if let Some(rates) = rates {
            self.rates.replace_all(rates);
        }
        // Sampling only removes spans and chunks: when every span is still there, the counts
        // per root service are the same (no second pass over the chunks).
        let ledger_after = if !kept {
            Vec::new()
        } else if p.payload.get().span_count() == spans_before {
            ledger_before.clone()
        } else {
            crate::ledger::count_payload(p.payload.get())
        };
        self.shared.ledger.sampled(&ledger_before, &ledger_after);
        if kept {
            self.forward(&p);
        }
        self.tick_if_due();
    }

    fn consume_client_stats(&mut self, input: ClientStatsInput) {
        self.counters
            .client_stats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client_stats_payloads += 1;
        let now = (self.clock)();
        let out = self.client_stats.add(input.payload, now);
        self.send_stats(out);
        self.tick_if_due();
    }

    fn tick(&mut self) {
        self.next_tick = Instant::now() + TICK;
        let now = (self.clock)();
        self.flush_stats(now, false);
        self.publish_report();
    }

    fn flush(&mut self) {
        let now = (self.clock)();
        self.flush_stats(now, true);
        for u in &self.upstreams {
            u.flush();
        }
        self.counters.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish_report();
    }
}

impl ForwardSink {
    /// Hands what sampling kept to every writer.
    fn forward(&mut self, p: &ProcessedPayload) {
        use std::sync::atomic::Ordering::Relaxed;
        let tp = p.payload.get();
        self.counters.payloads.fetch_add(1, Relaxed);
        self.counters.traces.fetch_add(tp.chunks.len() as u64, Relaxed);
        self.counters.spans.fetch_add(tp.span_count() as u64, Relaxed);
        // Each form at most once: protobuf bytes straight from the borrowed spans for writers
        // that take them (Datadog), an owned `pb` copy for the others (OTLP, local store).
        let mut encoded: Option<Arc<EncodedPayload>> = None;
        let mut converted: Option<Arc<pb::TracerPayload>> = None;
        self.trace_payloads_sent += 1;
        for u in &self.upstreams {
            if u.takes_encoded_traces() {
                let hint = &mut self.size_hint;
                let e = encoded.get_or_insert_with(|| Arc::new(EncodedPayload::from_borrowed_sized(tp, hint)));
                u.send_encoded_traces(Arc::clone(e));
            } else if !u.send_borrowed_traces(tp) {
                let c = converted.get_or_insert_with(|| Arc::new(convert::tracer_payload(tp)));
                u.send_traces(Arc::clone(c));
            }
        }
    }
}
