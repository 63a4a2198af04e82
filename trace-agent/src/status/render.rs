//! The human view of a status snapshot (`trace-agent status`).

use super::*;

/// `python 3.11.7 (tracer 4.16.0)`, with `unknown` for what the tracer did not send.
pub fn tracer_identity(lang: &str, lang_version: &str, tracer_version: &str) -> String {
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_owned()
        } else {
            s.to_owned()
        }
    };
    let lang = if lang.is_empty() {
        "unknown language".to_owned()
    } else {
        lang.to_owned()
    };
    let version = if lang_version.is_empty() {
        String::new()
    } else {
        format!(" {lang_version}")
    };
    format!("{lang}{version} (tracer {})", or_unknown(tracer_version))
}

/// The human view of a snapshot, like `datadog-agent status`. Every control character that
/// came from payloads, headers or upstream replies is escaped (no terminal escapes reach the
/// terminal; no text can forge a line).
pub fn render(s: &StatusSnapshot) -> String {
    let raw = render_raw(s);
    // Lines are ours; control characters inside them are not.
    raw.split('\n')
        .map(|line| crate::text::escape_control(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn render_raw(s: &StatusSnapshot) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "Trace Agent (Datadog-compatible, agent version {})", s.version);
    let _ = writeln!(o, "  Uptime: {} s", s.uptime_seconds);
    let _ = writeln!(o, "  Listening on: {}", s.listening.join(", "));
    let _ = writeln!(o, "\nReceiver (since start)");
    if s.received.is_empty() {
        let _ = writeln!(
            o,
            "  No traces received yet. Point your tracer at one of the addresses above"
        );
        let _ = writeln!(o, "  (DD_TRACE_AGENT_URL / DD_AGENT_HOST + DD_TRACE_AGENT_PORT).");
    }
    for (k, c) in &s.received {
        let _ = writeln!(
            o,
            "  service {:?} from {}: {} payloads, {} traces, {} spans, {} bytes",
            k.service,
            crate::text::escape_control(&tracer_identity(&k.lang, &k.lang_version, &k.tracer_version)),
            c.payloads,
            c.traces,
            c.spans,
            c.bytes
        );
    }
    let _ = writeln!(o, "\nDropped");
    if s.dropped.is_empty() {
        let _ = writeln!(o, "  nothing");
    }
    for (reason, d) in &s.dropped {
        let reason = crate::text::escape_control(reason);
        let _ = writeln!(
            o,
            "  {reason}: {} payloads, {} traces, {} spans",
            d.payloads, d.traces, d.spans
        );
    }
    if !s.normalized.is_empty() {
        let fixed: Vec<String> = s.normalized.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(o, "\nCorrected by normalization (spans): {}", fixed.join(", "));
    }
    let _ = writeln!(
        o,
        "\nForwarded to the next stage: {} payloads, {} traces, {} spans",
        s.forwarded.payloads, s.forwarded.traces, s.forwarded.spans
    );
    let _ = writeln!(o, "Upstream: {}", s.upstream);
    if s.sink_panics > 0 {
        let _ = writeln!(
            o,
            "  {} items dropped because the forwarding stage panicked on them (a bug: please report it)",
            s.sink_panics
        );
    }
    if let Some(f) = &s.forward {
        o.push_str(&render_forward(f));
    }
    for w in &s.writers {
        o.push_str(&render_writer(w));
    }
    if let Some(local) = &s.local {
        o.push_str(&local.render());
    }
    o.push_str(&crate::ledger::render(&s.ledger));
    o.push_str(&s.otlp.render());
    o.push_str(&proxy::render(&s.proxy));
    let _ = writeln!(
        o,
        "Tracer-computed stats payloads (/v0.6/stats): {}",
        s.client_stats_payloads
    );
    let _ = writeln!(
        o,
        "Dropped by the tracers themselves (P0, sampled out client-side): {} traces, {} spans",
        s.client_dropped_p0.0, s.client_dropped_p0.1
    );
    let _ = writeln!(o, "/info requests served: {}", s.info_requests);
    let _ = writeln!(
        o,
        "Requests in flight: {}, decoder slots busy: {}",
        s.in_flight, s.decoders_busy
    );
    if let Some(b) = &s.buffers {
        let _ = writeln!(
            o,
            "Buffers: request bodies {} of {} bytes (receiver_max_buffered_bytes), pipeline {} of {} bytes (pipeline_max_bytes)",
            b.body_bytes, b.body_bytes_max, b.pipeline_bytes, b.pipeline_bytes_max
        );
    }
    if let Some(l) = &s.limits {
        let off = |on: bool, v: String| if on { v } else { "off".to_owned() };
        let _ = writeln!(
            o,
            "Limits: max_memory {} (RSS {} bytes), max_cpu_percent {} (CPU {:.1} %), connection_limit {}{}",
            off(l.max_memory > 0, format!("{} bytes", l.max_memory)),
            l.rss_bytes,
            off(l.max_cpu_percent > 0.0, format!("{} %", l.max_cpu_percent)),
            l.cpu_percent,
            off(
                l.connection_limit > 0,
                format!("{} per 30 s ({} refused)", l.connection_limit, s.connections_refused)
            ),
            l.refusing
                .as_ref()
                .map_or_else(String::new, |r| format!("; REFUSING PAYLOADS: {r}"))
        );
    }
    match &s.last_error {
        Some((at, msg)) => {
            let msg = crate::text::escape_control(msg);
            let _ = writeln!(o, "Last error (unix time {at}): {msg}");
        }
        None => {
            let _ = writeln!(o, "Last error: none");
        }
    }
    o
}

pub(super) fn render_forward(f: &crate::forward::ForwardReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "\nSamplers");
    o.push_str(&f.samplers.render());
    let _ = writeln!(
        o,
        "\nStats: {} payloads computed ({} skipped: tracer-computed), {} spans counted, {} in the \
         overflow group, {} late; {} buckets flushed; {} stats payloads sent; {} client-stats payloads",
        f.stats_payloads,
        f.stats_skipped_client_computed,
        f.stats_spans_counted,
        f.stats_overflow_spans,
        f.stats_late_spans,
        f.stats_buckets_flushed,
        f.stats_payloads_sent,
        f.client_stats_payloads
    );
    o
}

