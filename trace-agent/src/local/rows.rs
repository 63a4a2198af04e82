//! Payloads into rows: the trace chunks of a write batch into `spans`, `traces` and
//! `trace_tags` rows, stats payloads into `stats` rows, in one transaction (see
//! [`write_messages`]); the writer thread ([`super::writer`]) calls it per batch.

use std::collections::HashSet;

use crate::upstream::pb;
use rusqlite::{Connection, Transaction, params};

use super::schema::{tag_hash, tag_indexed};
use super::writer::{Msg, Written};

/// Writes trace and stats messages in one transaction. The batch's trace chunks are written
/// in trace id order and its tag rows in tag order: the random keys then walk each index
/// once, front to back, instead of jumping to a random page per row.
pub(crate) fn write_messages(conn: &mut Connection, data: &[Msg]) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut w = Written::default();
    {
        let mut chunks: Vec<(&pb::TracerPayload, &pb::TraceChunk)> = Vec::new();
        for m in data {
            match m {
                Msg::Traces(p) => {
                    w.trace_payloads += 1;
                    chunks.extend(p.chunks.iter().map(|c| (&**p, c)));
                }
                Msg::Stats(p) => {
                    w.stats_payloads += 1;
                    w.stats_groups += insert_stats(&tx, p)?;
                }
                Msg::Sync(_) | Msg::Shutdown(_) => {}
            }
        }
        // Stable: the chunks of one trace keep their arrival order.
        chunks.sort_by_key(|(_, c)| c.spans.first().map_or(0, |s| id_to_sql(s.trace_id)));
        let mut rows = TraceRows::prepare(&tx)?;
        for (p, chunk) in chunks {
            w.chunks += 1;
            w.spans += rows.insert_chunk(p, chunk)?;
        }
        rows.insert_tags()?;
    }
    tx.commit()?;
    Ok(w)
}

