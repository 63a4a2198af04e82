//! Read queries behind the pages and the JSON API. Every figure comes from stored rows: stats
//! buckets (hits, errors, durations, sketches merged over the window) and stored spans.
//!
//! A service's figures are those of its **primary operation** (the span name with the most
//! top-level hits, like Datadog's service page), or of an operation the caller picks; its
//! resources are the resources of that operation.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use super::codec;
use super::quantiles::Merged;
use super::writer::{id_from_sql, id_to_sql};

mod view;

pub use view::*;
use view::{depth_first, distribution};

/// Sketch blobs of one stats row.
type Blobs = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A stats row selected as three integers (e.g. bucket start or duration, hits, errors), then
/// the OK and error latency sketches.
fn counts_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, i64, Blobs)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, (r.get(3)?, r.get(4)?)))
}

fn merge_row(m: &mut Merged, blobs: &Blobs) {
    m.add_encoded(blobs.0.as_deref());
    m.add_encoded(blobs.1.as_deref());
}

fn log_rejected(m: &Merged) {
    if m.rejected > 0 {
        tracing::debug!(rejected = m.rejected, "local store: sketches that could not be merged");
    }
}

/// Operations of every service in the window: `service → [(name, hits, errors, duration, top)]`.
fn operations(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<BTreeMap<String, Vec<OpRow>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT service, name, sum(hits), sum(errors), sum(duration), sum(top_level_hits) FROM stats \
         WHERE bucket_start >= ?1 AND bucket_start < ?2 GROUP BY service, name",
    )?;
    let rows = stmt.query_map(params![from, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            OpRow {
                name: r.get(1)?,
                hits: r.get(2)?,
                errors: r.get(3)?,
                duration: r.get(4)?,
                top_level_hits: r.get(5)?,
            },
        ))
    })?;
    let mut out: BTreeMap<String, Vec<OpRow>> = BTreeMap::new();
    for row in rows {
        let (service, op) = row?;
        out.entry(service).or_default().push(op);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct OpRow {
    name: String,
    hits: i64,
    errors: i64,
    duration: i64,
    top_level_hits: i64,
}

/// The primary operation: most top-level hits, then most hits, then name.
fn primary(ops: &[OpRow]) -> Option<&OpRow> {
    ops.iter().max_by(|a, b| {
        (a.top_level_hits, a.hits)
            .cmp(&(b.top_level_hits, b.hits))
            .then_with(|| b.name.cmp(&a.name))
    })
}

fn window_bounds(now_ns: i64, window: Window) -> (i64, i64) {
    // Buckets that started in the window; `to` a little past now tolerates clock skew.
    (
        now_ns.saturating_sub(window.nanos()),
        now_ns.saturating_add(60_000_000_000),
    )
}

/// Sketches and per-slot counts of one (service, operation) over the window.
fn service_series(
    conn: &Connection,
    service: &str,
    op: &str,
    now_ns: i64,
    window: Window,
) -> rusqlite::Result<(Merged, Vec<Point>)> {
    let (from, to) = window_bounds(now_ns, window);
    let slot = (window.nanos() / SERIES_POINTS as i64).max(1);
    let mut stmt = conn.prepare_cached(
        "SELECT bucket_start, hits, errors, ok_summary, error_summary FROM stats \
         WHERE service = ?1 AND name = ?2 AND bucket_start >= ?3 AND bucket_start < ?4",
    )?;
    let mut total = Merged::default();
    let mut slots: Vec<(Point, Merged)> = (0..SERIES_POINTS)
        .map(|i| {
            (
                Point {
                    start_ns: from + i as i64 * slot,
                    ..Point::default()
                },
                Merged::default(),
            )
        })
        .collect();
    let rows = stmt.query_map(params![service, op, from, to], counts_row)?;
    for row in rows {
        let (start, hits, errors, blobs): (i64, i64, i64, Blobs) = row?;
        let i = usize::try_from((start - from) / slot)
            .unwrap_or(0)
            .min(SERIES_POINTS - 1);
        if let Some((p, m)) = slots.get_mut(i) {
            p.hits += u64::try_from(hits).unwrap_or(0);
            p.errors += u64::try_from(errors).unwrap_or(0);
            merge_row(m, &blobs);
        }
    }
    let secs = slot as f64 / 1e9;
    let series = slots
        .into_iter()
        .map(|(mut p, m)| {
            p.requests_per_second = p.hits as f64 / secs;
            p.p95_ns = m.quantile(0.95);
            total.absorb(&m);
            p
        })
        .collect();
    log_rejected(&total);
    Ok((total, series))
}

fn summary(
    conn: &Connection,
    service: &str,
    op: &OpRow,
    now_ns: i64,
    window: Window,
) -> rusqlite::Result<ServiceSummary> {
    let (sketch, series) = service_series(conn, service, &op.name, now_ns, window)?;
    Ok(ServiceSummary {
        service: service.to_owned(),
        operation: op.name.clone(),
        figures: Figures::new(op.hits, op.errors, op.duration, window, &sketch),
        series,
    })
}

/// Every service with data in the window, by name.
///
/// # Errors
/// A SQLite error.
pub fn services(conn: &Connection, now_ns: i64, window: Window) -> rusqlite::Result<Vec<ServiceSummary>> {
    let (from, to) = window_bounds(now_ns, window);
    let mut out = Vec::new();
    for (service, ops) in operations(conn, from, to)? {
        if let Some(op) = primary(&ops) {
            out.push(summary(conn, &service, op, now_ns, window)?);
        }
    }
    Ok(out)
}

/// One service: summary, operations and the resources of `operation` (default: primary).
/// `None` when the service has no data in the window.
///
/// # Errors
/// A SQLite error.
pub fn service(
    conn: &Connection,
    service: &str,
    operation: Option<&str>,
    now_ns: i64,
    window: Window,
) -> rusqlite::Result<Option<ServiceDetail>> {
    let (from, to) = window_bounds(now_ns, window);
    let mut all = operations(conn, from, to)?;
    let Some(ops) = all.remove(service) else {
        return Ok(None);
    };
    let op = match operation {
        Some(name) => ops.iter().find(|o| o.name == name),
        None => primary(&ops),
    };
    let Some(op) = op else {
        return Ok(None);
    };
    let summary = summary(conn, service, op, now_ns, window)?;
    let mut stmt = conn.prepare_cached(
        "SELECT resource, hits, errors, duration, ok_summary, error_summary FROM stats \
         WHERE service = ?1 AND name = ?2 AND bucket_start >= ?3 AND bucket_start < ?4",
    )?;
    let mut by_resource: BTreeMap<String, (i64, i64, i64, Merged)> = BTreeMap::new();
    let rows = stmt.query_map(params![service, op.name, from, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            (r.get(4)?, r.get(5)?),
        ))
    })?;
    for row in rows {
        let (resource, hits, errors, duration, blobs): (String, i64, i64, i64, Blobs) = row?;
        let e = by_resource.entry(resource).or_default();
        e.0 += hits;
        e.1 += errors;
        e.2 = e.2.saturating_add(duration);
        merge_row(&mut e.3, &blobs);
    }
    let mut resources: Vec<ResourceRow> = by_resource
        .into_iter()
        .map(|(resource, (hits, errors, duration, m))| {
            log_rejected(&m);
            ResourceRow {
                resource,
                figures: Figures::new(hits, errors, duration, window, &m),
            }
        })
        .collect();
    // Most time spent first (what to look at), then by name.
    resources.sort_by(|a, b| {
        b.figures
            .total_duration_ns
            .cmp(&a.figures.total_duration_ns)
            .then_with(|| a.resource.cmp(&b.resource))
    });
    let mut operations: Vec<Operation> = ops
        .iter()
        .map(|o| Operation {
            name: o.name.clone(),
            hits: u64::try_from(o.hits).unwrap_or(0),
            top_level_hits: u64::try_from(o.top_level_hits).unwrap_or(0),
        })
        .collect();
    operations.sort_by_key(|o| std::cmp::Reverse((o.top_level_hits, o.hits)));
    Ok(Some(ServiceDetail {
        summary,
        operations,
        resources,
    }))
}