pub(super) fn render_writer(w: &crate::upstream::WriterStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "\nWriter {} → {}", w.name, w.endpoints.join(", "));
    for (what, s) in [("traces", &w.traces), ("stats", &w.stats)] {
        let ago = |t: Option<SystemTime>| {
            t.and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or_else(|| "never".to_owned(), |d| format!("{} s ago", d.as_secs()))
        };
        let _ = writeln!(
            o,
            "  {what}: {} payloads ({} items, {} bytes) sent, {} retries, failures {:?}, dropped {:?}, \
             queue {}/{} ({} bytes), last success {}",
            s.payloads_sent,
            s.items_sent,
            s.bytes_sent,
            s.retries,
            s.failures,
            s.dropped_payloads,
            s.queue_depth,
            s.queue_capacity,
            s.queue_bytes,
            ago(s.last_success)
        );
        if s.spooled_payloads + s.replayed_payloads + s.spooled_now_payloads > 0 {
            let _ = writeln!(
                o,
                "    spool: {} payloads ({} items) spooled, {} ({} items) sent again, {} waiting",
                s.spooled_payloads, s.spooled_items, s.replayed_payloads, s.replayed_items, s.spooled_now_payloads
            );
        }
        if let Some((at, msg)) = &s.last_error {
            let msg = crate::text::escape_control(msg);
            let _ = writeln!(o, "    last error ({}): {msg}", ago(Some(*at)));
        }
    }
    o
}
