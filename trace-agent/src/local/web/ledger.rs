//! `/ledger`: the span ledger (`crate::ledger`) per service — created → sent → received → kept
//! → delivered, each loss named — as a table; every name from payloads is escaped.

use std::fmt::Write as _;

use super::html::escape;
use super::pages::{Frame, page};
use crate::ledger::LedgerSnapshot;

fn losses(m: &std::collections::BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{} {v}", escape(k)))
        .collect();
    if parts.is_empty() {
        "—".to_owned()
    } else {
        parts.join("<br>")
    }
}

/// The page.
pub fn ledger(f: &Frame<'_>, s: Option<&LedgerSnapshot>) -> String {
    let Some(s) = s else {
        return page(
            f,
            "<div class=\"empty\" id=\"ledger-off\">The span ledger is not attached to this store.</div>",
        );
    };
    let mut o = String::from(
        "<p>Spans per service since the agent started: what the tracer created and sent (tracers that \
         report their ledger: this repository's), what this agent received, kept and delivered, and \
         every loss on the way. A tracer without a ledger (e.g. ddtrace) shows \"not reported\".</p>\
         <table id=\"ledger\"><thead><tr><th>service</th><th>created</th><th>dropped in the tracer</th>\
         <th>sent</th><th>refused by the agent</th><th>received</th><th>dropped in processing</th>\
         <th>sampled out</th><th>kept</th><th>delivered</th><th>writer losses</th><th></th></tr></thead><tbody>",
    );
    if s.services.is_empty() {
        o.push_str("<tr><td colspan=\"12\" class=\"empty\">nothing received yet</td></tr>");
    }
    for svc in &s.services {
        let (created, dropped, sent, refused) = match &svc.tracer {
            Some(t) => {
                let mut d = losses(&t.dropped);
                if t.pending != 0 {
                    let _ = write!(d, "<br>still in the tracer {}", t.pending);
                }
                if t.earlier_agent > 0 {
                    let _ = write!(d, "<br>delivered to an earlier agent run {}", t.earlier_agent);
                }
                (
                    t.created.to_string(),
                    d,
                    t.sent.to_string(),
                    t.refused_by_agent.to_string(),
                )
            }
            None => (
                "<span class=\"muted\">tracer: not reported</span>".to_owned(),
                "—".to_owned(),
                "—".to_owned(),
                "—".to_owned(),
            ),
        };
        let mut delivered = Vec::new();
        let mut writer_losses = Vec::new();
        for w in &svc.writers {
            delivered.push(format!("{} {}", escape(&w.writer), w.delivered));
            for (what, n) in [("dropped", w.dropped), ("spooled", w.spooled)] {
                if n > 0 {
                    writer_losses.push(format!("{} {what} {n}", escape(&w.writer)));
                }
            }
            if w.pending != 0 {
                writer_losses.push(format!("{} on its way {}", escape(&w.writer), w.pending));
            }
        }
        let mut processing = losses(&svc.dropped_processing);
        if svc.in_pipeline != 0 {
            let _ = write!(processing, "<br>in the pipeline {}", svc.in_pipeline);
        }
        if svc.unexplained != 0 {
            let _ = write!(processing, "<br><b>unexplained {}</b>", svc.unexplained);
        }
        let _ = write!(
            o,
            "<tr><td><a href=\"/services/{enc}\">{name}</a></td><td>{created}</td><td>{dropped}</td><td>{sent}</td>\
             <td>{refused}</td><td>{received}</td><td>{processing}</td><td>{sampled}</td><td>{kept}</td>\
             <td>{delivered}</td><td>{wl}</td><td>{mark}</td></tr>",
            enc = escape(&super::html::encode_segment(&svc.service)),
            name = escape(&svc.service),
            received = svc.received,
            sampled = svc.sampled_out,
            kept = svc.kept,
            delivered = if delivered.is_empty() {
                "—".to_owned()
            } else {
                delivered.join("<br>")
            },
            wl = if writer_losses.is_empty() {
                "—".to_owned()
            } else {
                writer_losses.join("<br>")
            },
            mark = if svc.balanced { "balanced" } else { "not settled" },
        );
    }
    o.push_str("</tbody></table>");
    if !s.runtimes.is_empty() {
        o.push_str(
            "<h3>Reporting tracers</h3><table id=\"ledger-tracers\"><thead><tr><th>runtime id</th><th>language</th>\
             <th>report</th><th>answered</th><th>created</th><th>finished</th><th>refused at start (trace too large)</th>\
             <th>refused by status</th></tr></thead><tbody>",
        );
        for r in &s.runtimes {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.runtime_id),
                escape(&r.lang),
                r.seq,
                r.last_status,
                r.created,
                r.finished,
                r.too_large,
                losses(&r.refused_by_status)
            );
        }
        o.push_str("</tbody></table>");
    }
    if s.bad_headers > 0 {
        let _ = write!(
            o,
            "<p>Unreadable ledger headers: {} (last: {})</p>",
            s.bad_headers,
            escape(s.last_bad_header.as_deref().unwrap_or("-"))
        );
    }
    page(f, &o)
}