/// One resource: figures, distribution and stored traces. `None` without data in the window.
///
/// # Errors
/// A SQLite error.
pub fn resource(
    conn: &Connection,
    service: &str,
    operation: Option<&str>,
    resource: &str,
    now_ns: i64,
    window: Window,
) -> rusqlite::Result<Option<ResourceDetail>> {
    let (from, to) = window_bounds(now_ns, window);
    let operation = match operation {
        Some(o) => o.to_owned(),
        None => {
            let all = operations(conn, from, to)?;
            match all.get(service).and_then(|ops| primary(ops)) {
                Some(op) => op.name.clone(),
                None => return Ok(None),
            }
        }
    };
    let mut stmt = conn.prepare_cached(
        "SELECT hits, errors, duration, ok_summary, error_summary FROM stats \
         WHERE service = ?1 AND name = ?2 AND resource = ?3 AND bucket_start >= ?4 AND bucket_start < ?5",
    )?;
    let (mut hits, mut errors, mut duration, mut m, mut rows) = (0i64, 0i64, 0i64, Merged::default(), 0);
    let found = stmt.query_map(params![service, operation, resource, from, to], counts_row)?;
    for row in found {
        let (h, e, d, blobs): (i64, i64, i64, Blobs) = row?;
        hits += h;
        errors += e;
        duration = duration.saturating_add(d);
        merge_row(&mut m, &blobs);
        rows += 1;
    }
    let traces = resource_traces(conn, service, &operation, resource, from, to)?;
    if rows == 0 && traces.is_empty() {
        return Ok(None);
    }
    log_rejected(&m);
    Ok(Some(ResourceDetail {
        service: service.to_owned(),
        operation,
        resource: resource.to_owned(),
        figures: Figures::new(hits, errors, duration, window, &m),
        distribution: distribution(&m),
        traces,
    }))
}

