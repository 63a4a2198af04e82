//! View models of the local pages and JSON API, and the pure shaping of query results into
//! them (latency distribution bins, depth-first span order). No SQL here: the readers in
//! [`super`] fill these from stored rows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::local::quantiles::Merged;

/// A time window ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Window {
    /// Last 5 minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// Last hour.
    #[default]
    #[serde(rename = "1h")]
    OneHour,
    /// Last day.
    #[serde(rename = "1d")]
    OneDay,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Self::FiveMinutes, Self::OneHour, Self::OneDay];

    /// `5m`, `1h`, `1d` (also accepts `5min`, `hour`, `day`).
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "5m" | "5min" => Some(Self::FiveMinutes),
            "1h" | "hour" => Some(Self::OneHour),
            "1d" | "day" | "24h" => Some(Self::OneDay),
            _ => None,
        }
    }

    /// The query-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveMinutes => "5m",
            Self::OneHour => "1h",
            Self::OneDay => "1d",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Self::FiveMinutes => "last 5 minutes",
            Self::OneHour => "last hour",
            Self::OneDay => "last day",
        }
    }

    /// Length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Self::FiveMinutes => 300,
            Self::OneHour => 3600,
            Self::OneDay => 86_400,
        })
    }

    pub(super) fn nanos(self) -> i64 {
        i64::try_from(self.duration().as_nanos()).unwrap_or(i64::MAX)
    }
}

/// Points of a service's chart.
pub const SERIES_POINTS: usize = 30;
/// Most traces listed for a resource.
pub const MAX_RESOURCE_TRACES: usize = 50;
/// Most spans shown for one trace.
pub const MAX_TRACE_SPANS: usize = 5000;
/// Bins of a latency distribution.
pub const DISTRIBUTION_BINS: usize = 24;

/// p50/p95/p99 in nanoseconds (`None` without sketches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    pub(super) fn of(m: &Merged) -> Self {
        Self {
            p50: m.quantile(0.5),
            p95: m.quantile(0.95),
            p99: m.quantile(0.99),
        }
    }
}

/// Counts of one group of stats rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Spans counted.
    pub hits: u64,
    /// Of which errors.
    pub errors: u64,
    /// `errors / hits` (0 without hits).
    pub error_rate: f64,
    /// `hits / window` per second.
    pub requests_per_second: f64,
    /// Sum of durations, ns.
    pub total_duration_ns: u64,
    /// Latency percentiles from the merged sketches.
    pub latency: Percentiles,
}

impl Figures {
    pub(super) fn new(hits: i64, errors: i64, duration: i64, window: Window, sketch: &Merged) -> Self {
        let hits = u64::try_from(hits).unwrap_or(0);
        let errors = u64::try_from(errors).unwrap_or(0);
        Self {
            hits,
            errors,
            error_rate: if hits == 0 { 0.0 } else { errors as f64 / hits as f64 },
            requests_per_second: hits as f64 / window.duration().as_secs_f64(),
            total_duration_ns: u64::try_from(duration).unwrap_or(0),
            latency: Percentiles::of(sketch),
        }
    }
}

/// One point of a service's chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Start of the slot, ns since the epoch.
    pub start_ns: i64,
    /// Hits in the slot.
    pub hits: u64,
    /// Errors in the slot.
    pub errors: u64,
    /// Hits per second over the slot.
    pub requests_per_second: f64,
    /// p95 latency in the slot (ns).
    pub p95_ns: Option<f64>,
}

/// One operation (span name) of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// Hits.
    pub hits: u64,
    /// Top-level hits.
    pub top_level_hits: u64,
}

/// One service of the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    /// Service name.
    pub service: String,
    /// The operation the figures are about.
    pub operation: String,
    /// Figures of that operation over the window.
    #[serde(flatten)]
    pub figures: Figures,
    /// Chart points, oldest first ([`SERIES_POINTS`] slots over the window).
    pub series: Vec<Point>,
}

/// One resource of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceRow {
    /// Resource.
    pub resource: String,
    /// Figures over the window.
    #[serde(flatten)]
    pub figures: Figures,
}

/// A service page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceDetail {
    /// Summary and chart.
    pub summary: ServiceSummary,
    /// Operations of the service (pick one with `?operation=`).
    pub operations: Vec<Operation>,
    /// Resources of the operation.
    pub resources: Vec<ResourceRow>,
}

/// One bin of a latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Lower bound, ns.
    pub lo_ns: f64,
    /// Upper bound, ns.
    pub hi_ns: f64,
    /// Requests in the bin (estimated from the sketch).
    pub count: f64,
}

/// A stored span of a resource, with its trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRef {
    /// Trace id (decimal, low 64 bits; a string for JavaScript).
    pub trace_id: String,
    /// Span id of the resource's span.
    pub span_id: String,
    /// Start, ns since the epoch.
    pub start_ns: i64,
    /// The span's duration, ns.
    pub duration_ns: i64,
    /// Whether the span is an error.
    pub error: bool,
    /// `error.type`.
    pub error_type: Option<String>,
    /// `error.message` (or `error.msg`).
    pub error_message: Option<String>,
    /// Spans stored for the trace.
    pub span_count: u64,
}