/// A u64 id as SQLite's signed integer (bit-for-bit).
pub(crate) fn id_to_sql(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

/// Back from [`id_to_sql`].
pub(crate) fn id_from_sql(id: i64) -> u64 {
    u64::from_ne_bytes(id.to_ne_bytes())
}

/// The high 64 bits of a 128-bit trace id (`_dd.p.tid`, hex), 0 when absent or malformed.
fn trace_id_high(payload: &pb::TracerPayload, chunk: &pb::TraceChunk) -> u64 {
    chunk
        .tags
        .get("_dd.p.tid")
        .or_else(|| chunk.spans.iter().find_map(|s| s.meta.get("_dd.p.tid")))
        .or_else(|| payload.tags.get("_dd.p.tid"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

const INSERT_SPAN: &str = "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, service, name, resource, \
     type, start, duration, error, meta, metrics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const INSERT_TAG: &str = "INSERT OR IGNORE INTO trace_tags (tag, start, trace_id) VALUES (?1, ?2, ?3)";

const UPSERT_TRACE: &str = "INSERT INTO traces (trace_id, trace_id_high, start, end, root_rank, root_service, \
     root_name, root_resource, root_duration, env, span_count, error_count) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (trace_id) DO UPDATE SET \
       trace_id_high = max(trace_id_high, excluded.trace_id_high), \
       start = min(start, excluded.start), \
       end = max(end, excluded.end), \
       root_service = CASE WHEN excluded.root_rank > root_rank THEN excluded.root_service ELSE root_service END, \
       root_name = CASE WHEN excluded.root_rank > root_rank THEN excluded.root_name ELSE root_name END, \
       root_resource = CASE WHEN excluded.root_rank > root_rank THEN excluded.root_resource ELSE root_resource END, \
       root_duration = CASE WHEN excluded.root_rank > root_rank THEN excluded.root_duration ELSE root_duration END, \
       root_rank = max(root_rank, excluded.root_rank), \
       span_count = span_count + excluded.span_count, \
       error_count = error_count + excluded.error_count";

/// The statements of one transaction's trace rows, prepared once, and the buffers reused
/// from span to span.
struct TraceRows<'t> {
    span: rusqlite::CachedStatement<'t>,
    tag: rusqlite::CachedStatement<'t>,
    trace: rusqlite::CachedStatement<'t>,
    meta: String,
    metrics: String,
    /// Distinct tags of the chunk being written.
    tags: HashSet<i64>,
    /// The batch's `trace_tags` rows (tag, start, trace id), written last, sorted.
    tag_rows: Vec<(i64, i64, i64)>,
    ids: HashSet<u64>,
}

impl<'t> TraceRows<'t> {
    fn prepare(tx: &'t Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            span: tx.prepare_cached(INSERT_SPAN)?,
            tag: tx.prepare_cached(INSERT_TAG)?,
            trace: tx.prepare_cached(UPSERT_TRACE)?,
            meta: String::with_capacity(1024),
            metrics: String::with_capacity(256),
            tags: HashSet::new(),
            tag_rows: Vec::new(),
            ids: HashSet::new(),
        })
    }

    fn insert_chunk(&mut self, payload: &pb::TracerPayload, chunk: &pb::TraceChunk) -> rusqlite::Result<u64> {
        let Some(first) = chunk.spans.first() else {
            return Ok(0);
        };
        let mut start = i64::MAX;
        let mut end = i64::MIN;
        let mut errors = 0i64;
        // Distinct indexed string tags of the chunk (`trace_tags`), by hash.
        self.tags.clear();
        for s in &chunk.spans {
            self.tags.extend(
                s.meta
                    .iter()
                    .filter(|(k, v)| tag_indexed(k, v))
                    .map(|(k, v)| tag_hash(k, v)),
            );
            json_strings(&mut self.meta, &s.meta);
            json_numbers(&mut self.metrics, &s.metrics);
            self.span.execute(params![
                id_to_sql(s.trace_id),
                id_to_sql(s.span_id),
                id_to_sql(s.parent_id),
                s.service,
                s.name,
                s.resource,
                s.r#type,
                s.start,
                s.duration,
                s.error,
                self.meta,
                self.metrics,
            ])?;
            start = start.min(s.start);
            end = end.max(s.start.saturating_add(s.duration));
            errors += i64::from(s.error != 0);
        }
        let trace_id = id_to_sql(first.trace_id);
        self.tag_rows
            .extend(self.tags.iter().map(|&tag| (tag, start, trace_id)));
        // The root: the span without a parent (rank 2), else one whose parent is not in this
        // chunk (rank 1: a partial flush, or a service called by another one).
        self.ids.clear();
        self.ids.extend(chunk.spans.iter().map(|s| s.span_id));
        let ids = &self.ids;
        let root = chunk
            .spans
            .iter()
            .find(|s| s.parent_id == 0)
            .map(|s| (s, 2))
            .or_else(|| chunk.spans.iter().find(|s| !ids.contains(&s.parent_id)).map(|s| (s, 1)));
        let env = chunk
            .spans
            .iter()
            .find_map(|s| s.meta.get("env"))
            .unwrap_or(&payload.env);
        self.trace.execute(params![
            id_to_sql(first.trace_id),
            id_to_sql(trace_id_high(payload, chunk)),
            start,
            end,
            root.map_or(0, |(_, r)| r),
            root.map(|(s, _)| s.service.as_str()),
            root.map(|(s, _)| s.name.as_str()),
            root.map(|(s, _)| s.resource.as_str()),
            root.map(|(s, _)| s.duration),
            env,
            chunk.spans.len() as i64,
            errors,
        ])?;
        Ok(chunk.spans.len() as u64)
    }
}

impl TraceRows<'_> {
    /// Writes the batch's tag rows, in index order.
    fn insert_tags(&mut self) -> rusqlite::Result<()> {
        self.tag_rows.sort_unstable();
        for (tag, start, trace_id) in self.tag_rows.drain(..) {
            self.tag.execute(params![tag, start, trace_id])?;
        }
        Ok(())
    }
}

