//! The pages beyond the overview: trace search, the service map, monitors; and the parts
//! added to the service page (anomaly bands, monitor states) and the resource page
//! (version comparison). Server-rendered like [`super::pages`]; every stored string escaped.

use std::fmt::Write;

use serde::Serialize;

use super::html::{clock, duration, encode_segment, escape, percent, service_colour};
use super::pages::{Frame, page};
use crate::local::anomaly::{self, Band, BandParams};
use crate::local::monitor::config::{Comparator, Metric, Schedule};
use crate::local::monitor::{Downtime, Event, MonitorStatus, State, WebhookStatus};
use crate::local::query::{ServiceSummary, Window};
use crate::local::search::{SearchQuery, SearchResult};
use crate::local::service_map::{self, ServiceMap};
use crate::local::versions::VersionComparison;

/// One chart point with its band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandPoint {
    /// Slot start, ns.
    pub start_ns: i64,
    /// The value (`null`: no request in the slot).
    pub value: Option<f64>,
    /// The expected range (`null`: too little history).
    pub band: Option<Band>,
}

/// Anomaly bands of a service's charts (`GET /api/v1/services/{service}/anomalies`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceAnomalies {
    /// Service.
    pub service: String,
    /// Operation of the figures.
    pub operation: String,
    /// p95 latency per slot (ns), band from [`anomaly::LATENCY`].
    pub p95: Vec<BandPoint>,
    /// Error rate per slot (0–1), band from [`anomaly::ERROR_RATE`].
    pub error_rate: Vec<BandPoint>,
}

impl ServiceAnomalies {
    /// Bands of the summary's series.
    pub fn of(s: &ServiceSummary) -> Self {
        let points = |values: Vec<Option<f64>>, p: &BandParams| {
            let bands = anomaly::bands(&values, p);
            s.series
                .iter()
                .zip(values)
                .zip(bands)
                .map(|((pt, value), band)| BandPoint {
                    start_ns: pt.start_ns,
                    value,
                    band,
                })
                .collect()
        };
        Self {
            service: s.service.clone(),
            operation: s.operation.clone(),
            p95: points(s.series.iter().map(|p| p.p95_ns).collect(), &anomaly::LATENCY),
            error_rate: points(
                s.series
                    .iter()
                    .map(|p| (p.hits > 0).then(|| p.errors as f64 / p.hits as f64))
                    .collect(),
                &anomaly::ERROR_RATE,
            ),
        }
    }
}