/// A resource page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceDetail {
    /// Service.
    pub service: String,
    /// Operation.
    pub operation: String,
    /// Resource.
    pub resource: String,
    /// Figures over the window.
    pub figures: Figures,
    /// Latency distribution (log-spaced bins).
    pub distribution: Vec<Bin>,
    /// Stored traces of the resource in the window: errors first, then slowest.
    pub traces: Vec<TraceRef>,
}

/// One span of a trace page, in depth-first order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanView {
    /// Span id (decimal string).
    pub span_id: String,
    /// Parent id (decimal string, `0` for a root).
    pub parent_id: String,
    /// Nesting depth (0 for roots and orphans).
    pub depth: usize,
    /// Service.
    pub service: String,
    /// Operation name.
    pub name: String,
    /// Resource.
    pub resource: String,
    /// Span type.
    pub r#type: String,
    /// Start, ns since the epoch.
    pub start_ns: i64,
    /// Start relative to the trace start, ns.
    pub offset_ns: i64,
    /// Duration, ns.
    pub duration_ns: i64,
    /// Error flag.
    pub error: bool,
    /// String tags.
    pub meta: BTreeMap<String, String>,
    /// Numeric tags.
    pub metrics: BTreeMap<String, f64>,
}

/// A trace page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceDetail {
    /// Trace id (decimal, low 64 bits).
    pub trace_id: String,
    /// Full 128-bit id in hex when the high bits are known.
    pub trace_id_128: Option<String>,
    /// Earliest span start, ns.
    pub start_ns: i64,
    /// End of the last span minus start, ns.
    pub duration_ns: i64,
    /// Root span's service, when stored.
    pub root_service: Option<String>,
    /// Root span's resource, when stored.
    pub root_resource: Option<String>,
    /// Spans with an error.
    pub error_count: u64,
    /// Spans, depth first, children by start time.
    pub spans: Vec<SpanView>,
    /// Spans not shown (beyond [`MAX_TRACE_SPANS`]).
    pub truncated: u64,
}

/// Log-spaced bins between the sketch's smallest and largest values, with counts estimated
/// from 200 equal-mass quantiles of the merged sketch.
pub(super) fn distribution(m: &Merged) -> Vec<Bin> {
    const SAMPLES: usize = 200;
    let count = m.count();
    let (Some(lo), Some(hi)) = (m.quantile(0.0), m.quantile(1.0)) else {
        return Vec::new();
    };
    if count <= 0.0 {
        return Vec::new();
    }
    let lo = lo.max(1.0);
    let hi = hi.max(lo * 1.000_001);
    let (llo, lhi) = (lo.ln(), hi.ln());
    let width = (lhi - llo) / DISTRIBUTION_BINS as f64;
    let mut bins: Vec<Bin> = (0..DISTRIBUTION_BINS)
        .map(|i| Bin {
            lo_ns: (llo + width * i as f64).exp(),
            hi_ns: (llo + width * (i + 1) as f64).exp(),
            count: 0.0,
        })
        .collect();
    let per_sample = count / SAMPLES as f64;
    for k in 0..SAMPLES {
        let q = (k as f64 + 0.5) / SAMPLES as f64;
        if let Some(v) = m.quantile(q) {
            let i = ((v.max(lo).ln() - llo) / width).floor();
            let i = if i.is_finite() && i > 0.0 { i as usize } else { 0 };
            if let Some(b) = bins.get_mut(i.min(DISTRIBUTION_BINS - 1)) {
                b.count += per_sample;
            }
        }
    }
    bins
}

/// Orders spans depth first (children by start), setting `depth`; spans whose parent is not
/// stored start their own subtree. Iterative: a hostile trace cannot overflow the stack.
pub(super) fn depth_first(spans: Vec<SpanView>) -> Vec<SpanView> {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent_id != "0" && s.parent_id != s.span_id && ids.contains(s.parent_id.as_str()) {
            children.entry(s.parent_id.as_str()).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    // `spans` is sorted by start, so each child list is too.
    let mut order = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if seen.get(i).copied().unwrap_or(true) {
            continue;
        }
        if let Some(s) = seen.get_mut(i) {
            *s = true;
        }
        order.push((i, depth));
        if let Some(span) = spans.get(i)
            && let Some(kids) = children.get(span.span_id.as_str())
        {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    // Cycles (a→b→a) leave spans unvisited: show them at depth 0.
    for (i, s) in seen.iter().enumerate() {
        if !s {
            order.push((i, 0));
        }
    }
    let mut slots: Vec<Option<SpanView>> = spans.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(i, depth)| {
            slots.get_mut(i).and_then(Option::take).map(|mut s| {
                s.depth = depth;
                s
            })
        })
        .collect()
}
