//! The trace page: the waterfall, each span's tags, errors, links and events.

use super::*;

/// One trace: waterfall with tags and errors.
pub fn trace(f: &Frame<'_>, t: &TraceDetail) -> String {
    let total = t.duration_ns.max(1) as f64;
    let mut services: Vec<&str> = t.spans.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let mut body = format!(
        "<div class=\"cards\" id=\"summary\" data-spans=\"{}\" data-errors=\"{}\" data-duration=\"{}\">\
         <div class=\"card\"><b>{}</b><span>duration</span></div><div class=\"card\"><b>{}</b><span>spans</span></div>\
         <div class=\"card\"><b>{}</b><span>errors</span></div><div class=\"card\"><b>{}</b><span>start (UTC)</span></div></div>",
        t.spans.len(),
        t.error_count,
        t.duration_ns,
        duration(Some(t.duration_ns as f64)),
        t.spans.len(),
        t.error_count,
        clock(t.start_ns),
    );
    if let Some(id) = &t.trace_id_128 {
        let _ = write!(body, "<p>128-bit trace id: <code>{}</code></p>", escape(id));
    }
    body.push_str("<p class=\"legend\">");
    for s in &services {
        let _ = write!(
            body,
            "<span><i class=\"swatch\" style=\"display:inline-block;width:10px;height:10px;background:{}\"></i> {}</span>",
            service_colour(s),
            escape(s)
        );
    }
    body.push_str("</p><div class=\"wf\" id=\"waterfall\">");
    for s in &t.spans {
        let left = (s.offset_ns as f64 / total * 100.0).clamp(0.0, 100.0);
        let width = (s.duration_ns as f64 / total * 100.0).clamp(0.0, 100.0 - left);
        let colour = service_colour(&s.service);
        let _ = write!(
            body,
            "<details class=\"span\" id=\"span-{id}\" data-span-id=\"{id}\" data-parent-id=\"{pid}\" data-depth=\"{depth}\" \
             data-service=\"{svc}\" data-name=\"{name}\" data-resource=\"{res}\" data-duration=\"{dur}\" data-error=\"{e}\">\
             <summary><span class=\"label\" style=\"padding-left:{pad}px\" title=\"{res}\"><i class=\"swatch\" style=\"background:{colour}\"></i>\
             <b>{svc}</b> {name} <small>{res}</small>{errmark}</span>\
             <span class=\"track\"><i class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%;background:{colour}\"></i></span>\
             <span class=\"dur\">{d}</span></summary><div class=\"tags\">",
            id = escape(&s.span_id),
            pid = escape(&s.parent_id),
            depth = s.depth,
            svc = escape(&s.service),
            name = escape(&s.name),
            res = escape(&s.resource),
            dur = s.duration_ns,
            e = u8::from(s.error),
            pad = s.depth.min(40) * 16,
            errmark = if s.error {
                "<span class=\"errmark\">!</span>"
            } else {
                ""
            },
            d = duration(Some(s.duration_ns as f64)),
        );
        if s.error {
            let get = |k: &str| s.meta.get(k).map(String::as_str);
            let _ = write!(
                body,
                "<div class=\"error-box\"><b>{}</b>: {}{}</div>",
                escape(get("error.type").unwrap_or("error")),
                escape(get("error.message").or_else(|| get("error.msg")).unwrap_or("")),
                get("error.stack").map_or_else(String::new, |st| format!("<pre>{}</pre>", escape(st)))
            );
        }
        body.push_str(&links_and_events(&s.meta, s.start_ns));
        let _ = write!(
            body,
            "<table><tr><td>span id</td><td>{}</td></tr><tr><td>parent id</td><td>{}</td></tr>\
             <tr><td>type</td><td>{}</td></tr><tr><td>start (+offset)</td><td>{} (+{})</td></tr>",
            escape(&s.span_id),
            escape(&s.parent_id),
            escape(&s.r#type),
            clock(s.start_ns),
            duration(Some(s.offset_ns as f64)),
        );
        for (k, v) in &s.meta {
            if k != "error.stack" {
                let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
            }
        }
        for (k, v) in &s.metrics {
            let _ = write!(body, "<tr><td>{}</td><td>{v}</td></tr>", escape(k));
        }
        body.push_str("</table></div></details>");
    }
    body.push_str("</div>");
    let errors: Vec<_> = t.spans.iter().filter(|s| s.error).collect();
    if !errors.is_empty() {
        let _ = write!(body, "<h2>Errors ({})</h2><div id=\"errors\">", errors.len());
        for s in errors {
            let get = |k: &str| s.meta.get(k).map(String::as_str);
            let _ = write!(
                body,
                "<div class=\"error-box\" data-error-span=\"{id}\"><a href=\"#span-{id}\">{svc} {name}</a> — <b>{ty}</b>: {msg}{stack}</div>",
                id = escape(&s.span_id),
                svc = escape(&s.service),
                name = escape(&s.name),
                ty = escape(get("error.type").unwrap_or("error")),
                msg = escape(get("error.message").or_else(|| get("error.msg")).unwrap_or("")),
                stack = get("error.stack").map_or_else(String::new, |st| format!("<pre>{}</pre>", escape(st))),
            );
        }
        body.push_str("</div>");
    }
    if t.truncated > 0 {
        let _ = write!(body, "<p>{} more spans not shown.</p>", t.truncated);
    }
    page(f, &body)
}

/// A span's links (`_dd.span_links`) and events (`events`), the JSON tags tracers send in
/// v0.5, as lists: each link goes to the linked trace's page (by its low 64 bits). Tags that
/// are not the expected JSON are left to the tag table only.
pub(super) fn links_and_events(meta: &std::collections::BTreeMap<String, String>, span_start_ns: i64) -> String {
    use serde_json::Value;
    let mut out = String::new();
    let parse = |k: &str| {
        meta.get(k)
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| v.as_array().cloned())
    };
    let attrs = |v: &Value| -> String {
        v.get("attributes")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            escape(k),
                            escape(&v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    if let Some(links) = parse("_dd.span_links") {
        let _ = write!(
            out,
            "<div class=\"span-links\" data-links=\"{}\"><b>Links</b><ul>",
            links.len()
        );
        for l in &links {
            let hex = |k: &str, tail: usize| {
                l.get(k)
                    .and_then(Value::as_str)
                    .and_then(|h| h.get(h.len().saturating_sub(tail)..))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
            };
            let (Some(trace), Some(span)) = (hex("trace_id", 16), hex("span_id", 16)) else {
                continue;
            };
            let _ = write!(
                out,
                "<li data-link-trace=\"{trace}\" data-link-span=\"{span}\"><a href=\"/traces/{trace}\">trace {trace}</a> span {span} {}</li>",
                attrs(l)
            );
        }
        out.push_str("</ul></div>");
    }
    if let Some(events) = parse("events") {
        let _ = write!(
            out,
            "<div class=\"span-events\" data-events=\"{}\"><b>Events</b><ul>",
            events.len()
        );
        for e in &events {
            let name = e.get("name").and_then(Value::as_str).unwrap_or("");
            let at = e.get("time_unix_nano").and_then(Value::as_i64).unwrap_or(span_start_ns);
            let _ = write!(
                out,
                "<li data-event=\"{n}\">+{d} <b>{n}</b> {a}</li>",
                n = escape(name),
                d = duration(Some(at.saturating_sub(span_start_ns) as f64)),
                a = attrs(e)
            );
        }
        out.push_str("</ul></div>");
    }
    out
}
