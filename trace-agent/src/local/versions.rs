//! Version comparison of one resource: p50, p99 and error rate per `version` (the stats
//! buckets carry the tracer's `DD_VERSION`), two versions side by side, changes beyond a
//! threshold flagged.
//!
//! A change is **flagged** when
//! * latency (p50, p99): `|b / a − 1| > threshold` (default 0.2, i.e. ±20 %);
//! * error rate: `|b − a| > 0.01` (one point of percentage) **and** `|b / a − 1| > threshold`
//!   (or `a` is 0).
//!
//! Without `a`/`b`, the two versions seen last are compared (`b` the newest).

use rusqlite::Connection;
use serde::Serialize;

use super::query::Window;
use super::scoped::{self, Scope};

/// Default relative threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.2;
/// Smallest error-rate difference flagged (absolute).
pub const MIN_ERROR_RATE_CHANGE: f64 = 0.01;

/// Figures of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionRow {
    /// `version` (`""` when the tracer sent none).
    pub version: String,
    /// Hits.
    pub hits: u64,
    /// Errors.
    pub errors: u64,
    /// `errors / hits`.
    pub error_rate: f64,
    /// Median latency, ns.
    pub p50_ns: Option<f64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<f64>,
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `p50`, `p99` or `error_rate`.
    pub metric: &'static str,
    /// Value of version `a`.
    pub a: Option<f64>,
    /// Value of version `b`.
    pub b: Option<f64>,
    /// `b / a − 1` (`null` when `a` is 0 or missing).
    pub relative: Option<f64>,
    /// Beyond the threshold.
    pub flagged: bool,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionComparison {
    /// Service.
    pub service: String,
    /// Resource.
    pub resource: String,
    /// Every version with data in the window, oldest last-seen first.
    pub versions: Vec<VersionRow>,
    /// The base version.
    pub a: Option<String>,
    /// The version compared with it.
    pub b: Option<String>,
    /// Relative threshold used.
    pub threshold: f64,
    /// p50, p99, error rate of `a` against `b` (empty unless both have data).
    pub changes: Vec<Change>,
}

/// Compares two versions' figures (pure).
pub fn compare(a: &VersionRow, b: &VersionRow, threshold: f64) -> Vec<Change> {
    let rel = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x > 0.0 => Some(y / x - 1.0),
        _ => None,
    };
    let latency = |metric, x: Option<f64>, y: Option<f64>| {
        let relative = rel(x, y);
        Change {
            metric,
            a: x,
            b: y,
            relative,
            flagged: relative.is_some_and(|r| r.abs() > threshold),
        }
    };
    let (ea, eb) = (a.error_rate, b.error_rate);
    let relative = rel(Some(ea), Some(eb));
    vec![
        latency("p50", a.p50_ns, b.p50_ns),
        latency("p99", a.p99_ns, b.p99_ns),
        Change {
            metric: "error_rate",
            a: Some(ea),
            b: Some(eb),
            relative,
            flagged: (eb - ea).abs() > MIN_ERROR_RATE_CHANGE && relative.is_none_or(|r| r.abs() > threshold),
        },
    ]
}

/// The versions of `service`/`resource` (`operation`: default all of the resource's) over the
/// window ending at `now_ns`.
///
/// # Errors
/// A SQLite error.
#[allow(clippy::too_many_arguments)] // the query string's parameters, one each
pub fn versions(
    conn: &Connection,
    service: &str,
    operation: Option<&str>,
    resource: &str,
    now_ns: i64,
    window: Window,
    (a, b): (Option<&str>, Option<&str>),
    threshold: f64,
) -> rusqlite::Result<VersionComparison> {
    let from = now_ns.saturating_sub(i64::try_from(window.duration().as_nanos()).unwrap_or(i64::MAX));
    let to = now_ns.saturating_add(60_000_000_000);
    let scope = Scope {
        service,
        operation,
        resource: Some(resource),
    };
    let mut aggs = scoped::by_version(conn, scope, from, to)?;
    let order = scoped::versions_by_recency(conn, scope, from, to)?;
    let versions: Vec<VersionRow> = order
        .iter()
        .filter_map(|v| {
            let agg = aggs.remove(v)?;
            Some(VersionRow {
                version: v.clone(),
                hits: agg.hits,
                errors: agg.errors,
                error_rate: agg.error_rate().unwrap_or(0.0),
                p50_ns: agg.sketch.quantile(0.5),
                p99_ns: agg.sketch.quantile(0.99),
            })
        })
        .collect();
    let n = versions.len();
    let pick = |want: Option<&str>, default: Option<usize>| {
        want.map(str::to_owned)
            .or_else(|| default.and_then(|i| versions.get(i)).map(|r| r.version.clone()))
    };
    let b = pick(b, n.checked_sub(1));
    let a = pick(a, n.checked_sub(2));
    let find = |v: &Option<String>| v.as_ref().and_then(|v| versions.iter().find(|r| &r.version == v));
    let changes = match (find(&a), find(&b)) {
        (Some(x), Some(y)) if x.version != y.version => compare(x, y, threshold),
        _ => Vec::new(),
    };
    Ok(VersionComparison {
        service: service.to_owned(),
        resource: resource.to_owned(),
        versions,
        a,
        b,
        threshold,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &str, hits: u64, errors: u64, p50: f64, p99: f64) -> VersionRow {
        VersionRow {
            version: v.to_owned(),
            hits,
            errors,
            error_rate: errors as f64 / hits as f64,
            p50_ns: Some(p50),
            p99_ns: Some(p99),
        }
    }

    #[test]
    fn changes_beyond_the_threshold_are_flagged() {
        let a = row("1.0", 1000, 10, 10e6, 50e6);
        let b = row("1.1", 1000, 40, 11e6, 90e6);
        let c = compare(&a, &b, DEFAULT_THRESHOLD);
        let flag = |m: &str| c.iter().find(|x| x.metric == m).unwrap().flagged;
        assert!(!flag("p50"), "+10 % is within 20 %");
        assert!(flag("p99"), "+80 %");
        assert!(flag("error_rate"), "1 % → 4 %");
        let p99 = c.iter().find(|x| x.metric == "p99").unwrap();
        assert!((p99.relative.unwrap() - 0.8).abs() < 1e-9);
        // Tiny error rates: 0.1 % → 0.5 % is 5× but under one point: not flagged.
        let c = compare(&row("a", 1000, 1, 1.0, 1.0), &row("b", 1000, 5, 1.0, 1.0), 0.2);
        assert!(!c[2].flagged);
        // From no errors to 5 %.
        let c = compare(&row("a", 100, 0, 1.0, 1.0), &row("b", 100, 5, 1.0, 1.0), 0.2);
        assert!(c[2].flagged && c[2].relative.is_none());
    }
}
