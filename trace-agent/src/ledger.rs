//! The span ledger, agent half: for every service, where its spans went, from the tracer to
//! the destination — `created → sent → received → kept → delivered` — with each loss named.
//!
//! Tracers that know the ledger (ours) send their own cumulative counters with every trace
//! payload in the `X-Span-Ledger` header (format: the tracer's `ledger.rs`, summed up
//! in the README). This module parses it (bounded, never panics; a bad header is counted and
//! ignored, the payload is still taken), keeps the latest report per runtime id, and joins it
//! with the agent's own per-service counts at every hop:
//! - `received`: spans decoded from accepted payloads (by the root service of each chunk);
//! - dropped by processing (normalization, `ignore_resources`, tag filters) — the count per
//!   service is measured (received − what survived processing); the reason is the payload's
//!   when it had one, else `processing`;
//! - at the samplers: `sampled_out` (chunks removed, or trimmed to their single-span-sampled
//!   spans) and `kept` (handed to the writers);
//! - per writer: `delivered` (the intake or collector answered 2xx; the local store wrote
//!   them), `dropped`, `spooled` (kept on disk for the next start), the rest still on its way.
//!
//! Services are keyed by their normalized name (the agent's `normalize_service`, so the
//! tracer's raw names and the processed spans' names meet). Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::process::normalize::normalize_service;
use libdd_trace_protobuf::pb;

/// The request header carrying a tracer's report.
pub const HEADER: &str = "x-span-ledger";
/// Longest header read (bytes); longer ones are refused as bad.
pub const MAX_HEADER_LEN: usize = 32 * 1024;
/// Service entries read from one report (the tracer's 64 and its overflow row).
pub const MAX_REPORT_SERVICES: usize = 65;
/// Refusal statuses read from one report.
pub const MAX_REPORT_STATUSES: usize = 8;
/// Runtime ids whose latest report is kept; the one heard from longest ago goes first.
pub const MAX_RUNTIMES: usize = 256;
/// Services with a row of their own; later ones count under [`OTHER_SERVICES`].
pub const MAX_SERVICES: usize = 1000;
/// The row of the services past [`MAX_SERVICES`].
pub const OTHER_SERVICES: &str = "(other services)";
/// The tracer's overflow row (its services past 64).
pub const TRACER_OVERFLOW: &str = "(other services, tracer side)";
/// Longest runtime id kept (bytes).
const MAX_RUNTIME_ID: usize = 64;
/// Longest encoded service name in a report.
const MAX_ENCODED_NAME: usize = 300;

/// The ledger's key for a service name: normalized as the processing stage does.
pub fn service_key(raw: &str, lang: &str) -> String {
    normalize_service(raw, lang).unwrap_or_else(|| raw.to_owned())
}

/// Per-service span counts of a processed payload (by chunk root).
pub fn count_payload(p: &crate::span::TracerPayload<'_>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for chunk in &p.chunks {
        let Some(root) = crate::process::toplevel::root_index(&chunk.spans).and_then(|i| chunk.spans.get(i)) else {
            continue;
        };
        let n = chunk.spans.len() as u64;
        let s = root.service.as_str();
        match index.get(s).and_then(|&i| out.get_mut(i)) {
            Some(e) => e.1 += n,
            None => {
                index.insert(s, out.len());
                out.push((s.to_owned(), n));
            }
        }
    }
    out
}

/// The root span of a converted chunk (the same rule as [`crate::process::toplevel::root_index`]).
pub fn pb_root(spans: &[pb::Span]) -> Option<&pb::Span> {
    let root = spans.iter().rposition(|s| s.parent_id == 0).or_else(|| {
        let ids: std::collections::HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
        spans
            .iter()
            .rposition(|s| !ids.contains(&s.parent_id))
            .or(spans.len().checked_sub(1))
    });
    root.and_then(|i| spans.get(i))
}

/// Per-service span counts of a converted payload (the same root rule as
/// [`crate::process::toplevel::root_index`]).
pub fn count_pb(p: &pb::TracerPayload) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for chunk in &p.chunks {
        let spans = &chunk.spans;
        let Some(root) = pb_root(spans) else {
            continue;
        };
        let n = spans.len() as u64;
        match out.iter_mut().find(|(s, _)| *s == root.service) {
            Some(e) => e.1 += n,
            None => out.push((root.service.clone(), n)),
        }
    }
    out
}