/// A line chart with its anomaly band (shaded per slot) and anomalous points marked.
pub fn band_chart(id: &str, points: &[BandPoint], width: u32, height: u32, title: &str) -> String {
    let n = points.len().max(1) as f64;
    let max = points
        .iter()
        .flat_map(|p| [p.value, p.band.map(|b| b.hi)])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let (w, h) = (f64::from(width), f64::from(height));
    let slot = w / n;
    let y = |v: f64| {
        if max > 0.0 {
            h - 2.0 - v / max * (h - 6.0)
        } else {
            h - 2.0
        }
    };
    let mut svg = format!(
        "<svg class=\"chart banded\" id=\"{id}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         role=\"img\"><title>{}</title><rect width=\"{width}\" height=\"{height}\" class=\"bg\"/>",
        escape(title)
    );
    for (i, p) in points.iter().enumerate() {
        if let Some(b) = p.band {
            let _ = write!(
                svg,
                "<rect class=\"band\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                i as f64 * slot,
                y(b.hi),
                slot,
                (y(b.lo) - y(b.hi)).max(1.0)
            );
        }
    }
    let mut path = String::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = p.value {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if path.is_empty() { "M" } else { " L" },
                i as f64 * slot + slot / 2.0,
                y(v)
            );
        }
    }
    let _ = write!(svg, "<path class=\"line\" d=\"{path}\"/>");
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = p.value {
            let anomalous = p.band.is_some_and(|b| b.anomaly);
            let _ = write!(
                svg,
                "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"{}><title>{}</title></circle>",
                if anomalous { "anomaly" } else { "dot" },
                i as f64 * slot + slot / 2.0,
                y(v),
                if anomalous { 4 } else { 2 },
                if anomalous {
                    format!(" data-anomaly=\"{i}\" data-start=\"{}\"", p.start_ns)
                } else {
                    String::new()
                },
                escape(&format!(
                    "{}: {v:.4}{}",
                    clock(p.start_ns),
                    p.band
                        .map(|b| format!(" (expected {:.4} – {:.4})", b.lo, b.hi))
                        .unwrap_or_default()
                ))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The monitors of a service, as badges (service page).
pub fn monitor_badges(monitors: &[MonitorStatus]) -> String {
    if monitors.is_empty() {
        return String::new();
    }
    let mut out = String::from("<p class=\"monitor-badges\" id=\"service-monitors\">Monitors: ");
    for m in monitors {
        let _ = write!(
            out,
            "<a class=\"state {cls}\" data-monitor=\"{name}\" data-state=\"{st}\" href=\"/monitors#m-{enc}\">{name}: {st}{muted}</a> ",
            cls = state_class(m.state),
            name = escape(&m.name),
            st = m.state.as_str(),
            enc = encode_segment(&m.name),
            muted = if m.muted { " (muted)" } else { "" },
        );
    }
    out.push_str("</p>");
    out
}

fn state_class(s: State) -> &'static str {
    match s {
        State::Ok => "ok",
        State::Warn => "warn",
        State::Alert => "alert",
        State::NoData => "nodata",
    }
}

/// `Search traces of …` link.
pub fn search_link(label: &str, query: &str) -> String {
    format!(
        "<p><a class=\"search-link\" href=\"/search?{}\">{}</a></p>",
        escape(query),
        escape(label)
    )
}

fn input(name: &str, label: &str, value: Option<&str>, placeholder: &str) -> String {
    format!(
        "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
        escape(value.unwrap_or("")),
        escape(placeholder)
    )
}

fn ns_text(ns: Option<i64>) -> Option<String> {
    ns.map(|ns| {
        if ns % 1_000_000 == 0 {
            format!("{}ms", ns / 1_000_000)
        } else if ns % 1_000 == 0 {
            format!("{}us", ns / 1_000)
        } else {
            format!("{ns}ns")
        }
    })
}

/// The search page: the form, then the results (`None`: a bad query, `error` says why).
pub fn search(f: &Frame<'_>, q: &SearchQuery, found: Option<&SearchResult>, error: Option<&str>) -> String {
    let mut body = String::from("<form class=\"search\" id=\"search-form\" method=\"get\" action=\"/search\">");
    body.push_str(&input("service", "Service", q.service.as_deref(), "any"));
    body.push_str(&input("resource", "Resource", q.resource.as_deref(), "any"));
    body.push_str(&input("operation", "Operation", q.operation.as_deref(), "any"));
    for i in 0..2 {
        let tag = q.tags.get(i).map(|(k, v)| format!("{k}:{v}"));
        body.push_str(&input("tag", "Tag", tag.as_deref(), "key:value"));
    }
    body.push_str(&input(
        "min_duration",
        "Min duration",
        ns_text(q.min_duration_ns).as_deref(),
        "e.g. 250ms",
    ));
    body.push_str(&input(
        "max_duration",
        "Max duration",
        ns_text(q.max_duration_ns).as_deref(),
        "e.g. 2s",
    ));
    let _ = write!(
        body,
        "<label>Errors<select name=\"error\"><option value=\"\">any</option><option value=\"true\"{}>with errors</option>\
         <option value=\"false\"{}>without errors</option></select></label>",
        if q.error == Some(true) { " selected" } else { "" },
        if q.error == Some(false) { " selected" } else { "" },
    );
    let trace_id = q.trace_id.map(|t| t.to_string());
    body.push_str(&input("trace_id", "Trace id", trace_id.as_deref(), "decimal or hex"));
    body.push_str("<label>Window<select name=\"window\">");
    for w in Window::ALL {
        let _ = write!(
            body,
            "<option value=\"{}\"{}>{}</option>",
            w.as_str(),
            if w == q.window { " selected" } else { "" },
            w.label()
        );
    }
    body.push_str("</select></label><button type=\"submit\" id=\"search-submit\">Search</button></form>");
    if let Some(e) = error {
        let _ = write!(body, "<div class=\"error-box\" id=\"search-error\">{}</div>", escape(e));
    }
    let Some(found) = found else {
        return page(f, &body);
    };
    if found.traces.is_empty() {
        let _ = write!(
            body,
            "<p class=\"empty\" id=\"no-results\">No stored trace matches in the {}.</p>",
            q.window.label()
        );
        return page(f, &body);
    }
    body.push_str(
        "<table class=\"sortable\" id=\"results\"><thead><tr><th data-key=\"trace\" data-type=\"text\">Trace</th>\
         <th data-key=\"service\" data-type=\"text\">Root service</th><th data-key=\"resource\" data-type=\"text\">Root resource</th>\
         <th data-key=\"start\">Start (UTC)</th><th data-key=\"duration\">Duration</th><th data-key=\"spans\">Spans</th>\
         <th data-key=\"error\">Errors</th></tr></thead><tbody>",
    );
    for t in &found.traces {
        let _ = write!(
            body,
            "<tr data-trace=\"{id}\" data-service=\"{svc}\" data-resource=\"{res}\" data-start=\"{start}\" \
             data-duration=\"{dur}\" data-spans=\"{spans}\" data-error=\"{e}\"{cls}><td><a href=\"/traces/{id}\">{id}</a></td>\
             <td style=\"text-align:left\">{svc}</td><td style=\"text-align:left\">{res}</td><td>{clock}</td><td>{d}</td>\
             <td>{spans}</td><td>{errors}</td></tr>",
            id = escape(&t.trace_id),
            svc = escape(t.root_service.as_deref().unwrap_or("?")),
            res = escape(t.root_resource.as_deref().unwrap_or("?")),
            start = t.start_ns,
            dur = t.duration_ns,
            spans = t.span_count,
            e = u8::from(t.error),
            cls = if t.error { " class=\"err\"" } else { "" },
            clock = clock(t.start_ns),
            d = duration(Some(t.duration_ns as f64)),
            errors = t.error_count,
        );
    }
    body.push_str("</tbody></table>");
    if let Some(c) = &found.next_cursor {
        let _ = write!(
            body,
            "<p><a id=\"next-page\" href=\"/search?{}&amp;cursor={}\">Next page →</a></p>",
            escape(&q.to_query_string()),
            encode_segment(c)
        );
    }
    page(f, &body)
}

const NODE_W: f64 = 190.0;
const NODE_H: f64 = 66.0;
const COL_W: f64 = 400.0;
const ROW_H: f64 = 100.0;

/// The service map page: an SVG (callers left of callees) and the edges as a table.
pub fn service_map(f: &Frame<'_>, m: &ServiceMap, window: Window) -> String {
    if m.nodes.is_empty() {
        return page(
            f,
            &format!(
                "<div class=\"empty\" id=\"no-data\">No service in the {}. Calls between services appear once a \
                 traced service calls another one (propagated headers) or tags a span with <code>peer.service</code>.</div>",
                window.label()
            ),
        );
    }
    let cols = service_map::layout(m);
    let mut pos = std::collections::BTreeMap::new();
    for (c, names) in cols.iter().enumerate() {
        for (r, name) in names.iter().enumerate() {
            pos.insert(name.as_str(), (20.0 + c as f64 * COL_W, 20.0 + r as f64 * ROW_H));
        }
    }
    let rows = cols.iter().map(Vec::len).max().unwrap_or(1);
    let (w, h) = (
        40.0 + (cols.len().max(1) - 1) as f64 * COL_W + NODE_W,
        40.0 + (rows.max(1) - 1) as f64 * ROW_H + NODE_H,
    );
    let wq = window.as_str();
    let mut svg = format!(
        "<svg class=\"map\" id=\"service-map\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\">\
         <title>service map</title><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" \
         markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#667\"/></marker></defs>"
    );
    for e in &m.edges {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str())) else {
            continue;
        };
        let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2.0);
        let (x2, y2) = (tx, ty + NODE_H / 2.0);
        let d = if x2 > x1 {
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 + 50.0,
                x2 - 50.0
            )
        } else {
            // A call back to a column on the left (a cycle): loop under the boxes.
            format!(
                "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                fx + NODE_W / 2.0,
                fy + NODE_H,
                fx + NODE_W / 2.0,
                fy + NODE_H + 60.0,
                tx + NODE_W / 2.0,
                ty + NODE_H + 60.0,
                tx + NODE_W / 2.0,
                ty + NODE_H
            )
        };
        let href = if e.peer {
            format!(
                "/search?window={wq}&amp;service={}&amp;tag={}",
                encode_segment(&e.from),
                encode_segment(&format!("peer.service:{}", e.to))
            )
        } else {
            format!("/search?window={wq}&amp;service={}", encode_segment(&e.to))
        };
        // Above the arrow's end, where the curve is flat: labels of edges leaving one node
        // for different rows do not overlap.
        let (lx, ly, anchor) = if x2 > x1 {
            (x2 - 14.0, y2 - 8.0, "end")
        } else {
            ((fx + tx) / 2.0 + NODE_W / 2.0, fy.max(ty) + NODE_H + 55.0, "middle")
        };
        let _ = write!(
            svg,
            "<a href=\"{href}\"><g class=\"edge{err}\" data-from=\"{from}\" data-to=\"{to}\" data-hits=\"{hits}\" \
             data-errors=\"{errors}\"><path d=\"{d}\" marker-end=\"url(#arrow)\"/><text x=\"{lx:.1}\" y=\"{ly:.1}\" \
             text-anchor=\"{anchor}\">{hits} calls · p99 {p99}{errtext}</text><title>{from} → {to}</title></g></a>",
            err = if e.errors > 0 { " err" } else { "" },
            from = escape(&e.from),
            to = escape(&e.to),
            hits = e.hits,
            errors = e.errors,
            p99 = duration(e.p99_ns),
            errtext = if e.errors > 0 {
                format!(" · {} err", e.errors)
            } else {
                String::new()
            },
        );
    }
    for n in &m.nodes {
        let Some(&(x, y)) = pos.get(n.service.as_str()) else {
            continue;
        };
        let erate = if n.hits > 0 {
            n.errors as f64 / n.hits as f64
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<a href=\"/search?window={wq}&amp;service={enc}\"><g class=\"node{untraced}\" data-node=\"{svc}\" data-hits=\"{hits}\" \
             data-errors=\"{errors}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\" \
             style=\"stroke:{colour}\"/><text x=\"{tx:.1}\" y=\"{ty1:.1}\" class=\"name\">{svc}</text>\
             <text x=\"{tx:.1}\" y=\"{ty2:.1}\">{hits} hits · {erate} err</text><text x=\"{tx:.1}\" y=\"{ty3:.1}\">p99 {p99}{kind}</text></g></a>",
            untraced = if n.untraced { " untraced" } else { "" },
            enc = encode_segment(&n.service),
            svc = escape(&n.service),
            hits = n.hits,
            errors = n.errors,
            colour = service_colour(&n.service),
            tx = x + 10.0,
            ty1 = y + 20.0,
            ty2 = y + 38.0,
            ty3 = y + 55.0,
            erate = percent(erate),
            p99 = duration(n.p99_ns),
            kind = if n.untraced { " · untraced" } else { "" },
        );
    }
    svg.push_str("</svg>");
    let mut body = format!(
        "<p>Arrows go from caller to callee: a span whose parent is in another service, or a span tagged \
         <code>peer.service</code> (untraced callees, dashed). Node figures come from the stats (every request); \
         call counts from the kept traces. Click a node or an arrow to search its traces.</p>\
         <div class=\"mapwrap\">{svg}</div>"
    );
    if m.truncated {
        body.push_str(
            "<p class=\"banner\">Too many spans in this window: the map shows the first two million of each kind.</p>",
        );
    }
    body.push_str(
        "<h2>Calls</h2><table id=\"edges\"><thead><tr><th>From → to</th><th>Calls</th><th>Errors</th><th>p99</th></tr></thead><tbody>",
    );
    for e in &m.edges {
        let _ = write!(
            body,
            "<tr data-from=\"{}\" data-to=\"{}\" data-hits=\"{}\" data-errors=\"{}\"><td>{} → {}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.from),
            escape(&e.to),
            e.hits,
            e.errors,
            escape(&e.from),
            escape(&e.to),
            if e.peer { " (peer.service)" } else { "" },
            e.hits,
            e.errors,
            duration(e.p99_ns)
        );
    }
    body.push_str("</tbody></table>");
    page(f, &body)
}

