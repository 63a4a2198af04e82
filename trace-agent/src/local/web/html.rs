//! Small pure helpers of the pages: HTML escaping, URL path segments, number formats, SVG charts.

use std::fmt::Write;

/// Escapes `&<>"'` (every value from stored data goes through here).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `/` in a resource stays
/// inside one path segment).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, for query strings); `None`
/// for a malformed escape or invalid UTF-8.
pub fn decode_component(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Query-string parameters (decoded; malformed pairs skipped).
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode_component(k, true)?, decode_component(v, true)?))
        })
        .collect()
}

/// `1.23 s`, `12.3 ms`, `456 µs`, `789 ns`; `–` for none.
pub fn duration(ns: Option<f64>) -> String {
    let Some(ns) = ns.filter(|v| v.is_finite()) else {
        return "–".to_owned();
    };
    let abs = ns.abs();
    let (v, unit) = if abs >= 1e9 {
        (ns / 1e9, "s")
    } else if abs >= 1e6 {
        (ns / 1e6, "ms")
    } else if abs >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// `12.5 %`.
pub fn percent(rate: f64) -> String {
    if rate == 0.0 {
        "0 %".to_owned()
    } else if rate < 0.001 {
        "<0.1 %".to_owned()
    } else {
        format!("{:.1} %", rate * 100.0)
    }
}

/// Requests per second with sensible precision.
pub fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}/s")
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{per_second:.3}/s")
    }
}

/// UTC `HH:MM:SS` of a time in ns since the epoch (pages print the date once).
pub fn clock(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// A stable colour per service (waterfall bars and legend).
pub fn service_colour(service: &str) -> &'static str {
    const PALETTE: [&str; 10] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac", "#e15759",
    ];
    // FNV-1a: the same colour for the same service on every page and run.
    let mut h: u32 = 0x811c_9dc5;
    for b in service.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE.get(h as usize % PALETTE.len()).copied().unwrap_or("#4e79a7")
}

/// A bar chart (`values`, e.g. requests/s per slot) with an optional line over it (`line`,
/// e.g. p95 latency, scaled to its own maximum), as inline SVG.
pub fn chart(values: &[f64], line: &[Option<f64>], width: u32, height: u32, title: &str) -> String {
    let n = values.len().max(1) as f64;
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let line_max = line.iter().flatten().copied().fold(0.0_f64, f64::max);
    let (w, h) = (f64::from(width), f64::from(height));
    let bar_w = w / n;
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         role=\"img\"><title>{}</title><rect width=\"{width}\" height=\"{height}\" class=\"bg\"/>",
        escape(title)
    );
    if max > 0.0 {
        for (i, v) in values.iter().enumerate() {
            let bh = (v / max * (h - 4.0)).max(if *v > 0.0 { 1.0 } else { 0.0 });
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"/>",
                i as f64 * bar_w + 0.5,
                h - bh,
                (bar_w - 1.0).max(0.5)
            );
        }
    }
    if line_max > 0.0 {
        let mut path = String::new();
        for (i, v) in line.iter().enumerate() {
            if let Some(v) = v {
                let x = i as f64 * bar_w + bar_w / 2.0;
                let y = h - 2.0 - v / line_max * (h - 6.0);
                let _ = write!(path, "{}{x:.1},{y:.1}", if path.is_empty() { "M" } else { " L" });
            }
        }
        let _ = write!(svg, "<path class=\"line\" d=\"{path}\"/>");
        // Dots too: a single point draws no line.
        for (i, v) in line.iter().enumerate() {
            if let Some(v) = v {
                let x = i as f64 * bar_w + bar_w / 2.0;
                let y = h - 2.0 - v / line_max * (h - 6.0);
                let _ = write!(svg, "<circle class=\"dot\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\"/>");
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn segments_round_trip() {
        for s in ["GET /api/apm", "SELECT * FROM t WHERE a = 'é'", "a%b+c?d#e", ""] {
            let enc = encode_segment(s);
            assert!(!enc.contains('/') && !enc.contains(' ') && !enc.contains('?'));
            assert_eq!(decode_component(&enc, false).as_deref(), Some(s));
        }
        assert_eq!(decode_component("%zz", false), None);
        assert_eq!(decode_component("%4", false), None);
        assert_eq!(decode_component("%FF", false), None);
    }

    #[test]
    fn query_strings() {
        let q = query_params(Some("window=5m&operation=flask.request&x=a+b%2Fc&bad=%"));
        assert_eq!(
            q,
            vec![
                ("window".to_owned(), "5m".to_owned()),
                ("operation".to_owned(), "flask.request".to_owned()),
                ("x".to_owned(), "a b/c".to_owned())
            ]
        );
    }

    #[test]
    fn formats() {
        assert_eq!(duration(Some(1_234_000_000.0)), "1.23 s");
        assert_eq!(duration(Some(12_345_678.0)), "12.3 ms");
        assert_eq!(duration(Some(456_000.0)), "456 µs");
        assert_eq!(duration(None), "–");
        assert_eq!(percent(0.25), "25.0 %");
        assert_eq!(clock(3_723_000_000_000), "01:02:03");
        assert_eq!(service_colour("web"), service_colour("web"));
    }

    #[test]
    fn chart_scales_bars_to_the_maximum() {
        let svg = chart(&[0.0, 2.0, 4.0], &[None, Some(1.0), Some(2.0)], 90, 40, "t<");
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(svg.contains("height=\"36.0\""), "{svg}");
        assert!(svg.contains("<title>t&lt;</title>"));
        assert!(svg.contains("<path class=\"line\" d=\"M"));
    }
}

/// One trace's figures for a row of a trace list.
#[derive(Debug)]
pub struct TraceRow<'a> {
    /// The trace id (hex).
    pub id: &'a str,
    /// Start (Unix ns).
    pub start_ns: i64,
    /// Duration (ns).
    pub duration_ns: i64,
    /// Span count.
    pub spans: u64,
    /// Whether the trace failed.
    pub error: bool,
}

impl<'a> TraceRow<'a> {
    /// The row of trace `id`.
    pub fn new(id: &'a str, start_ns: i64, duration_ns: i64, spans: u64, error: bool) -> Self {
        Self {
            id,
            start_ns,
            duration_ns,
            spans,
            error,
        }
    }
}

/// A trace list's row: `<tr>` with the `data-*` attributes the page's sorting reads
/// (`extra_attrs` added, already escaped), the linked id, `cells_before` (already HTML),
/// start clock, duration, span count, then `cells_after` (already HTML).
pub fn trace_row(out: &mut String, t: &TraceRow<'_>, extra_attrs: &str, cells_before: &str, cells_after: &str) {
    let id = escape(t.id);
    let _ = write!(
        out,
        "<tr data-trace=\"{id}\"{extra_attrs} data-start=\"{start}\" data-duration=\"{dur}\" data-spans=\"{spans}\" \
         data-error=\"{e}\"{cls}><td><a href=\"/traces/{id}\">{id}</a></td>{cells_before}<td>{clock}</td><td>{d}</td>\
         <td>{spans}</td>{cells_after}</tr>",
        start = t.start_ns,
        dur = t.duration_ns,
        spans = t.spans,
        e = u8::from(t.error),
        cls = if t.error { " class=\"err\"" } else { "" },
        clock = clock(t.start_ns),
        d = duration(Some(t.duration_ns as f64)),
    );
}