/// The agent's own counts for one service.
#[derive(Debug, Clone, Default)]
struct Hops {
    received: u64,
    received_reported: u64,
    survived: u64,
    processing: BTreeMap<String, u64>,
    before_sampling: u64,
    kept: u64,
    writers: BTreeMap<String, WriterCounts>,
}

/// One writer's outcome counts for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterCounts {
    /// The destination took them (2xx, or written by the local store).
    pub delivered: u64,
    /// Dropped by the writer (queue full, retries exhausted, rejected, shutdown).
    pub dropped: u64,
    /// Kept in the spool for the next start.
    pub spooled: u64,
}

#[derive(Debug, Clone)]
struct Runtime {
    report: Report,
    lang: String,
    /// The status the agent answered to the request carrying `report`.
    status: u16,
    /// Acked spans per service in the first report this agent got: delivered to an earlier
    /// agent instance.
    first_acked: HashMap<String, u64>,
    touched: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Writers attached (each service's ledger lists them all).
    writers: Vec<String>,
    services: HashMap<String, Hops>,
    runtimes: HashMap<String, Runtime>,
    tick: u64,
    bad_headers: u64,
    runtimes_evicted: u64,
    last_bad: Option<String>,
}

impl State {
    fn hops(&mut self, key: &str) -> &mut Hops {
        if !self.services.contains_key(key) {
            let k = if self.services.len() >= MAX_SERVICES {
                OTHER_SERVICES
            } else {
                key
            };
            return self.services.entry(k.to_owned()).or_default();
        }
        self.services.entry(key.to_owned()).or_default()
    }
}

/// The agent's span ledger (one per agent; see the module docs).
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A writer that settles tickets (or reports writes) from now on.
    pub fn register_writer(&self, writer: &str) {
        let mut s = self.lock();
        if !s.writers.iter().any(|w| w == writer) {
            s.writers.push(writer.to_owned());
        }
    }

    /// A header that could not be read: counted, the payload goes on without it.
    pub fn bad_header(&self, e: &HeaderError) {
        let mut s = self.lock();
        s.bad_headers += 1;
        s.last_bad = Some(e.to_string());
    }

