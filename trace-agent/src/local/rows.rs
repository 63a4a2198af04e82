//! Payloads into rows: the trace chunks of a write batch into `chunks` (one compact blob of
//! spans per chunk, [`super::codec`]), `traces` (one summary per trace) and `resource_spans`
//! (the spans the resource page lists) rows, stats payloads into `stats` rows, in one
//! transaction (see [`write_messages`]); the writer thread ([`super::writer`]) calls it per
//! batch. A span costs no B-tree insert of its own: a chunk is two (its row and the
//! `chunks_trace` index), its trace two or three, each listed span one.

use std::collections::HashMap;

use crate::upstream::pb;
use rusqlite::{Connection, Transaction, params};

use super::codec;
use super::writer::{Msg, Written};

/// Writes trace and stats messages in one transaction. The batch's trace chunks are written
/// in trace id order: the random keys of `traces` and `chunks_trace` then walk each index
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

/// Whether the resource page lists `span` (a `resource_spans` row): the spans stats are
/// computed for — top-level in its chunk (no parent there, or a parent of another service),
/// marked top-level or measured by the tracer, or of a client/server/producer/consumer kind.
fn listed(span: &pb::Span, parent_service: Option<&str>) -> bool {
    let flag = |k: &str| span.metrics.get(k).is_some_and(|v| *v == 1.0);
    parent_service.is_none_or(|p| p != span.service)
        || flag("_top_level")
        || flag("_dd.measured")
        || span
            .meta
            .get("span.kind")
            .is_some_and(|k| matches!(k.as_str(), "server" | "client" | "producer" | "consumer"))
}

const INSERT_CHUNK: &str = "INSERT INTO chunks (trace_id, spans) VALUES (?1, ?2)";

const INSERT_LISTED: &str = "INSERT OR REPLACE INTO resource_spans (service, resource, name, start, trace_id, \
     span_id, duration, error, error_type, error_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const UPSERT_TRACE: &str = "INSERT INTO traces (trace_id, trace_id_high, start, end, root_rank, root_service, \
     root_name, root_resource, root_duration, env, span_count, error_count, f0, f1, f2, f3) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
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
       error_count = error_count + excluded.error_count, \
       f0 = f0 | excluded.f0, f1 = f1 | excluded.f1, f2 = f2 | excluded.f2, f3 = f3 | excluded.f3";

/// The statements of one transaction's trace rows, prepared once, and the buffers reused
/// from chunk to chunk.
struct TraceRows<'t> {
    chunk: rusqlite::CachedStatement<'t>,
    listed: rusqlite::CachedStatement<'t>,
    trace: rusqlite::CachedStatement<'t>,
    blob: Vec<u8>,
    /// Position of each span id in the chunk being written.
    index: HashMap<u64, usize>,
}

impl<'t> TraceRows<'t> {
    fn prepare(tx: &'t Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            chunk: tx.prepare_cached(INSERT_CHUNK)?,
            listed: tx.prepare_cached(INSERT_LISTED)?,
            trace: tx.prepare_cached(UPSERT_TRACE)?,
            blob: Vec::with_capacity(16 << 10),
            index: HashMap::new(),
        })
    }

    fn insert_chunk(&mut self, payload: &pb::TracerPayload, chunk: &pb::TraceChunk) -> rusqlite::Result<u64> {
        let Some(first) = chunk.spans.first() else {
            return Ok(0);
        };
        let trace_id = id_to_sql(first.trace_id);
        let mut start = i64::MAX;
        let mut end = i64::MIN;
        let mut errors = 0i64;
        let mut filter = codec::Filter::default();
        self.blob.clear();
        self.index.clear();
        self.index
            .extend(chunk.spans.iter().enumerate().map(|(i, s)| (s.span_id, i)));
        let parent_of = |s: &pb::Span| {
            (s.parent_id != 0)
                .then(|| self.index.get(&s.parent_id).and_then(|&i| chunk.spans.get(i)))
                .flatten()
        };
        for s in &chunk.spans {
            codec::encode_span(&mut self.blob, s);
            filter.add_span(s);
            start = start.min(s.start);
            end = end.max(s.start.saturating_add(s.duration));
            errors += i64::from(s.error != 0);
            if listed(s, parent_of(s).map(|p| p.service.as_str())) {
                let message = s.meta.get("error.message").or_else(|| s.meta.get("error.msg"));
                self.listed.execute(params![
                    s.service,
                    s.resource,
                    s.name,
                    s.start,
                    trace_id,
                    id_to_sql(s.span_id),
                    s.duration,
                    s.error,
                    s.meta.get("error.type"),
                    message,
                ])?;
            }
        }
        self.chunk.execute(params![trace_id, self.blob])?;
        // The root: the span without a parent (rank 2), else one whose parent is not in this
        // chunk (rank 1: a partial flush, or a service called by another one).
        let root = chunk
            .spans
            .iter()
            .find(|s| s.parent_id == 0)
            .map(|s| (s, 2))
            .or_else(|| {
                (chunk.spans.iter())
                    .find(|s| !self.index.contains_key(&s.parent_id))
                    .map(|s| (s, 1))
            });
        let env = chunk
            .spans
            .iter()
            .find_map(|s| s.meta.get("env"))
            .unwrap_or(&payload.env);
        self.trace.execute(params![
            trace_id,
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
            filter.0[0],
            filter.0[1],
            filter.0[2],
            filter.0[3],
        ])?;
        Ok(chunk.spans.len() as u64)
    }
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
