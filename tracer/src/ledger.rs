//! The span ledger, tracer half: where the spans of each service went, counted since the
//! tracer started, and sent to the agent with every trace payload in one header
//! ([`HEADER`]) so the agent can join them with its own per-hop counts.
//!
//! The unit is the span, attributed to the service of its chunk's root (the agent's rule:
//! the last span with no parent, else the last span whose parent is not in the chunk, else
//! the last span), which is how the agent counts what it receives. Counters are cumulative,
//! so losing any one payload (or its header) loses nothing: the next one carries the totals.
//!
//! # Header format, version 1
//!
//! `X-Span-Ledger: v1 rid=<runtime-id> seq=<n> g=<created>,<finished>,<too_large> s=<service>:<counts> … r=<status>:<spans> …`
//!
//! Space-separated tokens; unknown `key=value` tokens are ignored by readers (room for later
//! fields), an unknown version is refused.
//! - `seq`: the report's number (retries of a payload repeat it; higher is newer).
//! - `g`: runtime-wide spans created, finished, and refused at start because their trace
//!   passed the per-trace cap (those never become spans, so no service row counts them).
//! - `s=` one per service (at most [`MAX_SERVICES`], later services under the name `*`):
//!   the name, cut to [`MAX_NAME`] bytes and percent-encoded outside `[A-Za-z0-9._/-]`, then
//!   comma-separated counts in this order (trailing zeros left out): `finished` (handed to
//!   the export pipeline), `acked` (in payloads the agent answered 2xx), `in_flight` (in
//!   this very payload), then drops: `queue_full`, `shutdown` (finished after shutdown),
//!   `client_p0` (rejected by sampling, dropped here with client-side stats),
//!   `encode_error` (lost with a payload the worker could not build), `agent_unreachable`
//!   (no reply after the retries), `agent_refused` (a non-2xx reply, by status in `r=`).
//! - `r=` runtime-wide spans refused by the agent per HTTP status (at most
//!   [`MAX_STATUSES`] statuses; later ones under status 0).
//!
//! Size: 64 services named like `service-name-12` with five-digit counts take 2 243 bytes;
//! whatever the names and counts, at most 32 KiB (65 rows × (300 + 9 × 21) bytes and the
//! rest; both tested), the agent's limit.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::span::SpanBox;

/// The request header carrying the report.
pub(crate) const HEADER: &str = "x-span-ledger";
/// Services with a row of their own; later ones count under [`OVERFLOW`].
pub(crate) const MAX_SERVICES: usize = 64;
/// Longest service name kept (bytes, cut on a character boundary): the agent's limit.
pub(crate) const MAX_NAME: usize = 100;
/// Distinct refusal statuses kept; later ones count under status 0.
pub(crate) const MAX_STATUSES: usize = 8;
/// The row of the services past [`MAX_SERVICES`].
pub(crate) const OVERFLOW: &str = "*";
/// How long after a failed delivery a report-only (empty) payload waits.
const REPORT_RETRY: Duration = Duration::from_secs(10);

/// Where spans left the tracer without reaching the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedgerDrop {
    /// The queue to the export thread was full.
    QueueFull = 3,
    /// Finished after shutdown.
    Shutdown = 4,
    /// Rejected by sampling and dropped here (client-side stats counted them).
    ClientP0 = 5,
    /// Lost with a payload the worker could not build.
    Encode = 6,
}

const FINISHED: usize = 0;
const ACKED: usize = 1;
const IN_FLIGHT: usize = 2;
const UNREACHABLE: usize = 7;
const REFUSED: usize = 8;
const FIELDS: usize = 9;

#[derive(Debug, Default)]
struct Row {
    counts: [u64; FIELDS],
    /// Spans in the payload being built (not sent yet).
    building: u64,
}

#[derive(Debug, Default)]
struct Table {
    rows: Vec<(String, Row)>,
    index: HashMap<String, usize>,
    /// The row used last.
    last: usize,
    statuses: Vec<(u16, u64)>,
    seq: u64,
    /// Drops and failures so far, and how many of them the last acked report carried.
    changes: u64,
    sealed_changes: u64,
    reported_changes: u64,
    /// No report-only payload before this (after a failed delivery).
    quiet_until: Option<Instant>,
}