fn threshold(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if metric.is_latency() => duration(Some(v)),
        Some(v) if metric == Metric::ErrorRate => percent(v),
        Some(v) => format!("{v:.2}"),
    }
}

fn schedule_text(s: &Schedule) -> String {
    match *s {
        Schedule::Once { start_ns, end_ns } => format!(
            "{} → {}",
            start_ns.map_or_else(|| "now".to_owned(), |s| format!("{} UTC", clock(s))),
            end_ns.map_or_else(|| "until removed".to_owned(), |e| format!("{} UTC", clock(e)))
        ),
        Schedule::Daily { start_s, end_s } => format!(
            "daily {:02}:{:02} → {:02}:{:02} UTC",
            start_s / 3600,
            start_s % 3600 / 60,
            end_s / 3600,
            end_s % 3600 / 60
        ),
    }
}

const MUTE_CHOICES: [&str; 4] = ["15m", "1h", "4h", "1d"];

fn mute_form(scope: &str, id: &str) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"/monitors/downtimes\" class=\"inline\" id=\"{id}\"><input type=\"hidden\" name=\"scope\" value=\"{}\">\
         <select name=\"duration\">",
        escape(scope)
    );
    for d in MUTE_CHOICES {
        let _ = write!(out, "<option value=\"{d}\">{d}</option>");
    }
    out.push_str("</select><button type=\"submit\">Mute</button></form>");
    out
}