    /// The report of a request the agent answered with `status`.
    pub fn report(&self, report: Report, lang: &str, status: u16) {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        if let Some(rt) = s.runtimes.get_mut(&report.runtime_id) {
            if report.seq >= rt.report.seq {
                // A service first seen now had nothing acked by an earlier agent.
                for (name, _) in &report.services {
                    rt.first_acked.entry(name.clone()).or_insert(0);
                }
                rt.report = report;
                rt.status = status;
                rt.touched = tick;
            }
            return;
        }
        if s.runtimes.len() >= MAX_RUNTIMES {
            let oldest = s.runtimes.iter().min_by_key(|(_, r)| r.touched).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                s.runtimes.remove(&k);
                s.runtimes_evicted += 1;
            }
        }
        let first_acked = report.services.iter().map(|(n, c)| (n.clone(), c.acked)).collect();
        s.runtimes.insert(
            report.runtime_id.clone(),
            Runtime {
                report,
                lang: crate::text::truncate(lang, 32).to_owned(),
                status,
                first_acked,
                touched: tick,
            },
        );
    }

    /// An accepted payload: `received` per raw root service (as decoded), `survived` per
    /// service after processing, the processing drops by reason (payload-wide), and whether
    /// the tracer sent a report.
    pub fn received(
        &self,
        lang: &str,
        received: &[(String, u64, u64)],
        survived: &[(String, u64)],
        drop_reasons: &[&str],
        reported: bool,
    ) {
        let reason = match drop_reasons {
            [one] => *one,
            _ => "processing",
        };
        let mut s = self.lock();
        let mut before: HashMap<String, u64> = HashMap::new();
        for (raw, _, spans) in received {
            let key = service_key(raw, lang);
            let h = s.hops(&key);
            h.received += spans;
            if reported {
                h.received_reported += spans;
            }
            *before.entry(key).or_default() += spans;
        }
        for (key, spans) in survived {
            s.hops(key).survived += spans;
            if let Some(b) = before.get_mut(key) {
                *b = b.saturating_sub(*spans);
            }
        }
        for (key, lost) in before {
            if lost > 0 {
                *s.hops(&key).processing.entry(reason.to_owned()).or_default() += lost;
            }
        }
    }

    /// The samplers' input and output for one payload (per service).
    pub fn sampled(&self, before: &[(String, u64)], after: &[(String, u64)]) {
        let mut s = self.lock();
        for (k, n) in before {
            s.hops(k).before_sampling += n;
        }
        for (k, n) in after {
            s.hops(k).kept += n;
        }
    }

    /// The local store wrote `counts` (per service).
    pub fn written(&self, writer: &str, counts: &[(String, u64)]) {
        let mut s = self.lock();
        for (k, n) in counts {
            s.hops(k).writers.entry(writer.to_owned()).or_default().delivered += n;
        }
    }

    fn settle(&self, writer: &str, counts: &[(String, u64)], outcome: u8) {
        let mut s = self.lock();
        for (k, n) in counts {
            let w = s.hops(k).writers.entry(writer.to_owned()).or_default();
            match outcome {
                DELIVERED => w.delivered += n,
                SPOOLED => w.spooled += n,
                _ => w.dropped += n,
            }
        }
    }

    /// Every service's ledger, sorted by service, and the runtime-wide part.
    pub fn snapshot(&self) -> LedgerSnapshot {
        let s = self.lock();
        let mut tracer: HashMap<String, TracerSide> = HashMap::new();
        let mut runtimes = Vec::new();
        for rt in s.runtimes.values() {
            let accepted = (200..300).contains(&rt.status);
            for (name, c) in &rt.report.services {
                let key = if name == TRACER_OVERFLOW {
                    name.clone()
                } else {
                    service_key(name, &rt.lang)
                };
                let t = tracer.entry(key).or_default();
                t.runtimes += 1;
                t.counts.add(c);
                let earlier = rt.first_acked.get(name).copied().unwrap_or(0);
                t.earlier_agent = t.earlier_agent.saturating_add(earlier);
                let (sent_now, refused_now) = if accepted { (c.in_flight, 0) } else { (0, c.in_flight) };
                let sent = (c.acked - earlier.min(c.acked))
                    .saturating_add(sent_now)
                    .saturating_add(c.agent_refused)
                    .saturating_add(refused_now);
                t.sent = t.sent.saturating_add(sent);
                t.refused = t.refused.saturating_add(c.agent_refused.saturating_add(refused_now));
            }
            runtimes.push(RuntimeLedger {
                runtime_id: rt.report.runtime_id.clone(),
                lang: rt.lang.clone(),
                seq: rt.report.seq,
                last_status: rt.status,
                created: rt.report.totals[0],
                finished: rt.report.totals[1],
                too_large: rt.report.totals[2],
                refused_by_status: rt
                    .report
                    .refused_by_status
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            });
        }
        runtimes.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        let mut names: Vec<&String> = s.services.keys().chain(tracer.keys()).collect();
        names.sort();
        names.dedup();
        let services = names
            .into_iter()
            .map(|name| {
                let mut h = s.services.get(name).cloned().unwrap_or_default();
                for w in &s.writers {
                    h.writers.entry(w.clone()).or_default();
                }
                let t = tracer.get(name);
                service_ledger(name, &h, t)
            })
            .collect();
        LedgerSnapshot {
            services,
            runtimes,
            bad_headers: s.bad_headers,
            last_bad_header: s.last_bad.clone(),
            runtimes_evicted: s.runtimes_evicted,
        }
    }

    /// A ticket for `payload` handed to `writer`: settled as delivered, spooled or dropped
    /// when the writer lets go of it (see [`Ticket`]).
    pub fn ticket(self: &Arc<Self>, writer: &str, payload: &pb::TracerPayload) -> Ticket {
        self.ticket_for(writer, count_pb(payload))
    }

    /// A ticket for per-service span `counts` handed to `writer` (see [`Ledger::ticket`]).
    pub fn ticket_for(self: &Arc<Self>, writer: &str, counts: Vec<(String, u64)>) -> Ticket {
        Ticket {
            ledger: Some(Arc::clone(self)),
            writer: writer.to_owned(),
            counts,
            outcome: AtomicU8::new(DROPPED),
        }
    }
}

const DROPPED: u8 = 0;
const DELIVERED: u8 = 1;
const SPOOLED: u8 = 2;

