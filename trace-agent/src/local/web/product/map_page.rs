//! The service map page: services as nodes in columns by call depth, edges with rates.

use super::*;

pub(super) const NODE_W: f64 = 190.0;
pub(super) const NODE_H: f64 = 66.0;
pub(super) const COL_W: f64 = 400.0;
pub(super) const ROW_H: f64 = 100.0;

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