/// The monitors page.
pub fn monitors(
    f: &Frame<'_>,
    statuses: &[MonitorStatus],
    events: &[Event],
    downtimes: &[Downtime],
    hooks: &WebhookStatus,
) -> String {
    if statuses.is_empty() {
        return page(
            f,
            "<div class=\"empty\" id=\"no-monitors\">No monitor is defined. Add some to <code>datadog.yaml</code> under \
             <code>apm_config.local.monitors</code> (see the trace-agent README, \"Monitors\"), e.g.<pre>apm_config:\n  local:\n    \
             webhooks:\n      ops: http://127.0.0.1:9000/hook\n    monitors:\n      - name: checkout errors\n        service: shop\n        \
             metric: error_rate\n        window: 5m\n        warning: 5%\n        critical: 10%\n        \
             message: 'Checkout errors at {{value}} @webhook-ops'</pre></div>",
        );
    }
    let mut body = String::from(
        "<table id=\"monitors\"><thead><tr><th>Monitor</th><th>State</th><th>Value</th><th>Warning</th><th>Critical</th>\
         <th>Scope</th><th>Window</th><th>Last change (UTC)</th><th>Mute</th></tr></thead><tbody>",
    );
    for m in statuses {
        let s = &m.spec;
        let scope = format!(
            "{}{}{}",
            s.service,
            s.operation.as_ref().map(|o| format!(" · {o}")).unwrap_or_default(),
            s.resource.as_ref().map(|r| format!(" · {r}")).unwrap_or_default()
        );
        let cmp = if s.comparator == Comparator::Below { "< " } else { "> " };
        let _ = write!(
            body,
            "<tr id=\"m-{enc}\" data-monitor=\"{name}\" data-state=\"{st}\" data-value=\"{val}\" data-muted=\"{muted}\">\
             <td><b>{name}</b><br><small>{metric}</small><br><small class=\"msg\">{msg}</small></td>\
             <td><span class=\"state {cls}\">{st}</span>{mutedtext}</td><td>{value}</td><td>{cmp}{warn}</td><td>{cmp}{crit}</td>\
             <td style=\"text-align:left\"><a href=\"/services/{senc}\">{scope}</a></td><td>{win} s</td><td>{changed}</td><td>{form}</td></tr>",
            enc = encode_segment(&m.name),
            name = escape(&m.name),
            st = m.state.as_str(),
            val = m.value.map_or_else(|| "NaN".to_owned(), |v| v.to_string()),
            muted = u8::from(m.muted),
            metric = s.metric.as_str(),
            msg = escape(&s.message),
            cls = state_class(m.state),
            mutedtext = if m.muted { " <small>(muted)</small>" } else { "" },
            value = threshold(s.metric, m.value),
            warn = threshold(s.metric, s.warning),
            crit = threshold(s.metric, Some(s.critical)),
            senc = encode_segment(&s.service),
            scope = escape(&scope),
            win = s.window.as_secs(),
            changed = clock(m.last_change_ns),
            form = mute_form(
                &format!("monitor:{}", m.name),
                &format!("mute-{}", encode_segment(&m.name))
            ),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p id=\"webhooks\" data-delivered=\"{}\" data-failed=\"{}\">Webhooks: {} delivered, {} failed, {} dropped, {} retries{}</p>",
        hooks.delivered,
        hooks.failed,
        hooks.delivered,
        hooks.failed,
        hooks.dropped,
        hooks.retries,
        hooks
            .last_error
            .as_ref()
            .map(|e| format!(" · last failure: {}", escape(e)))
            .unwrap_or_default()
    );
    body.push_str("<h2>Downtimes</h2>");
    if downtimes.is_empty() {
        body.push_str("<p id=\"no-downtimes\">None. Mute a monitor above, or a whole service:</p>");
    } else {
        body.push_str(
            "<table id=\"downtimes\"><thead><tr><th>Scope</th><th>When</th><th>Comment</th><th></th></tr></thead><tbody>",
        );
        for d in downtimes {
            let _ = write!(
                body,
                "<tr data-downtime=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                d.id,
                escape(&d.spec.scope.as_string()),
                escape(&schedule_text(&d.spec.schedule)),
                escape(&d.spec.comment),
                if d.from_config {
                    "datadog.yaml".to_owned()
                } else {
                    format!(
                        "<form method=\"post\" action=\"/monitors/downtimes/{}/delete\" class=\"inline\"><button type=\"submit\">Remove</button></form>",
                        d.id
                    )
                }
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<form method=\"post\" action=\"/monitors/downtimes\" id=\"new-downtime\"><label>Scope <input name=\"scope\" \
         placeholder=\"service:NAME, monitor:NAME or *\"></label> <label>for <select name=\"duration\">",
    );
    for d in MUTE_CHOICES {
        let _ = write!(body, "<option value=\"{d}\">{d}</option>");
    }
    body.push_str("</select></label> <input name=\"comment\" placeholder=\"comment\"> <button type=\"submit\">Add downtime</button></form>");
    let _ = write!(body, "<h2>Events ({} kept in memory)</h2>", events.len());
    if events.is_empty() {
        body.push_str("<p>No change of state since the agent started.</p>");
    } else {
        body.push_str(
            "<table id=\"events\"><thead><tr><th>Monitor</th><th>Change</th><th>Value</th><th>At (UTC)</th><th>Notified</th></tr></thead><tbody>",
        );
        let metric_of = |name: &str| {
            statuses
                .iter()
                .find(|m| m.name == name)
                .map_or(Metric::Hits, |m| m.spec.metric)
        };
        for e in events.iter().take(200) {
            let _ = write!(
                body,
                "<tr data-event-monitor=\"{name}\" data-from=\"{from}\" data-to=\"{to}\"><td>{name}</td><td>{from} → <span class=\"state {cls}\">{to}</span></td>\
                 <td>{value}</td><td>{at}</td><td style=\"text-align:left\">{notified}</td></tr>",
                name = escape(&e.monitor),
                from = e.from.as_str(),
                to = e.to.as_str(),
                cls = state_class(e.to),
                value = threshold(metric_of(&e.monitor), e.value),
                at = clock(e.at_ns),
                notified = if e.muted {
                    "muted by a downtime".to_owned()
                } else {
                    escape(&e.notified.join(", "))
                },
            );
        }
        body.push_str("</tbody></table>");
    }
    page(f, &body)
}

/// The version comparison of a resource page.
pub fn versions_section(v: &VersionComparison, self_path: &str) -> String {
    let mut out = String::from("<h2>Versions</h2>");
    if v.versions.is_empty() {
        out.push_str("<p>No stats of this resource in this window.</p>");
        return out;
    }
    out.push_str(
        "<table id=\"versions\"><thead><tr><th>Version</th><th>Hits</th><th>Errors</th><th>Error rate</th><th>p50</th>\
         <th>p99</th></tr></thead><tbody>",
    );
    for r in &v.versions {
        let _ = write!(
            out,
            "<tr data-version=\"{ver}\" data-hits=\"{}\" data-errors=\"{}\"><td>{ver}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.hits,
            r.errors,
            r.hits,
            r.errors,
            percent(r.error_rate),
            duration(r.p50_ns),
            duration(r.p99_ns),
            ver = if r.version.is_empty() {
                "(none)".to_owned()
            } else {
                escape(&r.version)
            },
        );
    }
    out.push_str("</tbody></table>");
    if v.versions.len() < 2 {
        out.push_str("<p>Only one version in this window: deploy another (<code>DD_VERSION</code>) to compare.</p>");
        return out;
    }
    let select = |name: &str, current: Option<&str>| {
        let mut s = format!("<select name=\"{name}\">");
        for r in &v.versions {
            let _ = write!(
                s,
                "<option value=\"{val}\"{sel}>{val}</option>",
                val = escape(&r.version),
                sel = if current == Some(r.version.as_str()) {
                    " selected"
                } else {
                    ""
                }
            );
        }
        s.push_str("</select>");
        s
    };
    let (path, query) = self_path.split_once('?').unwrap_or((self_path, ""));
    let mut hidden = String::new();
    for (k, val) in super::html::query_params(Some(query)) {
        if k != "a" && k != "b" {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(&k),
                escape(&val)
            );
        }
    }
    let _ = write!(
        out,
        "<form method=\"get\" action=\"{}\" id=\"compare\">{hidden}Compare {} with {} <button type=\"submit\">Compare</button></form>",
        escape(path),
        select("a", v.a.as_deref()),
        select("b", v.b.as_deref())
    );
    if v.changes.is_empty() {
        return out;
    }
    let _ = write!(
        out,
        "<table id=\"version-changes\"><thead><tr><th>Metric</th><th>{}</th><th>{}</th><th>Change</th></tr></thead><tbody>",
        escape(v.a.as_deref().unwrap_or("")),
        escape(v.b.as_deref().unwrap_or(""))
    );
    for c in &v.changes {
        let fmt = |x: Option<f64>| {
            if c.metric == "error_rate" {
                x.map_or_else(|| "–".to_owned(), percent)
            } else {
                duration(x)
            }
        };
        let _ = write!(
            out,
            "<tr data-metric=\"{m}\" data-flagged=\"{fl}\"{cls}><td>{m}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            fmt(c.a),
            fmt(c.b),
            c.relative
                .map_or_else(|| "new".to_owned(), |r| format!("{:+.0} %", r * 100.0)),
            if c.flagged { " ⚠" } else { "" },
            m = c.metric,
            fl = u8::from(c.flagged),
            cls = if c.flagged { " class=\"flag\"" } else { "" },
        );
    }
    let _ = write!(
        out,
        "</tbody></table><p><small>Flagged: latency beyond ±{:.0} %, error rate beyond ±{:.0} % and one point.</small></p>",
        v.threshold * 100.0,
        v.threshold * 100.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::query::Point;

    #[test]
    fn band_chart_marks_the_anomaly() {
        let mut series: Vec<Point> = (0..12)
            .map(|i| Point {
                start_ns: i * 10_000_000_000,
                hits: 10,
                errors: 0,
                requests_per_second: 1.0,
                p95_ns: Some(10e6),
            })
            .collect();
        series[10].p95_ns = Some(80e6);
        series[11].errors = 8;
        let s = ServiceSummary {
            service: "svc".to_owned(),
            operation: "op".to_owned(),
            figures: Default::default(),
            series,
        };
        let a = ServiceAnomalies::of(&s);
        let svg = band_chart("p95", &a.p95, 300, 80, "p95");
        assert_eq!(svg.matches("data-anomaly=").count(), 1, "{svg}");
        assert!(svg.contains("data-anomaly=\"10\""));
        assert_eq!(svg.matches("class=\"band\"").count(), 7, "points 5..12 have a band");
        let svg = band_chart("erate", &a.error_rate, 300, 80, "errors");
        assert!(svg.contains("data-anomaly=\"11\""), "{svg}");
    }
}
