//! What `status` and the web view show: the snapshot types and the text rendering.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One service's ledger, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLedger {
    /// The service (normalized name).
    pub service: String,
    /// The tracers' side; `None`: no tracer of this service reports (e.g. ddtrace).
    pub tracer: Option<TracerLedger>,
    /// Spans received in accepted payloads.
    pub received: u64,
    /// Of which from tracers that sent a report.
    pub received_from_reporting_tracers: u64,
    /// Dropped by processing, by reason.
    pub dropped_processing: BTreeMap<String, u64>,
    /// Past processing, not yet at the samplers.
    pub in_pipeline: i64,
    /// Removed by the samplers.
    pub sampled_out: u64,
    /// Handed to the writers.
    pub kept: u64,
    /// Per writer.
    pub writers: Vec<WriterLedger>,
    /// Sent − refused by the agent − received from reporting tracers: ≠ 0 when spans went
    /// missing on the wire (or a report is behind).
    pub unexplained: i64,
    /// Every hop adds up and nothing is on its way: nothing unexplained, nothing pending in
    /// the tracer, the pipeline or a writer.
    pub balanced: bool,
}

/// The tracer's side of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracerLedger {
    /// Runtime ids reporting this service.
    pub runtimes: u32,
    /// Spans finished and handed to the export pipeline (the tracer's "created").
    pub created: u64,
    /// Acked by an earlier agent instance (before this agent first heard from the tracer).
    pub earlier_agent: u64,
    /// Sent to this agent (acked, in flight, or refused by it).
    pub sent: u64,
    /// Of which refused by the agent (non-2xx).
    pub refused_by_agent: u64,
    /// Dropped in the tracer, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Still in the tracer (queue, payload being built).
    pub pending: i64,
}

/// One writer's outcomes for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLedger {
    /// `datadog`, `otlp`, `local`.
    pub writer: String,
    /// Delivered (2xx) or written.
    pub delivered: u64,
    /// Dropped by the writer.
    pub dropped: u64,
    /// Spooled for the next start.
    pub spooled: u64,
    /// Kept but not settled yet (queued, in flight, or lost without a per-service count).
    pub pending: i64,
}

/// A reporting tracer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeLedger {
    /// Runtime id.
    pub runtime_id: String,
    /// `Datadog-Meta-Lang`.
    pub lang: String,
    /// Latest report number.
    pub seq: u64,
    /// What the agent answered to it.
    pub last_status: u16,
    /// Spans created (including unfinished ones).
    pub created: u64,
    /// Spans finished.
    pub finished: u64,
    /// Spans refused at start (trace over the per-trace cap).
    pub too_large: u64,
    /// Spans the agent refused, by status.
    pub refused_by_status: BTreeMap<String, u64>,
}

/// The whole ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    /// Per service, sorted.
    pub services: Vec<ServiceLedger>,
    /// Per reporting tracer.
    pub runtimes: Vec<RuntimeLedger>,
    /// Headers that could not be read (ignored; their payloads were still taken).
    pub bad_headers: u64,
    /// Why the last one was refused.
    pub last_bad_header: Option<String>,
    /// Runtime ids forgotten to make room.
    pub runtimes_evicted: u64,
}

fn named(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ServiceLedger {
    /// `created 10 → sent 8 → received 8 → kept 6 → delivered local 6`.
    pub fn headline(&self) -> String {
        let mut o = match &self.tracer {
            Some(t) => format!("created {} → sent {} → ", t.created, t.sent),
            None => "tracer: not reported → ".to_owned(),
        };
        o.push_str(&format!("received {} → kept {}", self.received, self.kept));
        for w in &self.writers {
            o.push_str(&format!(" → delivered {} {}", w.writer, w.delivered));
        }
        o
    }

    /// Each loss (and what is still on its way), named: one line per hop.
    pub fn losses(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(t) = &self.tracer {
            let mut l = format!("tracer ({} runtime id(s)): ", t.runtimes);
            let dropped = named(&t.dropped);
            l.push_str(if dropped.is_empty() {
                "dropped nothing"
            } else {
                "dropped "
            });
            l.push_str(&dropped);
            if t.refused_by_agent > 0 {
                l.push_str(&format!("; refused by the agent {}", t.refused_by_agent));
            }
            if t.earlier_agent > 0 {
                l.push_str(&format!("; delivered to an earlier agent run {}", t.earlier_agent));
            }
            if t.pending != 0 {
                l.push_str(&format!("; still in the tracer {}", t.pending));
            }
            lines.push(l);
        }
        let mut l = String::from("agent: ");
        let processing = named(&self.dropped_processing);
        if processing.is_empty() {
            l.push_str("nothing dropped in processing");
        } else {
            l.push_str("dropped in processing ");
            l.push_str(&processing);
        }
        l.push_str(&format!("; sampled out {}", self.sampled_out));
        if self.in_pipeline != 0 {
            l.push_str(&format!("; in the pipeline {}", self.in_pipeline));
        }
        if self.unexplained != 0 {
            l.push_str(&format!(
                "; UNEXPLAINED {} (sent − refused − received from reporting tracers)",
                self.unexplained
            ));
        }
        if self.tracer.is_some() && self.received != self.received_from_reporting_tracers {
            l.push_str(&format!(
                "; {} received from tracers that do not report",
                self.received - self.received_from_reporting_tracers.min(self.received)
            ));
        }
        lines.push(l);
        for w in &self.writers {
            lines.push(format!(
                "writer {}: delivered {}, dropped {}, spooled {}, on its way {}",
                w.writer, w.delivered, w.dropped, w.spooled, w.pending
            ));
        }
        lines
    }
}

/// The `status` text: per service, the chain and its losses.
pub fn render(s: &LedgerSnapshot) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nSpan ledger (spans per service since start: tracer → agent → writers)"
    );
    if s.services.is_empty() {
        let _ = writeln!(o, "  nothing yet");
    }
    for svc in &s.services {
        let mark = if svc.balanced { "balanced" } else { "not settled" };
        let _ = writeln!(o, "  service {:?}: {} [{mark}]", svc.service, svc.headline());
        for line in svc.losses() {
            let _ = writeln!(o, "    {line}");
        }
    }
    for r in &s.runtimes {
        let _ = writeln!(
            o,
            "  tracer {} ({}) report {} (answered {}): created {}, finished {}, refused at start (trace too large) {}{}",
            r.runtime_id,
            r.lang,
            r.seq,
            r.last_status,
            r.created,
            r.finished,
            r.too_large,
            if r.refused_by_status.is_empty() {
                String::new()
            } else {
                format!("; refused by the agent by status: {}", named(&r.refused_by_status))
            }
        );
    }
    if s.bad_headers > 0 || s.runtimes_evicted > 0 {
        let _ = writeln!(
            o,
            "  unreadable ledger headers: {} (last: {}); runtime ids forgotten: {}",
            s.bad_headers,
            s.last_bad_header.as_deref().unwrap_or("-"),
            s.runtimes_evicted
        );
    }
    o
}