fn resource_traces(
    conn: &Connection,
    service: &str,
    operation: &str,
    resource: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<TraceRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.trace_id, s.span_id, s.start, s.duration, s.error, s.error_type, s.error_message, \
                coalesce(t.span_count, 0) \
         FROM resource_spans s LEFT JOIN traces t ON t.trace_id = s.trace_id \
         WHERE s.service = ?1 AND s.resource = ?2 AND s.name = ?3 AND s.start >= ?4 AND s.start < ?5 \
         ORDER BY s.error DESC, s.duration DESC, s.start DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![service, resource, operation, from, to, MAX_RESOURCE_TRACES as i64],
        |r| {
            Ok(TraceRef {
                trace_id: id_from_sql(r.get(0)?).to_string(),
                span_id: id_from_sql(r.get(1)?).to_string(),
                start_ns: r.get(2)?,
                duration_ns: r.get(3)?,
                error: r.get::<_, i64>(4)? != 0,
                error_type: r.get(5)?,
                error_message: r.get(6)?,
                span_count: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            })
        },
    )?;
    rows.collect()
}

/// One stored trace, `None` when unknown (never stored, or deleted by retention).
///
/// # Errors
/// A SQLite error.
pub fn trace(conn: &Connection, trace_id: u64) -> rusqlite::Result<Option<TraceDetail>> {
    let id = id_to_sql(trace_id);
    let head = conn
        .query_row(
            "SELECT trace_id_high, start, end, root_service, root_resource, error_count, span_count \
             FROM traces WHERE trace_id = ?1",
            params![id],
            |r| {
                Ok((
                    id_from_sql(r.get(0)?),
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((high, start, end, root_service, root_resource, error_count, span_count)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT spans FROM chunks WHERE trace_id = ?1 ORDER BY rowid")?;
    let blobs = stmt
        .query_map(params![id], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // A chunk sent twice (a retry) is stored twice: its spans are shown once (the last).
    let mut by_id: HashMap<u64, SpanView> = HashMap::new();
    for blob in &blobs {
        for s in codec::spans(blob) {
            let view = SpanView {
                span_id: s.span_id.to_string(),
                parent_id: s.parent_id.to_string(),
                depth: 0,
                service: s.service.to_owned(),
                name: s.name.to_owned(),
                resource: s.resource.to_owned(),
                r#type: s.r#type.to_owned(),
                start_ns: s.start,
                offset_ns: s.start - start,
                duration_ns: s.duration,
                error: s.error != 0,
                meta: s.meta().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                // Non-finite values are left out, as the JSON of earlier versions did.
                metrics: s
                    .metrics()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            };
            by_id.insert(s.span_id, view);
        }
    }
    let mut spans: Vec<SpanView> = by_id.into_values().collect();
    spans.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
    spans.truncate(MAX_TRACE_SPANS);

    let shown = spans.len() as u64;
    Ok(Some(TraceDetail {
        trace_id: trace_id.to_string(),
        trace_id_128: (high != 0).then(|| format!("{high:016x}{trace_id:016x}")),
        start_ns: start,
        duration_ns: end - start,
        root_service,
        root_resource,
        error_count: u64::try_from(error_count).unwrap_or(0),
        spans: depth_first(spans),
        truncated: u64::try_from(span_count).unwrap_or(0).saturating_sub(shown),
    }))
}
