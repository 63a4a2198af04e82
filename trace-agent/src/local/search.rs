//! Trace search: stored traces filtered by service, resource, operation, tags, duration,
//! error and id, newest first, paged with a cursor.
//!
//! * `service`, `resource`, `operation` and every `tag=k:v` match **any span** of the trace
//!   (a trace "passes through" `GET /cart` even when it started elsewhere); they combine with
//!   AND.
//! * `min_duration` / `max_duration` bound the **trace's** duration (first span start to last
//!   span end), the figure the results show.
//! * `error=true` keeps traces with at least one error span, `error=false` those with none.
//!
//! How it stays fast (see `benches/local_search.rs`): the window and the cursor are a range
//! of the `traces(start)` index, newest first; `error=true` uses the partial index
//! `traces_errors` of erroneous traces only; trace id and duration filters are on the trace
//! row. Without span or tag filters a page stops after `limit` rows. With them (schema 4 keeps
//! no per-span or per-tag index: ingest writes one blob per trace chunk), the trace row's
//! filter words ([`codec::Filter`]: two bits per service, resource, operation and string tag
//! but `_dd.*` ones) drop, in SQL, the traces that cannot match; each remaining trace's blobs
//! are read and checked, newest first, until `limit` matches — and at most [`SCAN_MAX`]
//! traces per page: a rare filter over a long window may return a shorter page with a cursor
//! to go on from.

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;

use super::codec;
use super::query::Window;
use super::writer::{id_from_sql, id_to_sql};

/// Results per page by default.
pub const DEFAULT_LIMIT: usize = 50;
/// Most results per page.
pub const MAX_LIMIT: usize = 500;
/// Most `tag=` filters in one search.
pub const MAX_TAGS: usize = 8;
/// Most traces one page checks against span or tag filters; past it the page ends early, with
/// a `next_cursor` to go on from.
pub const SCAN_MAX: usize = 100_000;

/// A search, parsed from the query string (see [`SearchQuery::from_params`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Traces that started in this window.
    pub window: Window,
    /// A span of this service.
    pub service: Option<String>,
    /// A span with this resource.
    pub resource: Option<String>,
    /// A span with this operation name.
    pub operation: Option<String>,
    /// A span with each of these string tags (`k:v`).
    pub tags: Vec<(String, String)>,
    /// Trace duration at least this, ns.
    pub min_duration_ns: Option<i64>,
    /// Trace duration at most this, ns.
    pub max_duration_ns: Option<i64>,
    /// With (`true`) or without (`false`) an error span.
    pub error: Option<bool>,
    /// Exactly this trace (decimal low 64 bits, or 32 hex digits of a 128-bit id).
    pub trace_id: Option<u64>,
    /// Page size.
    pub limit: usize,
    /// Continue after this `(start_ns, trace_id)`.
    pub cursor: Option<(i64, u64)>,
}

/// One trace found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceHit {
    /// Trace id (decimal low 64 bits, a string for JavaScript).
    pub trace_id: String,
    /// Root span's service (`null` when the root was not stored).
    pub root_service: Option<String>,
    /// Root span's resource.
    pub root_resource: Option<String>,
    /// Root span's operation.
    pub root_operation: Option<String>,
    /// First span start, ns since the epoch.
    pub start_ns: i64,
    /// Last span end minus start, ns.
    pub duration_ns: i64,
    /// Spans stored.
    pub span_count: u64,
    /// Whether a span is an error.
    pub error: bool,
    /// Error spans.
    pub error_count: u64,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// Newest first.
    pub traces: Vec<TraceHit>,
    /// Pass as `cursor=` for the next page; `null` on the last one. With span or tag filters a
    /// page may hold fewer than `limit` traces and still have a cursor ([`SCAN_MAX`]).
    pub next_cursor: Option<String>,
}

/// Parses `250ms`, `1.5s`, `300us` (or `µs`), `40ns` into nanoseconds (a unit is required).
///
/// # Errors
/// What is expected.
pub fn parse_span_duration(v: &str) -> Result<i64, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{v:?}: add a unit (ns, us, ms or s), e.g. 250ms"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (e.g. 250ms, 1.5s)"))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(format!("{v:?}: unknown unit (use ns, us, ms or s)")),
    };
    let ns = n * scale;
    if !ns.is_finite() || ns < 0.0 || ns > i64::MAX as f64 {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(ns as i64)
}

fn encode_cursor((start, id): (i64, u64)) -> String {
    format!("{start}-{id}")
}