impl Table {
    fn row(&mut self, service: &str) -> &mut Row {
        // Most chunks have the service of the one before: no hashing then.
        if self.rows.get(self.last).is_some_and(|(name, _)| name == service) {
            return &mut self.rows[self.last].1;
        }
        let i = match self.index.get(service) {
            Some(&i) => i,
            None => {
                let name = if self.index.len() >= MAX_SERVICES {
                    OVERFLOW
                } else {
                    cut(service, MAX_NAME)
                };
                match self.index.get(name) {
                    Some(&i) => i,
                    None => {
                        self.rows.push((name.to_owned(), Row::default()));
                        self.index.insert(name.to_owned(), self.rows.len() - 1);
                        self.rows.len() - 1
                    }
                }
            }
        };
        // `i` comes from `index`, which only holds positions of `rows`.
        if i >= self.rows.len() {
            return unreachable_row(&mut self.rows);
        }
        // Only a service's own row is remembered (not the overflow row it landed in).
        if self.rows[i].0 == service {
            self.last = i;
        }
        &mut self.rows[i].1
    }

    /// Moves every row's in-flight spans into counter `to`; returns how many.
    fn settle(&mut self, to: usize) -> u64 {
        let mut n: u64 = 0;
        for (_, r) in &mut self.rows {
            let v = std::mem::take(&mut r.counts[IN_FLIGHT]);
            r.counts[to] = r.counts[to].saturating_add(v);
            n = n.saturating_add(v);
        }
        n
    }
}

/// Never reached (see the caller); keeps the hot path free of panics.
#[cold]
fn unreachable_row(rows: &mut Vec<(String, Row)>) -> &mut Row {
    rows.push((OVERFLOW.to_owned(), Row::default()));
    let last = rows.len() - 1;
    &mut rows[last].1
}

/// The tracer's span ledger, shared by the export worker and the application threads'
/// drop paths (one uncontended lock per chunk on the worker).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    table: Mutex<Table>,
}

/// Runtime-wide figures for the `g=` token.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub(crate) created: u64,
    pub(crate) finished: u64,
    pub(crate) too_large: u64,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A chunk encoded into the payload being built (the worker batches: [`Ledger::add_count`]).
    #[cfg(test)]
    pub(crate) fn add(&self, spans: &[SpanBox], default_service: &str) {
        let Some(service) = root_service(spans, default_service) else {
            return;
        };
        self.add_count(service, spans.len() as u64);
    }

    /// `n` spans of chunks whose root has service `service` encoded into the payload being
    /// built (the export worker adds up a run of chunks of one service, then calls this).
    pub(crate) fn add_count(&self, service: &str, n: u64) {
        let mut t = self.lock();
        let row = t.row(service);
        row.counts[FINISHED] = row.counts[FINISHED].saturating_add(n);
        row.building = row.building.saturating_add(n);
    }

    /// A finished chunk dropped before it reached a payload.
    pub(crate) fn dropped(&self, why: LedgerDrop, spans: &[SpanBox], default_service: &str) {
        let Some(service) = root_service(spans, default_service) else {
            return;
        };
        let n = spans.len() as u64;
        let mut t = self.lock();
        let row = t.row(service);
        row.counts[FINISHED] = row.counts[FINISHED].saturating_add(n);
        row.counts[why as usize] = row.counts[why as usize].saturating_add(n);
        t.changes += 1;
    }

    /// The payload being built goes out: its spans are in flight. Returns the header value.
    pub(crate) fn seal(&self, runtime_id: &str, totals: Totals) -> String {
        let mut t = self.lock();
        // A payload sealed before and never settled (a panic mid-send) is lost.
        if t.settle(Self::ENCODE) > 0 {
            t.changes += 1;
        }
        for (_, r) in &mut t.rows {
            r.counts[IN_FLIGHT] = std::mem::take(&mut r.building);
        }
        t.seq += 1;
        t.sealed_changes = t.changes;
        render(&t, runtime_id, totals)
    }

    const ENCODE: usize = LedgerDrop::Encode as usize;

    /// The agent answered 2xx to the payload in flight.
    pub(crate) fn acked(&self) {
        let mut t = self.lock();
        t.settle(ACKED);
        t.reported_changes = t.sealed_changes;
        t.quiet_until = None;
    }

    /// The payload in flight was given up on: `status` is the agent's last answer, `None`
    /// when there was no reply.
    pub(crate) fn failed(&self, status: Option<u16>, now: Instant) {
        let mut t = self.lock();
        let n = t.settle(if status.is_some() { REFUSED } else { UNREACHABLE });
        if let Some(s) = status {
            let known = t.statuses.iter().position(|(k, _)| *k == s);
            let slot = match known {
                Some(i) => i,
                None if t.statuses.len() < MAX_STATUSES => {
                    t.statuses.push((s, 0));
                    t.statuses.len() - 1
                }
                None => match t.statuses.iter().position(|(k, _)| *k == 0) {
                    Some(i) => i,
                    None => {
                        // Make room: fold the last status into 0.
                        let (_, last) = t.statuses.pop().unwrap_or_default();
                        t.statuses.push((0, last));
                        t.statuses.len() - 1
                    }
                },
            };
            if let Some(e) = t.statuses.get_mut(slot) {
                e.1 = e.1.saturating_add(n);
            }
        }
        t.changes += 1;
        t.quiet_until = Some(now + REPORT_RETRY);
    }

    /// The payload being built (and any in flight) was lost: the worker panicked.
    pub(crate) fn lost(&self) {
        let mut t = self.lock();
        t.settle(Self::ENCODE);
        for (_, r) in &mut t.rows {
            let v = std::mem::take(&mut r.building);
            r.counts[Self::ENCODE] = r.counts[Self::ENCODE].saturating_add(v);
        }
        t.changes += 1;
    }

    /// Whether drops happened that no acked report told the agent about yet, and a
    /// report-only payload may go out at `now`.
    pub(crate) fn report_due(&self, now: Instant) -> bool {
        let t = self.lock();
        t.changes != t.reported_changes && t.quiet_until.is_none_or(|q| now >= q)
    }
}