/// The ledger's view of one batch inside a writer: per-service span counts, settled once when
/// the batch is dropped — as delivered if [`Ticket::delivered`] was called (by any endpoint),
/// else as spooled after [`Ticket::spooled`], else as dropped. The writer only has to say
/// "delivered" on its ack path and "spooled" where it spools; every other end is a drop.
#[derive(Debug, Default)]
pub struct Ticket {
    ledger: Option<Arc<Ledger>>,
    writer: String,
    counts: Vec<(String, u64)>,
    outcome: AtomicU8,
}

impl Ticket {
    /// Adds another ticket's counts (batches of several payloads).
    pub fn merge(&mut self, mut other: Ticket) {
        if self.ledger.is_none() {
            self.ledger = other.ledger.take();
            self.writer = std::mem::take(&mut other.writer);
        }
        for (k, n) in std::mem::take(&mut other.counts) {
            match self.counts.iter_mut().find(|(s, _)| *s == k) {
                Some(e) => e.1 += n,
                None => self.counts.push((k, n)),
            }
        }
        other.ledger = None;
    }

    /// The destination answered 2xx.
    pub fn delivered(&self) {
        self.outcome.store(DELIVERED, Ordering::Relaxed);
    }

    /// The batch went to the spool (unless an endpoint delivered it).
    pub fn spooled(&self) {
        let _ = self
            .outcome
            .compare_exchange(DROPPED, SPOOLED, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.settle(&self.writer, &self.counts, self.outcome.load(Ordering::Relaxed));
        }
    }
}

/// The tracer's side for one service (summed over its runtime ids).
#[derive(Debug, Clone, Default)]
struct TracerSide {
    runtimes: u32,
    counts: TracerCounts,
    earlier_agent: u64,
    sent: u64,
    refused: u64,
}

fn service_ledger(name: &str, h: &Hops, t: Option<&TracerSide>) -> ServiceLedger {
    let processing: u64 = h.processing.values().sum();
    let sampled_out = h.before_sampling.saturating_sub(h.kept);
    let tracer = t.map(|t| {
        let c = &t.counts;
        let mut drops = BTreeMap::new();
        for (k, v) in [
            ("queue_full", c.queue_full),
            ("shutdown", c.shutdown),
            ("client_p0", c.client_p0),
            ("encode_error", c.encode_error),
            ("agent_unreachable", c.agent_unreachable),
        ] {
            if v > 0 {
                drops.insert(k.to_owned(), v);
            }
        }
        let dropped = drops.values().fold(0u64, |a, v| a.saturating_add(*v));
        let pending = i128::from(c.finished) - i128::from(t.earlier_agent) - i128::from(t.sent) - i128::from(dropped);
        TracerLedger {
            runtimes: t.runtimes,
            created: c.finished,
            earlier_agent: t.earlier_agent,
            sent: t.sent,
            refused_by_agent: t.refused,
            dropped: drops,
            pending: i64::try_from(pending).unwrap_or(i64::MIN),
        }
    });
    let writers: Vec<WriterLedger> = h
        .writers
        .iter()
        .map(|(w, c)| WriterLedger {
            writer: w.clone(),
            delivered: c.delivered,
            dropped: c.dropped,
            spooled: c.spooled,
            pending: sub(h.kept, c.delivered.saturating_add(c.dropped).saturating_add(c.spooled)),
        })
        .collect();
    let in_pipeline = sub(h.survived, h.before_sampling);
    let tracer_pending = tracer.as_ref().map_or(0, |t| t.pending);
    let writers_pending = writers
        .iter()
        .map(|w: &WriterLedger| w.pending.unsigned_abs())
        .sum::<u64>();
    let unexplained = t.map_or(0, |t| sub(t.sent - t.refused.min(t.sent), h.received_reported));
    ServiceLedger {
        service: name.to_owned(),
        tracer,
        received: h.received,
        received_from_reporting_tracers: h.received_reported,
        dropped_processing: h.processing.clone(),
        in_pipeline,
        sampled_out,
        kept: h.kept,
        writers,
        balanced: unexplained == 0
            && h.received == processing + h.survived
            && in_pipeline == 0
            && tracer_pending == 0
            && writers_pending == 0,
        unexplained,
    }
}

fn sub(a: u64, b: u64) -> i64 {
    i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(i64::MIN)
}

mod header;
mod view;

pub use header::{HeaderError, Report, TracerCounts, parse_header};
pub use view::{LedgerSnapshot, RuntimeLedger, ServiceLedger, TracerLedger, WriterLedger, render};

#[cfg(test)]
mod tests;