fn decode_cursor(v: &str) -> Option<(i64, u64)> {
    let (start, id) = v.split_once('-')?;
    Some((start.parse().ok()?, id.parse().ok()?))
}

/// A trace id as typed: decimal low 64 bits, or hex (16 or 32 digits: the low 64 bits count).
fn parse_trace_id(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(id) = v.parse::<u64>() {
        return Some(id);
    }
    let hex = v.strip_prefix("0x").unwrap_or(v);
    if hex.len() > 32 || hex.is_empty() {
        return None;
    }
    let low = &hex[hex.len().saturating_sub(16)..];
    u64::from_str_radix(low, 16).ok()
}

impl SearchQuery {
    /// From query-string parameters (`tag` repeatable; empty values ignored).
    ///
    /// # Errors
    /// A message naming the bad parameter (answered as 400).
    pub fn from_params(params: &[(String, String)]) -> Result<Self, String> {
        let mut q = Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        };
        for (k, v) in params {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "window" => q.window = Window::parse(v).ok_or_else(|| format!("window={v:?}: use 5m, 1h or 1d"))?,
                "service" => q.service = Some(v.to_owned()),
                "resource" => q.resource = Some(v.to_owned()),
                "operation" => q.operation = Some(v.to_owned()),
                "tag" => {
                    let (key, value) = v.split_once(':').ok_or_else(|| format!("tag={v:?}: write key:value"))?;
                    if key.is_empty() || key.contains('"') {
                        return Err(format!("tag={v:?}: the key must be non-empty, without '\"'"));
                    }
                    if q.tags.len() >= MAX_TAGS {
                        return Err(format!("at most {MAX_TAGS} tag filters"));
                    }
                    q.tags.push((key.to_owned(), value.to_owned()));
                }
                "min_duration" => {
                    q.min_duration_ns = Some(parse_span_duration(v).map_err(|e| format!("min_duration: {e}"))?)
                }
                "max_duration" => {
                    q.max_duration_ns = Some(parse_span_duration(v).map_err(|e| format!("max_duration: {e}"))?)
                }
                "error" => {
                    q.error = Some(crate::env::parse_bool(v).ok_or_else(|| format!("error={v:?}: use true or false"))?);
                }
                "trace_id" => {
                    q.trace_id = Some(parse_trace_id(v).ok_or_else(|| format!("trace_id={v:?} is not a trace id"))?)
                }
                "limit" => {
                    let n: usize = v.parse().map_err(|_| format!("limit={v:?} is not a number"))?;
                    q.limit = n.clamp(1, MAX_LIMIT);
                }
                "cursor" => {
                    q.cursor =
                        Some(decode_cursor(v).ok_or_else(|| format!("cursor={v:?} is not a cursor of this API"))?)
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The query string of this search (without `cursor`), for links.
    pub fn to_query_string(&self) -> String {
        use super::web::html::encode_segment as e;
        let mut out = format!("window={}", self.window.as_str());
        let mut add = |k: &str, v: &str| {
            out.push('&');
            out.push_str(k);
            out.push('=');
            out.push_str(&e(v));
        };
        for (k, v) in [
            ("service", &self.service),
            ("resource", &self.resource),
            ("operation", &self.operation),
        ] {
            if let Some(v) = v {
                add(k, v);
            }
        }
        for (k, v) in &self.tags {
            add("tag", &format!("{k}:{v}"));
        }
        if let Some(ns) = self.min_duration_ns {
            add("min_duration", &format!("{ns}ns"));
        }
        if let Some(ns) = self.max_duration_ns {
            add("max_duration", &format!("{ns}ns"));
        }
        if let Some(err) = self.error {
            add("error", if err { "true" } else { "false" });
        }
        if let Some(id) = self.trace_id {
            add("trace_id", &id.to_string());
        }
        if self.limit != DEFAULT_LIMIT {
            add("limit", &self.limit.to_string());
        }
        out
    }
}

/// Runs `q` as of `now_ns`.
///
/// # Errors
/// A SQLite error.
pub fn search(conn: &Connection, q: &SearchQuery, now_ns: i64) -> rusqlite::Result<SearchResult> {
    search_within(conn, q, now_ns, SCAN_MAX)
}

/// [`search`] examining at most `scan_max` traces when spans must be checked.
fn search_within(conn: &Connection, q: &SearchQuery, now_ns: i64, scan_max: usize) -> rusqlite::Result<SearchResult> {
    let window_ns = i64::try_from(q.window.duration().as_nanos()).unwrap_or(i64::MAX);
    let from = now_ns.saturating_sub(window_ns);
    let to = now_ns.saturating_add(60_000_000_000);
    let mut sql = String::from(
        "SELECT t.trace_id, t.root_service, t.root_resource, t.root_name, t.start, t.end - t.start, \
         t.span_count, t.error_count FROM traces t",
    );
    let mut args: Vec<Value> = vec![Value::Integer(from), Value::Integer(to)];
    let mut conds = vec!["t.start >= ?1".to_owned(), "t.start < ?2".to_owned()];
    let arg = |v: Value, args: &mut Vec<Value>| {
        args.push(v);
        format!("?{}", args.len())
    };
    match q.error {
        // The partial index `traces_errors` has exactly these rows.
        Some(true) => {
            sql.push_str(" INDEXED BY traces_errors");
            conds.push("t.error_count > 0".to_owned());
        }
        Some(false) => conds.push("t.error_count = 0".to_owned()),
        None => {}
    }
    if let Some(id) = q.trace_id {
        let p = arg(Value::Integer(id_to_sql(id)), &mut args);
        conds.push(format!("t.trace_id = {p}"));
    }
    if let Some(min) = q.min_duration_ns {
        let p = arg(Value::Integer(min), &mut args);
        conds.push(format!("t.end - t.start >= {p}"));
    }
    if let Some(max) = q.max_duration_ns {
        let p = arg(Value::Integer(max), &mut args);
        conds.push(format!("t.end - t.start <= {p}"));
    }
    if let Some((start, id)) = q.cursor {
        let s = arg(Value::Integer(start), &mut args);
        let i = arg(Value::Integer(id_to_sql(id)), &mut args);
        conds.push(format!("(t.start < {s} OR (t.start = {s} AND t.trace_id < {i}))"));
    }
    // A range of spans(service, resource, start) gives a small set of traces, unless the
    // erroneous traces (their own small index) are fewer: then each is checked.
    // The trace filter's bits of every value asked for: a trace without them cannot match.
    let mut want = codec::Filter::default();
    for (key, v) in [
        (codec::Filter::SERVICE, &q.service),
        (codec::Filter::RESOURCE, &q.resource),
        (codec::Filter::OPERATION, &q.operation),
    ] {
        if let Some(v) = v {
            want.add(key, v);
        }
    }
    for (k, v) in q.tags.iter().filter(|(k, _)| !codec::Filter::skips(k)) {
        want.add(k, v);
    }
    for (i, &mask) in want.0.iter().enumerate().filter(|(_, m)| **m != 0) {
        let m = arg(Value::Integer(mask), &mut args);
        conds.push(format!("(t.f{i} & {m}) = {m}"));
    }
    let span_filter = q.service.is_some() || q.resource.is_some() || q.operation.is_some() || !q.tags.is_empty();
    sql.push_str(&format!(
        " WHERE {} ORDER BY t.start DESC, t.trace_id DESC",
        conds.join(" AND ")
    ));
    if !span_filter {
        let limit = arg(Value::Integer(q.limit as i64 + 1), &mut args);
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut chunks = conn.prepare_cached("SELECT spans FROM chunks WHERE trace_id = ?1")?;
    let mut rows = stmt.query(params_from_iter(args.iter()))?;
    let mut traces: Vec<TraceHit> = Vec::new();
    let mut next_cursor = None;
    let mut scanned = 0usize;
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let start: i64 = r.get(4)?;
        if span_filter {
            scanned += 1;
            blobs.clear();
            for blob in chunks.query_map(params![id], |c| c.get::<_, Vec<u8>>(0))? {
                blobs.push(blob?);
            }
            if !matches(q, &blobs) {
                if scanned >= scan_max {
                    next_cursor = Some(encode_cursor((start, id_from_sql(id))));
                    break;
                }
                continue;
            }
        }
        if traces.len() == q.limit {
            if let Some(last) = traces.last() {
                next_cursor = Some(encode_cursor((last.start_ns, last.trace_id.parse().unwrap_or(0))));
            }
            break;
        }
        let errors = u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0);
        traces.push(TraceHit {
            trace_id: id_from_sql(id).to_string(),
            root_service: r.get(1)?,
            root_resource: r.get(2)?,
            root_operation: r.get(3)?,
            start_ns: start,
            duration_ns: r.get(5)?,
            span_count: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
            error: errors > 0,
            error_count: errors,
        });
        if span_filter && scanned >= scan_max {
            next_cursor = Some(encode_cursor((start, id_from_sql(id))));
            break;
        }
    }
    Ok(SearchResult { traces, next_cursor })
}

/// Whether a trace's spans (its chunks' blobs) pass the span filters (one span with the
/// service, resource and operation asked) and each tag filter (any span with that tag).
fn matches(q: &SearchQuery, blobs: &[Vec<u8>]) -> bool {
    let spans = || blobs.iter().flat_map(|b| codec::spans(b));
    let wanted = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    if (q.service.is_some() || q.resource.is_some() || q.operation.is_some())
        && !spans()
            .any(|s| wanted(&q.service, s.service) && wanted(&q.resource, s.resource) && wanted(&q.operation, s.name))
    {
        return false;
    }
    q.tags
        .iter()
        .all(|(k, v)| spans().any(|s| s.meta_get(k) == Some(v.as_str())))
}

#[cfg(test)]
mod tests {
    use super::super::prepare::Prepared;
    use super::super::writer::{Msg, write_messages};
    use super::*;
    use crate::upstream::pb;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_span_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_span_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_span_duration("300us"), Ok(300_000));
        assert_eq!(parse_span_duration("300µs"), Ok(300_000));
        assert_eq!(parse_span_duration("40ns"), Ok(40));
        assert!(parse_span_duration("40").is_err());
        assert!(parse_span_duration("4h").is_err());
        assert!(parse_span_duration("-1s").is_err());
    }

    #[test]
    fn parameters() {
        let q = SearchQuery::from_params(&p(&[
            ("window", "1d"),
            ("service", "shop"),
            ("tag", "http.status_code:500"),
            ("tag", "peer.service:db:main"),
            ("min_duration", "10ms"),
            ("error", "true"),
            ("trace_id", "0000000000000000000000000000002a"),
            ("limit", "100000"),
            ("cursor", "123-45"),
            ("resource", ""),
        ]))
        .unwrap();
        assert_eq!(q.window, Window::OneDay);
        assert_eq!(q.service.as_deref(), Some("shop"));
        assert_eq!(q.resource, None);
        assert_eq!(
            q.tags,
            vec![
                ("http.status_code".to_owned(), "500".to_owned()),
                ("peer.service".to_owned(), "db:main".to_owned())
            ]
        );
        assert_eq!(
            (q.min_duration_ns, q.error, q.trace_id),
            (Some(10_000_000), Some(true), Some(42))
        );
        assert_eq!((q.limit, q.cursor), (MAX_LIMIT, Some((123, 45))));
        for bad in [
            ("tag", "nocolon"),
            ("tag", "\"x:1"),
            ("error", "maybe"),
            ("cursor", "x"),
            ("window", "2w"),
        ] {
            let e = SearchQuery::from_params(&p(&[bad])).unwrap_err();
            assert!(e.contains(bad.0), "{e}");
        }
        let back = SearchQuery::from_params(&query_params(&q.to_query_string())).unwrap();
        assert_eq!(back, SearchQuery { cursor: None, ..q });
    }

    fn query_params(s: &str) -> Vec<(String, String)> {
        crate::local::web::html::query_params(Some(s))
    }

    const SEC: i64 = 1_000_000_000;

    fn tagged(trace: u64, id: u64, parent: u64, start: i64, tags: &[(&str, &str)]) -> pb::Span {
        let mut s = crate::local::tests::span(trace, id, parent, ("web", "op", "res"), start, SEC / 10);
        s.meta
            .extend(tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        s
    }

    /// Writes each chunk as the writer does (one chunk per payload).
    fn db(chunks: Vec<Vec<pb::Span>>) -> Connection {
        let mut conn = super::super::schema::open_memory().unwrap();
        let msgs: Vec<Msg> = chunks
            .into_iter()
            .map(|spans| {
                let p = pb::TracerPayload {
                    chunks: vec![pb::TraceChunk {
                        priority: 1,
                        spans,
                        ..pb::TraceChunk::default()
                    }],
                    ..pb::TracerPayload::default()
                };
                Msg::Traces(Box::new(Prepared::from_pb(&p, false)))
            })
            .collect();
        write_messages(&mut conn, &msgs).unwrap();
        conn
    }

    fn found(conn: &Connection, tags: &[(&str, &str)], now: i64) -> Vec<String> {
        let mut params = p(&[("window", "1h")]);
        params.extend(tags.iter().map(|(k, v)| ("tag".to_owned(), format!("{k}:{v}"))));
        let q = SearchQuery::from_params(&params).unwrap();
        search(conn, &q, now)
            .unwrap()
            .traces
            .into_iter()
            .map(|h| h.trace_id)
            .collect()
    }

    #[test]
    fn tags_are_found_in_any_chunk_of_a_trace() {
        let now = 10_000 * SEC;
        let long = "x".repeat(300);
        let conn = db(vec![
            // Trace 1 in two chunks (a partial flush): the child first, then the root.
            vec![tagged(
                1,
                11,
                10,
                now - 20 * SEC,
                &[("peer.service", "pg"), ("user.id", "u1")],
            )],
            vec![tagged(1, 10, 0, now - 21 * SEC, &[("user.id", "u1"), ("sql", &long)])],
            vec![tagged(
                2,
                20,
                0,
                now - 10 * SEC,
                &[("user.id", "u2"), ("note", "a\"b:c"), ("_dd.p.dm", "-4")],
            )],
        ]);
        assert_eq!(found(&conn, &[("user.id", "u1")], now), ["1"]);
        assert_eq!(found(&conn, &[("peer.service", "pg")], now), ["1"]);
        // Two tags on two chunks of one trace.
        assert_eq!(found(&conn, &[("peer.service", "pg"), ("sql", &long)], now), ["1"]);
        assert_eq!(found(&conn, &[("sql", &long)], now), ["1"]);
        assert_eq!(found(&conn, &[("note", "a\"b:c")], now), ["2"]);
        assert_eq!(found(&conn, &[("_dd.p.dm", "-4")], now), ["2"]);
        assert_eq!(found(&conn, &[("_dd.p.dm", "-4"), ("user.id", "u2")], now), ["2"]);
        assert_eq!(found(&conn, &[("env", "test")], now), ["2", "1"]);
        assert!(found(&conn, &[("user.id", "u2"), ("peer.service", "pg")], now).is_empty());
        assert!(found(&conn, &[("user.id", "U1")], now).is_empty());
        assert!(found(&conn, &[("sql", "x")], now).is_empty());
        // Outside the window.
        assert!(found(&conn, &[("user.id", "u1")], now + 3600 * SEC).is_empty());
    }

    #[test]
    fn a_page_checks_at_most_scan_max_traces_and_gives_a_cursor_to_go_on() {
        let now = 10_000 * SEC;
        // Traces 1..=10, one a second, each with a `web` span of resource `res` and a `db`
        // span: the filter words pass every trace for `service=db&resource=res`, only the
        // spans of 2 and 9 (their `db` span has resource `res`) match.
        let span = crate::local::tests::span;
        let conn = db((1..=10u64)
            .map(|t| {
                let start = now - (20 - t as i64) * SEC;
                let db_resource = if t == 2 || t == 9 { "res" } else { "q" };
                vec![
                    span(t, t * 10, 0, ("web", "op", "res"), start, SEC),
                    span(t, t * 10 + 1, t * 10, ("db", "op", db_resource), start, SEC),
                ]
            })
            .collect());
        let mut q = SearchQuery::from_params(&p(&[("window", "1h"), ("service", "db"), ("resource", "res")])).unwrap();
        let mut pages = Vec::new();
        loop {
            let page = search_within(&conn, &q, now, 3).unwrap();
            pages.push(page.traces.iter().map(|h| h.trace_id.clone()).collect::<Vec<_>>());
            match page.next_cursor {
                Some(c) => q.cursor = decode_cursor(&c),
                None => break,
            }
        }
        // 10, 9, 8 | 7, 6, 5 | 4, 3, 2 | 1: each page stops after 3 traces checked.
        assert_eq!(pages, [vec!["9"], vec![], vec!["2"], vec![]]);
        // Without a span filter the budget does not apply.
        let all = SearchQuery::from_params(&p(&[("window", "1h")])).unwrap();
        assert_eq!(search_within(&conn, &all, now, 3).unwrap().traces.len(), 10);
    }

    #[test]
    fn retention_deletes_the_blobs_with_their_traces() {
        let now = 10_000 * SEC;
        let mut conn = db(vec![
            vec![tagged(1, 10, 0, now - 7200 * SEC, &[("user.id", "u1")])],
            vec![tagged(2, 20, 0, now - 10 * SEC, &[("user.id", "u2")])],
        ]);
        let policy = super::super::retention::RetentionPolicy {
            max_age: std::time::Duration::from_secs(3600),
            max_size_bytes: u64::MAX,
        };
        let report = super::super::retention::retain(&mut conn, now, policy).unwrap();
        assert_eq!((report.traces, report.spans), (1, 1));
        let chunks: Vec<i64> = conn
            .prepare("SELECT trace_id FROM chunks")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(chunks, [2]);
        assert_eq!(found(&conn, &[("user.id", "u2")], now), ["2"]);
        assert!(found(&conn, &[("user.id", "u1")], now + 7200 * SEC).is_empty());
    }
}