/// The chunk's root service, by the agent's rule (see the module docs); `None` when empty.
pub(crate) fn root_service<'a>(spans: &'a [SpanBox], default_service: &'a str) -> Option<&'a str> {
    let root = spans.iter().rposition(|s| !s.parent_id.is_valid()).or_else(|| {
        let orphan = |s: &&SpanBox| !spans.iter().any(|p| p.span_id == s.parent_id);
        // Chunks are small; a linear look-up per span stays cheap up to a few dozen.
        if spans.len() <= 64 {
            spans.iter().rposition(|s| orphan(&s))
        } else {
            let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id).collect();
            spans.iter().rposition(|s| !ids.contains(&s.parent_id))
        }
    });
    let root = spans.get(root.unwrap_or(spans.len().checked_sub(1)?))?;
    Some(root.service.as_deref().unwrap_or(default_service))
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Percent-encodes `name` outside `[A-Za-z0-9._/-]` (so `:`, `,`, `=`, `%`, `*`, spaces and
/// non-ASCII never appear raw).
fn push_name(out: &mut String, name: &str) {
    if name == OVERFLOW {
        out.push_str(OVERFLOW);
        return;
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn render(t: &Table, runtime_id: &str, g: Totals) -> String {
    let mut out = String::with_capacity(64 + t.rows.len() * 48);
    let _ = write!(
        out,
        "v1 rid={} seq={} g={},{},{}",
        cut(runtime_id, 64),
        t.seq,
        g.created,
        g.finished,
        g.too_large
    );
    for (name, row) in &t.rows {
        out.push_str(" s=");
        push_name(&mut out, name);
        out.push(':');
        let used = row.counts.iter().rposition(|&v| v != 0).map_or(1, |i| i + 1);
        for (i, v) in row.counts.iter().take(used).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{v}");
        }
    }
    for (status, n) in &t.statuses {
        let _ = write!(out, " r={status}:{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{SpanData, SpanId, Str, TraceId};

    fn span(id: u64, parent: u64, service: Option<&str>) -> SpanBox {
        let mut s = SpanData::new(
            TraceId::from_u128(1),
            SpanId::from_u64(id),
            SpanId::from_u64(parent),
            Str::from("op"),
        );
        s.service = service.map(|x| Str::from(x.to_owned()));
        Box::new(s)
    }

    #[test]
    fn the_root_is_found_as_the_agent_finds_it() {
        let chunk = vec![span(2, 1, Some("db")), span(1, 0, None)];
        assert_eq!(root_service(&chunk, "web"), Some("web"));
        // A remote parent: the span whose parent is not in the chunk.
        let chunk = vec![span(3, 2, Some("db")), span(2, 99, Some("api"))];
        assert_eq!(root_service(&chunk, "web"), Some("api"));
        assert_eq!(root_service(&[], "web"), None);
    }

    #[test]
    fn a_payload_moves_from_building_to_in_flight_to_acked() {
        let l = Ledger::default();
        l.add(&[span(1, 0, None), span(2, 1, None)], "web");
        l.dropped(LedgerDrop::QueueFull, &[span(5, 0, Some("a b:c"))], "web");
        let h = l.seal(
            "rid-1",
            Totals {
                created: 4,
                finished: 3,
                too_large: 1,
            },
        );
        assert_eq!(h, "v1 rid=rid-1 seq=1 g=4,3,1 s=web:2,0,2 s=a%20b%3Ac:1,0,0,1");
        assert!(l.report_due(Instant::now()), "the queue-full drop is not acked yet");
        l.acked();
        assert!(!l.report_due(Instant::now()));
        let h = l.seal("rid-1", Totals::default());
        assert_eq!(h, "v1 rid=rid-1 seq=2 g=0,0,0 s=web:2,2 s=a%20b%3Ac:1,0,0,1");
    }

    #[test]
    fn failures_are_counted_by_status_and_report_only_payloads_wait() {
        let l = Ledger::default();
        let now = Instant::now();
        l.add(&[span(1, 0, None)], "web");
        let _ = l.seal("r", Totals::default());
        l.failed(Some(413), now);
        l.add(&[span(2, 0, None), span(3, 2, None)], "web");
        let _ = l.seal("r", Totals::default());
        l.failed(None, now);
        assert!(!l.report_due(now), "quiet for a while after a failure");
        assert!(l.report_due(now + REPORT_RETRY));
        let h = l.seal("r", Totals::default());
        assert_eq!(h, "v1 rid=r seq=3 g=0,0,0 s=web:3,0,0,0,0,0,0,2,1 r=413:1");
    }

    #[test]
    fn header_sizes_for_64_services() {
        // Typical: 64 services, five-digit finished/acked counts, a three-digit payload.
        let l = Ledger::default();
        for i in 0..MAX_SERVICES {
            let chunk = [span(1, 0, Some(&format!("service-name-{i:02}")))];
            for _ in 0..3 {
                l.add(&chunk, "web");
            }
        }
        let mut t = l.lock();
        for (_, r) in &mut t.rows {
            r.counts[FINISHED] = 12_345;
            r.counts[ACKED] = 12_045;
            r.building = 300;
        }
        drop(t);
        let rid = "0f8e6b2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
        let typical = l.seal(
            rid,
            Totals {
                created: 790_080,
                finished: 790_080,
                too_large: 0,
            },
        );
        assert_eq!(typical.len(), 2_243, "{typical}");
        // Worst case: every name 100 bytes of two-byte characters (300 encoded), every counter
        // at u64::MAX, every status slot used: still under the agent's 32 KiB header limit.
        let l = Ledger::default();
        for i in 0..MAX_SERVICES + 1 {
            let name = format!("{i:02}{}", "é".repeat(49));
            l.add(&[span(1, 0, Some(&name))], "web");
        }
        let mut t = l.lock();
        for (_, r) in &mut t.rows {
            r.counts = [u64::MAX; FIELDS];
            r.counts[IN_FLIGHT] = 0;
            r.building = u64::MAX;
        }
        t.statuses = (0..MAX_STATUSES as u16).map(|s| (500 + s, u64::MAX)).collect();
        drop(t);
        let worst = l.seal(
            &"f".repeat(80),
            Totals {
                created: u64::MAX,
                finished: u64::MAX,
                too_large: u64::MAX,
            },
        );
        assert!(worst.len() <= 32 * 1024, "{}", worst.len());
        assert!(
            worst.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "a valid header value"
        );
    }

    #[test]
    fn services_past_the_cap_share_one_row_and_a_panic_loses_the_payload() {
        let l = Ledger::default();
        for i in 0..MAX_SERVICES + 10 {
            l.add(&[span(1, 0, Some(&format!("svc-{i}")))], "web");
        }
        l.lost();
        let h = l.seal("r", Totals::default());
        assert_eq!(h.matches(" s=").count(), MAX_SERVICES + 1);
        assert!(h.ends_with(" s=*:10,0,0,0,0,0,10"), "{h}");
    }
}
