//! The pages beyond the overview: trace search, the service map, monitors; and the parts
//! added to the service page (anomaly bands, monitor states) and the resource page
//! (version comparison). Server-rendered like [`super::pages`]; every stored string escaped.

use std::fmt::Write;

use serde::Serialize;

use super::html::{TraceRow, clock, duration, encode_segment, escape, percent, service_colour, trace_row};
use super::pages::{Frame, page};
use crate::local::anomaly::{self, Band, BandParams};
use crate::local::monitor::config::{Comparator, Metric, Schedule};
use crate::local::monitor::{Downtime, Event, MonitorStatus, State, WebhookStatus};
use crate::local::query::{ServiceSummary, Window};
use crate::local::search::{SearchQuery, SearchResult};
use crate::local::service_map::{self, ServiceMap};
use crate::local::versions::VersionComparison;

mod map_page;
mod monitors_page;
pub use map_page::service_map;
pub use monitors_page::monitors;

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
        let svc = escape(t.root_service.as_deref().unwrap_or("?"));
        let res = escape(t.root_resource.as_deref().unwrap_or("?"));
        let row = TraceRow::new(&t.trace_id, t.start_ns, t.duration_ns, t.span_count, t.error);
        trace_row(
            &mut body,
            &row,
            &format!(" data-service=\"{svc}\" data-resource=\"{res}\""),
            &format!("<td style=\"text-align:left\">{svc}</td><td style=\"text-align:left\">{res}</td>"),
            &format!("<td>{}</td>", t.error_count),
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
