//! Server-rendered pages: inline CSS, a few lines of vanilla JS (table sorting, auto-refresh),
//! SVG charts drawn here. Every stored string goes through [`escape`].

use std::fmt::Write;

use super::html::{TraceRow, chart, clock, duration, encode_segment, escape, percent, rate, service_colour, trace_row};
use super::product::{self, ServiceAnomalies};
use crate::local::monitor::MonitorStatus;
use crate::local::query::{Figures, ResourceDetail, ServiceDetail, ServiceSummary, TraceDetail, Window};
use crate::local::store::{StoreMode, StoreStatus};
use crate::local::versions::VersionComparison;

mod trace_page;
#[cfg(test)]
use trace_page::links_and_events;
pub use trace_page::trace;

const CSS: &str = "
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#2b2f3a;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;font-weight:600}
header .crumbs a,header .crumbs span{font-weight:400;color:#cfd5e2}
header .right{margin-left:auto;display:flex;gap:12px;align-items:center}
header .windows a{padding:2px 8px;border-radius:4px;color:#cfd5e2}
header .windows a.on{background:#632ca6;color:#fff}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 12px;word-break:break-all}
h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
th,td{padding:6px 10px;border-bottom:1px solid #e6e8ee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;word-break:break-all}
th{background:#eef0f4;font-weight:600;cursor:default}
table.sortable th[data-key]{cursor:pointer}
th.asc::after{content:' \\25B2'}th.desc::after{content:' \\25BC'}
tr.err td:first-child{border-left:3px solid #e15759}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;padding:10px 14px;box-shadow:0 1px 2px #0002;min-width:110px}
.card b{display:block;font-size:18px}
.card span{color:#667}
.chart .bg{fill:#fff}.chart .bar{fill:#8fb0dd}.chart .line{fill:none;stroke:#e15759;stroke-width:1.5}.chart .dot{fill:#e15759}
.charts{display:flex;gap:16px;flex-wrap:wrap}.charts figure{margin:0}.charts figcaption{color:#667;font-size:12px}
.empty{background:#fff;padding:20px;box-shadow:0 1px 2px #0002}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;margin-bottom:12px}
footer{color:#778;font-size:12px;padding:12px 20px}
.wf{background:#fff;box-shadow:0 1px 2px #0002}
.wf details{border-bottom:1px solid #eef0f4}
.wf summary{display:flex;align-items:center;cursor:pointer;list-style:none;padding:3px 6px}
.wf summary::-webkit-details-marker{display:none}
.wf .label{box-sizing:border-box;flex:0 0 38%;min-width:260px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.wf .track{flex:1;position:relative;height:16px;background:#f3f4f7}
.wf .bar{position:absolute;top:2px;height:12px;min-width:2px;border-radius:2px}
.wf .dur{flex:0 0 90px;text-align:right;color:#445;font-variant-numeric:tabular-nums}
.wf .swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:middle}
.wf .errmark{color:#e15759;font-weight:700;margin-left:4px}
.wf .tags{padding:6px 12px 12px 24px;background:#fafbfc}
.wf .tags table{width:auto;min-width:50%}
.wf .tags td{text-align:left;white-space:pre-wrap;word-break:break-all}
.error-box{background:#fdecee;border:1px solid #f3b6bd;padding:8px 12px;margin:6px 0}
.error-box pre{white-space:pre-wrap;margin:6px 0 0;font-size:12px}
.legend span{margin-right:14px}
.dist .bar{fill:#8fb0dd}.dist .mark{stroke:#e15759;stroke-width:1.5}.dist text{font-size:11px;fill:#445}
a{color:#3b5bdb}
header nav.main a{font-weight:400;color:#cfd5e2;margin-right:10px}
.chart .band{fill:#f2c14e55}.chart .anomaly{fill:#e15759;stroke:#fff;stroke-width:1}
form.search{display:flex;flex-wrap:wrap;gap:8px 14px;background:#fff;padding:10px;box-shadow:0 1px 2px #0002;margin-bottom:12px;align-items:end}
form.search label{display:flex;flex-direction:column;font-size:12px;color:#556}
form.search input,form.search select{font:inherit;padding:3px 6px;min-width:120px}
form.inline{display:inline}
.state{padding:1px 8px;border-radius:9px;font-weight:600;color:#fff;text-decoration:none}
.state.ok{background:#59a14f}.state.warn{background:#edc948;color:#222}.state.alert{background:#e15759}.state.nodata{background:#8a8f9c}
.monitor-badges .state{margin-right:6px}
.mapwrap{background:#fff;box-shadow:0 1px 2px #0002;overflow:auto}
.map .node rect{fill:#fff;stroke-width:3}.map .node.untraced rect{stroke-dasharray:6 4}
.map .node text{font-size:12px;fill:#445}.map .node text.name{font-size:14px;font-weight:700;fill:#1d2330}
.map .edge path{fill:none;stroke:#667;stroke-width:2}.map .edge.err path{stroke:#e15759}
.map .edge text{font-size:11px;fill:#445;paint-order:stroke;stroke:#fff;stroke-width:3}
tr.flag td{background:#fdecee}
";

const JS: &str = "
document.querySelectorAll('table.sortable th[data-key]').forEach(function(th){
  th.addEventListener('click',function(){
    var table=th.closest('table'),body=table.tBodies[0],key=th.dataset.key,text=th.dataset.type==='text';
    var asc=th.classList.contains('desc')?true:th.classList.contains('asc')?false:text;
    table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.dataset[key],y=b.dataset[key];
      if(text){return asc?x.localeCompare(y):y.localeCompare(x);}
      x=parseFloat(x);y=parseFloat(y);if(isNaN(x))x=-Infinity;if(isNaN(y))y=-Infinity;
      return asc?x-y:y-x;});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
(function(){
  var cb=document.getElementById('autorefresh');if(!cb)return;
  var key='trace-agent-autorefresh',timer;
  try{cb.checked=localStorage.getItem(key)!=='off';}catch(e){}
  function arm(){clearTimeout(timer);if(cb.checked)timer=setTimeout(function(){location.reload();},10000);}
  cb.addEventListener('change',function(){try{localStorage.setItem(key,cb.checked?'on':'off');}catch(e){}arm();});
  arm();
})();
";

/// What every page shows around its content.
#[derive(Debug)]
pub struct Frame<'a> {
    /// `<title>` and `<h1>`.
    pub title: &'a str,
    /// Breadcrumbs after "Services": (label, href).
    pub crumbs: Vec<(String, String)>,
    /// The page's own path (for the window links), with query parameters to keep.
    pub self_path: String,
    /// Time window (`None`: the page has none, e.g. a trace).
    pub window: Option<Window>,
    /// Store state for the footer.
    pub status: &'a StoreStatus,
    /// When the page is generated, ns since the epoch.
    pub now_ns: i64,
}

fn window_links(f: &Frame<'_>) -> String {
    let Some(current) = f.window else {
        return String::new();
    };
    let sep = if f.self_path.contains('?') { '&' } else { '?' };
    let mut out = String::from("<nav class=\"windows\">");
    for w in Window::ALL {
        let _ = write!(
            out,
            "<a href=\"{}{sep}window={}\"{}>{}</a>",
            escape(&f.self_path),
            w.as_str(),
            if w == current { " class=\"on\"" } else { "" },
            w.as_str()
        );
    }
    out.push_str("</nav><label><input type=\"checkbox\" id=\"autorefresh\" checked> auto-refresh 10 s</label>");
    out
}

/// Wraps `body` in the page layout.
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut crumbs = String::new();
    for (label, href) in &f.crumbs {
        let _ = write!(crumbs, " / <a href=\"{}\">{}</a>", escape(href), escape(label));
    }
    let banner = match &f.status.mode {
        StoreMode::Memory { reason, .. } => format!(
            "<div class=\"banner\" id=\"store-fallback\"><b>Data is kept in memory only</b> (lost when the \
             agent stops): {}</div>",
            escape(reason)
        ),
        StoreMode::File { .. } => String::new(),
    };
    let s = f.status;
    let dropped = s.dropped_trace_payloads_queue_full
        + s.dropped_stats_payloads_queue_full
        + s.dropped_trace_payloads_write_error
        + s.dropped_stats_payloads_write_error;
    let window_q = f.window.map(|w| format!("?window={}", w.as_str())).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · trace-agent</title><style>{CSS}</style></head><body>\
         <header><a href=\"/{window_q}\">trace-agent · local</a><nav class=\"main\"><a href=\"/search{window_q}\">Search</a>\
         <a href=\"/map{window_q}\">Map</a><a href=\"/monitors\">Monitors</a><a href=\"/ledger\">Ledger</a></nav><span class=\"crumbs\"><a href=\"/{window_q}\">Services</a>{crumbs}</span>\
         <span class=\"right\">{windows}</span></header><main>{banner}<h1>{title}</h1>{body}</main>\
         <footer>Store: {mode} · {size:.1} MiB used at the last retention run (cap {max:.0} MiB) · retention {ret} h · {spans} spans and {groups} stats \
         groups written since start · {dropped} payloads dropped · page generated {now} UTC · \
         <a href=\"/api/v1/status\">status JSON</a></footer><script>{JS}</script></body></html>",
        title = escape(f.title),
        windows = window_links(f),
        mode = escape(&s.mode.to_string()),
        size = s.size_bytes as f64 / 1_048_576.0,
        max = s.max_size_bytes as f64 / 1_048_576.0,
        ret = s.retention_seconds / 3600,
        spans = s.spans_written,
        groups = s.stats_groups_written,
        now = clock(f.now_ns),
    )
}

fn nan_or(v: Option<f64>) -> String {
    v.map_or_else(|| "NaN".to_owned(), |v| format!("{v:.0}"))
}

fn figure_cells(fig: &Figures) -> String {
    format!(
        "<td class=\"hits\">{}</td><td class=\"errors\">{}</td><td class=\"erate\">{}</td>\
         <td class=\"p50\">{}</td><td class=\"p95\">{}</td><td class=\"p99\">{}</td>",
        fig.hits,
        fig.errors,
        percent(fig.error_rate),
        duration(fig.latency.p50),
        duration(fig.latency.p95),
        duration(fig.latency.p99),
    )
}

fn figure_data(fig: &Figures) -> String {
    format!(
        "data-hits=\"{}\" data-errors=\"{}\" data-erate=\"{}\" data-rps=\"{}\" data-p50=\"{}\" data-p95=\"{}\" \
         data-p99=\"{}\" data-total=\"{}\"",
        fig.hits,
        fig.errors,
        fig.error_rate,
        fig.requests_per_second,
        nan_or(fig.latency.p50),
        nan_or(fig.latency.p95),
        nan_or(fig.latency.p99),
        fig.total_duration_ns
    )
}

fn sparkline(s: &ServiceSummary, width: u32, height: u32) -> String {
    let rps: Vec<f64> = s.series.iter().map(|p| p.requests_per_second).collect();
    let p95: Vec<Option<f64>> = s.series.iter().map(|p| p.p95_ns).collect();
    chart(
        &rps,
        &p95,
        width,
        height,
        &format!("{}: requests/s (bars) and p95 latency (line)", s.service),
    )
}

/// The services overview.
pub fn services(f: &Frame<'_>, services: &[ServiceSummary], window: Window) -> String {
    if services.is_empty() {
        return page(
            f,
            &format!(
                "<div class=\"empty\" id=\"no-data\">No traces in the {}. Point a Datadog tracer at this agent \
                 (e.g. <code>DD_TRACE_AGENT_URL=http://127.0.0.1:8126</code>) and send some requests; \
                 services appear here once their first 10-second stats bucket is flushed.</div>",
                window.label()
            ),
        );
    }
    let mut rows = String::new();
    for s in services {
        let fig = &s.figures;
        let _ = write!(
            rows,
            "<tr data-service=\"{svc}\" {data}{err}><td><a href=\"/services/{enc}?window={w}\">{svc}</a>\
             <br><small>{op}</small></td><td class=\"rps\">{rps}</td>{cells}<td>{chart}</td></tr>",
            svc = escape(&s.service),
            data = figure_data(fig),
            err = if fig.errors > 0 { " class=\"err\"" } else { "" },
            enc = encode_segment(&s.service),
            w = window.as_str(),
            op = escape(&s.operation),
            rps = rate(fig.requests_per_second),
            cells = figure_cells(fig),
            chart = sparkline(s, 180, 36),
        );
    }
    page(
        f,
        &format!(
            "<table class=\"sortable\" id=\"services\"><thead><tr><th data-key=\"service\" data-type=\"text\">Service \
             (operation)</th><th data-key=\"rps\">Requests/s</th><th data-key=\"hits\">Hits</th>\
             <th data-key=\"errors\">Errors</th><th data-key=\"erate\">Error rate</th><th data-key=\"p50\">p50</th>\
             <th data-key=\"p95\">p95</th><th data-key=\"p99\">p99</th><th>Requests/s · p95 ({})</th></tr></thead>\
             <tbody>{rows}</tbody></table>",
            window.label()
        ),
    )
}

/// One service: cards, monitors, charts (latency and error rate with anomaly bands),
/// operation picker, resources table.
pub fn service(f: &Frame<'_>, d: &ServiceDetail, window: Window, monitors: &[MonitorStatus]) -> String {
    let s = &d.summary;
    let fig = &s.figures;
    let enc = encode_segment(&s.service);
    let mut body = format!(
        "<div class=\"cards\" id=\"summary\" {data}><div class=\"card\"><b>{hits}</b><span>requests</span></div>\
         <div class=\"card\"><b>{rps}</b><span>throughput</span></div>\
         <div class=\"card\"><b>{erate}</b><span>errors ({errors})</span></div>\
         <div class=\"card\"><b>{p50}</b><span>p50</span></div><div class=\"card\"><b>{p95}</b><span>p95</span></div>\
         <div class=\"card\"><b>{p99}</b><span>p99</span></div></div>",
        data = figure_data(fig),
        hits = fig.hits,
        rps = rate(fig.requests_per_second),
        erate = percent(fig.error_rate),
        errors = fig.errors,
        p50 = duration(fig.latency.p50),
        p95 = duration(fig.latency.p95),
        p99 = duration(fig.latency.p99),
    );
    body.push_str(&product::monitor_badges(monitors));
    body.push_str(&product::search_link(
        &format!("Search traces of {}", s.service),
        &format!("window={}&service={enc}", window.as_str()),
    ));
    let rps: Vec<f64> = s.series.iter().map(|p| p.requests_per_second).collect();
    let max_rps = rps.iter().copied().fold(0.0, f64::max);
    let max_p95 = s.series.iter().filter_map(|p| p.p95_ns).fold(0.0, f64::max);
    let first = s.series.first().map_or(0, |p| p.start_ns);
    let bands = ServiceAnomalies::of(s);
    let count = |pts: &[product::BandPoint]| pts.iter().filter(|p| p.band.is_some_and(|b| b.anomaly)).count();
    let _ = write!(
        body,
        "<div class=\"charts\"><figure>{}<figcaption>requests/s per slot (max {}), {} → now</figcaption></figure>\
         <figure>{}<figcaption>p95 latency per slot (max {}); band: expected range, {} anomalous</figcaption></figure>\
         <figure>{}<figcaption>error rate per slot; band: expected range, {} anomalous</figcaption></figure></div>",
        chart(&rps, &[], 420, 100, "requests per second"),
        rate(max_rps),
        clock(first),
        product::band_chart("chart-p95", &bands.p95, 420, 100, "p95 latency with its anomaly band"),
        duration(Some(max_p95)),
        count(&bands.p95),
        product::band_chart(
            "chart-error-rate",
            &bands.error_rate,
            420,
            100,
            "error rate with its anomaly band"
        ),
        count(&bands.error_rate),
    );
    if d.operations.len() > 1 {
        body.push_str("<p>Operation: ");
        for op in &d.operations {
            if op.name == s.operation {
                let _ = write!(body, "<b>{}</b> ", escape(&op.name));
            } else {
                let _ = write!(
                    body,
                    "<a href=\"/services/{enc}?window={}&amp;operation={}\">{}</a> ",
                    window.as_str(),
                    encode_segment(&op.name),
                    escape(&op.name)
                );
            }
        }
        body.push_str("</p>");
    }
    let _ = write!(
        body,
        "<h2>Resources of {}</h2><table class=\"sortable\" id=\"resources\"><thead><tr>\
         <th data-key=\"resource\" data-type=\"text\">Resource</th><th data-key=\"hits\">Hits</th>\
         <th data-key=\"errors\">Errors</th><th data-key=\"erate\">Error rate</th><th data-key=\"p50\">p50</th>\
         <th data-key=\"p95\">p95</th><th data-key=\"p99\">p99</th><th data-key=\"total\" class=\"desc\">Total time</th>\
         </tr></thead><tbody>",
        escape(&s.operation)
    );
    for r in &d.resources {
        let _ = write!(
            body,
            "<tr data-resource=\"{res}\" {data}{err}><td><a href=\"/services/{enc}/resources/{renc}?window={w}&amp;operation={op}\">{res}</a></td>\
             {cells}<td class=\"total\">{total}</td></tr>",
            res = escape(&r.resource),
            data = figure_data(&r.figures),
            err = if r.figures.errors > 0 { " class=\"err\"" } else { "" },
            renc = encode_segment(&r.resource),
            w = window.as_str(),
            op = encode_segment(&s.operation),
            cells = figure_cells(&r.figures),
            total = duration(Some(r.figures.total_duration_ns as f64)),
        );
    }
    body.push_str("</tbody></table>");
    page(f, &body)
}

fn distribution_svg(d: &ResourceDetail) -> String {
    let (w, h) = (640.0_f64, 140.0_f64);
    let n = d.distribution.len().max(1) as f64;
    let max = d.distribution.iter().map(|b| b.count).fold(0.0, f64::max);
    let mut svg = format!(
        "<svg class=\"chart dist\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\">\
         <title>latency distribution</title><rect width=\"{w}\" height=\"{h}\" class=\"bg\"/>",
        h + 18.0,
        h + 18.0
    );
    let bw = w / n;
    for (i, b) in d.distribution.iter().enumerate() {
        if max > 0.0 && b.count > 0.0 {
            let bh = (b.count / max * (h - 14.0)).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{} – {}: ~{:.0}</title></rect>",
                i as f64 * bw + 0.5,
                h - bh,
                (bw - 1.0).max(0.5),
                duration(Some(b.lo_ns)),
                duration(Some(b.hi_ns)),
                b.count
            );
        }
    }
    if let (Some(first), Some(last)) = (d.distribution.first(), d.distribution.last()) {
        let (llo, lhi) = (first.lo_ns.ln(), last.hi_ns.ln());
        let x_of = |v: f64| ((v.max(first.lo_ns).ln() - llo) / (lhi - llo).max(1e-9) * w).clamp(0.0, w);
        let l = &d.figures.latency;
        for (i, (label, v)) in [("p50", l.p50), ("p95", l.p95), ("p99", l.p99)].into_iter().enumerate() {
            if let Some(v) = v {
                let x = x_of(v);
                let _ = write!(
                    svg,
                    "<line class=\"mark\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"{h}\"/>\
                     <text x=\"{:.1}\" y=\"{}\">{label}</text>",
                    (x + 2.0).min(w - 24.0),
                    10 + 12 * i
                );
            }
        }
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.0}\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
            h + 14.0,
            duration(Some(first.lo_ns)),
            w,
            h + 14.0,
            duration(Some(last.hi_ns))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One resource: cards, distribution, versions, traces.
pub fn resource(f: &Frame<'_>, d: &ResourceDetail, versions: Option<&VersionComparison>) -> String {
    let fig = &d.figures;
    let mut body = format!(
        "<div class=\"cards\" id=\"summary\" {data}><div class=\"card\"><b>{hits}</b><span>hits</span></div>\
         <div class=\"card\"><b>{errors}</b><span>errors ({erate})</span></div>\
         <div class=\"card\"><b>{p50}</b><span>p50</span></div><div class=\"card\"><b>{p95}</b><span>p95</span></div>\
         <div class=\"card\"><b>{p99}</b><span>p99</span></div><div class=\"card\"><b>{total}</b><span>total time</span></div></div>\
         {search}<h2>Latency distribution</h2>{dist}{versions}<h2>Traces (errors first, then slowest; {n} shown)</h2>",
        search = product::search_link(
            "Search traces through this resource",
            &format!(
                "window={}&service={}&resource={}",
                f.window.unwrap_or_default().as_str(),
                encode_segment(&d.service),
                encode_segment(&d.resource)
            )
        ),
        versions = versions
            .map(|v| product::versions_section(v, &f.self_path))
            .unwrap_or_default(),
        data = figure_data(fig),
        hits = fig.hits,
        errors = fig.errors,
        erate = percent(fig.error_rate),
        p50 = duration(fig.latency.p50),
        p95 = duration(fig.latency.p95),
        p99 = duration(fig.latency.p99),
        total = duration(Some(fig.total_duration_ns as f64)),
        dist = if d.distribution.is_empty() {
            "<p>No latency sketch stored for this window.</p>".to_owned()
        } else {
            distribution_svg(d)
        },
        n = d.traces.len(),
    );
    if d.traces.is_empty() {
        body.push_str("<p class=\"empty\">No trace of this resource was kept in this window.</p>");
    } else {
        body.push_str(
            "<table class=\"sortable\" id=\"traces\"><thead><tr><th data-key=\"trace\" data-type=\"text\">Trace</th>\
             <th data-key=\"start\">Start (UTC)</th><th data-key=\"duration\">Duration</th><th data-key=\"spans\">Spans</th>\
             <th data-key=\"error\">Error</th></tr></thead><tbody>",
        );
        for t in &d.traces {
            let err = match (&t.error_type, &t.error_message) {
                (Some(ty), Some(m)) => format!("{}: {}", escape(ty), escape(m)),
                (Some(x), None) | (None, Some(x)) => escape(x),
                (None, None) if t.error => "error".to_owned(),
                (None, None) => String::new(),
            };
            let row = TraceRow::new(&t.trace_id, t.start_ns, t.duration_ns, t.span_count, t.error);
            let err = format!("<td style=\"text-align:left;white-space:normal\">{err}</td>");
            trace_row(&mut body, &row, "", "", &err);
        }
        body.push_str("</tbody></table>");
    }
    page(f, &body)
}

/// A 404 page.
pub fn not_found(f: &Frame<'_>, what: &str) -> String {
    page(
        f,
        &format!(
            "<div class=\"empty\" id=\"not-found\">{} — nothing stored for it in this window (or retention \
             deleted it). Try a longer window.</div>",
            escape(what)
        ),
    )
}
#[cfg(test)]
mod links_events_tests {
    use std::collections::BTreeMap;

    #[test]
    fn links_and_events_are_listed() {
        let mut meta = BTreeMap::new();
        meta.insert(
            "_dd.span_links".to_owned(),
            r#"[{"trace_id":"6b13e91800000000000000000000002a","span_id":"0000000000000007","attributes":{"k":"<v>"}}]"#
                .to_owned(),
        );
        meta.insert(
            "events".to_owned(),
            r#"[{"name":"cache.miss","time_unix_nano":1500,"attributes":{"attempt":2}}]"#.to_owned(),
        );
        let html = super::links_and_events(&meta, 1000);
        assert!(
            html.contains("<a href=\"/traces/42\">trace 42</a> span 7 k=&lt;v&gt;"),
            "{html}"
        );
        assert!(
            html.contains("data-event=\"cache.miss\"") && html.contains("attempt=2"),
            "{html}"
        );
        meta.insert("events".to_owned(), "not json".to_owned());
        meta.remove("_dd.span_links");
        assert_eq!(super::links_and_events(&meta, 0), "");
    }
}