/// `map` as a JSON object with sorted keys into `out` (cleared first): the text
/// `serde_json::to_string` gives for a `BTreeMap` (search relies on its escaping), without
/// the map and string copies.
fn json_strings(out: &mut String, map: &std::collections::HashMap<String, String>) {
    json_object(out, map.iter().map(|(k, v)| (k.as_str(), v.as_str())), json_str);
}

/// Like [`json_strings`] for the numeric tags; non-finite values (not JSON) are left out.
fn json_numbers(out: &mut String, map: &std::collections::HashMap<String, f64>) {
    let finite = map.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.as_str(), *v));
    json_object(out, finite, |out, v| {
        // serde_json's number text (shortest round-trip, `1.0` for integers).
        if let Some(n) = serde_json::Number::from_f64(v) {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
    });
}

/// The pairs as a JSON object sorted by key into `out` (cleared first), values written by `value`.
fn json_object<'a, V>(out: &mut String, pairs: impl Iterator<Item = (&'a str, V)>, value: impl Fn(&mut String, V)) {
    let mut pairs: Vec<(&str, V)> = pairs.collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.clear();
    out.push('{');
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        value(out, v);
    }
    out.push('}');
}

/// `s` as a JSON string, escaped as serde_json does (`"`, `\\`, control characters).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

fn insert_stats(tx: &Transaction<'_>, payload: &pb::StatsPayload) -> rusqlite::Result<u64> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO stats (bucket_start, bucket_duration, env, version, service, name, resource, type, \
         http_status_code, span_kind, is_trace_root, synthetics, hits, errors, duration, top_level_hits, \
         ok_summary, error_summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
         ?15, ?16, ?17, ?18)",
    )?;
    let env_of = |cs: &pb::ClientStatsPayload| {
        if cs.env.is_empty() {
            payload.agent_env.clone()
        } else {
            cs.env.clone()
        }
    };
    let sat = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let blob = |b: &Vec<u8>| (!b.is_empty()).then(|| b.clone());
    let mut groups = 0;
    for cs in &payload.stats {
        let env = env_of(cs);
        for bucket in &cs.stats {
            for g in &bucket.stats {
                let service = if g.service.is_empty() { &cs.service } else { &g.service };
                stmt.execute(params![
                    sat(bucket.start),
                    sat(bucket.duration),
                    env,
                    cs.version,
                    service,
                    g.name,
                    g.resource,
                    g.r#type,
                    g.http_status_code,
                    g.span_kind,
                    g.is_trace_root,
                    g.synthetics,
                    sat(g.hits),
                    sat(g.errors),
                    sat(g.duration),
                    sat(g.top_level_hits),
                    blob(&g.ok_summary),
                    blob(&g.error_summary),
                ])?;
                groups += 1;
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn tags_are_encoded_as_serde_json_encodes_a_sorted_map() {
        let meta: HashMap<String, String> = [
            ("b", "plain"),
            ("a", "quote \" backslash \\ slash /"),
            ("c\n", "tab\t cr\r nl\n bs\u{8} ff\u{c} nul\u{0} us\u{1f} del\u{7f} é ✓"),
            ("", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let metrics: HashMap<String, f64> = [
            ("x", 1.0),
            ("y", -0.5),
            ("z", 1e300),
            ("nan", f64::NAN),
            ("i", f64::INFINITY),
            ("big", 12345678901234567.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut out = String::from("stale");
        super::json_strings(&mut out, &meta);
        assert_eq!(
            out,
            serde_json::to_string(&meta.iter().collect::<BTreeMap<_, _>>()).unwrap()
        );
        super::json_numbers(&mut out, &metrics);
        let finite: BTreeMap<&String, f64> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k, *v))
            .collect();
        assert_eq!(out, serde_json::to_string(&finite).unwrap());
        super::json_strings(&mut out, &HashMap::new());
        assert_eq!(out, "{}");
    }
}
