//! Stats rows of one scope (a service, optionally one operation and/or one resource) summed
//! over a time range: what monitors evaluate and what the version comparison compares.
//!
//! Without an operation or a resource, a service's figures are those of its **primary
//! operation** (the span name with the most top-level hits in the range), as on its page.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::quantiles::Merged;

/// Which stats rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scope<'a> {
    pub(crate) service: &'a str,
    pub(crate) operation: Option<&'a str>,
    pub(crate) resource: Option<&'a str>,
}

/// Sums over a range.
#[derive(Debug, Default)]
pub(crate) struct Agg {
    pub(crate) hits: u64,
    pub(crate) errors: u64,
    pub(crate) sketch: Merged,
}

impl Agg {
    fn add(&mut self, hits: i64, errors: i64, ok: Option<&[u8]>, err: Option<&[u8]>) {
        self.hits += u64::try_from(hits).unwrap_or(0);
        self.errors += u64::try_from(errors).unwrap_or(0);
        self.sketch.add_encoded(ok);
        self.sketch.add_encoded(err);
    }

    /// `errors / hits`, `None` without hits.
    pub(crate) fn error_rate(&self) -> Option<f64> {
        (self.hits > 0).then(|| self.errors as f64 / self.hits as f64)
    }
}

/// The span name with the most top-level hits of `service` in `[from, to)`.
pub(crate) fn primary_operation(
    conn: &Connection,
    service: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT name FROM stats WHERE service = ?1 AND bucket_start >= ?2 AND bucket_start < ?3 \
         GROUP BY name ORDER BY sum(top_level_hits) DESC, sum(hits) DESC, name LIMIT 1",
        params![service, from, to],
        |r| r.get(0),
    )
    .optional()
}

/// The operation the scope is about: its own, none when it names a resource, else the primary.
fn operation_of(conn: &Connection, scope: Scope<'_>, from: i64, to: i64) -> rusqlite::Result<Option<Option<String>>> {
    Ok(match (scope.operation, scope.resource) {
        (Some(op), _) => Some(Some(op.to_owned())),
        (None, Some(_)) => Some(None),
        (None, None) => primary_operation(conn, scope.service, from, to)?.map(Some),
    })
}

/// Rows of the scope in `[from, to)`, summed per version (`""` when the tracer sent none).
pub(crate) fn by_version(
    conn: &Connection,
    scope: Scope<'_>,
    from: i64,
    to: i64,
) -> rusqlite::Result<BTreeMap<String, Agg>> {
    let mut out: BTreeMap<String, Agg> = BTreeMap::new();
    let Some(op) = operation_of(conn, scope, from, to)? else {
        return Ok(out);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT version, hits, errors, ok_summary, error_summary FROM stats \
         WHERE service = ?1 AND bucket_start >= ?2 AND bucket_start < ?3 \
         AND (?4 IS NULL OR name = ?4) AND (?5 IS NULL OR resource = ?5)",
    )?;
    let rows = stmt.query_map(params![scope.service, from, to, op, scope.resource], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
        ))
    })?;
    for row in rows {
        let (version, hits, errors, ok, err) = row?;
        out.entry(version)
            .or_default()
            .add(hits, errors, ok.as_deref(), err.as_deref());
    }
    Ok(out)
}

/// Rows of the scope in `[from, to)`, summed.
pub(crate) fn aggregate(conn: &Connection, scope: Scope<'_>, from: i64, to: i64) -> rusqlite::Result<Agg> {
    let mut total = Agg::default();
    for a in by_version(conn, scope, from, to)?.into_values() {
        total.hits += a.hits;
        total.errors += a.errors;
        total.sketch.absorb(&a.sketch);
    }
    Ok(total)
}

/// Last bucket start per version of the scope in `[from, to)` (newest version last).
pub(crate) fn versions_by_recency(
    conn: &Connection,
    scope: Scope<'_>,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<String>> {
    let Some(op) = operation_of(conn, scope, from, to)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT version, max(bucket_start) AS last FROM stats \
         WHERE service = ?1 AND bucket_start >= ?2 AND bucket_start < ?3 \
         AND (?4 IS NULL OR name = ?4) AND (?5 IS NULL OR resource = ?5) GROUP BY version ORDER BY last, version",
    )?;
    let rows = stmt.query_map(params![scope.service, from, to, op, scope.resource], |r| r.get(0))?;
    rows.collect()
}
