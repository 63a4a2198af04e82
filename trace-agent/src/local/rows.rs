//! Rows into the database: the prepared trace chunks of a write batch ([`super::prepare`])
//! into `chunks` (one compact blob of spans per chunk, [`super::codec`]), `traces` (one
//! summary per trace) and `resource_spans` (the spans the resource page lists) rows, stats
//! payloads into `stats` rows, in one transaction (see [`write_messages`]); the writer thread
//! ([`super::writer`]) calls it per batch. A span costs no B-tree insert of its own: a chunk is two (its row and the
//! `chunks_trace` index), its trace two or three, each listed span one.

use crate::upstream::pb;
use rusqlite::{Connection, Transaction, params};

use super::prepare::{ChunkRows, Prepared};
use super::writer::{Msg, Written};

/// Writes trace and stats messages in one transaction. The batch's trace chunks are written
/// in trace id order: the random keys of `traces` and `chunks_trace` then walk each index
/// once, front to back, instead of jumping to a random page per row. Trace payloads come
/// prepared ([`Prepared`]): this only binds values and steps statements.
pub(crate) fn write_messages(conn: &mut Connection, data: &[Msg]) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut w = Written::default();
    {
        let mut chunks: Vec<(&Prepared, &ChunkRows)> = Vec::new();
        for m in data {
            match m {
                Msg::Traces(p) => {
                    w.trace_payloads += 1;
                    w.chunks += p.chunk_count();
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
        chunks.sort_by_key(|(_, c)| id_to_sql(c.trace_id));
        let mut rows = TraceRows::prepare(&tx)?;
        for (p, chunk) in chunks {
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

/// The statements of one transaction's trace rows, prepared once.
struct TraceRows<'t> {
    chunk: rusqlite::CachedStatement<'t>,
    listed: rusqlite::CachedStatement<'t>,
    trace: rusqlite::CachedStatement<'t>,
}

impl<'t> TraceRows<'t> {
    fn prepare(tx: &'t Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            chunk: tx.prepare_cached(INSERT_CHUNK)?,
            listed: tx.prepare_cached(INSERT_LISTED)?,
            trace: tx.prepare_cached(UPSERT_TRACE)?,
        })
    }

    /// Writes one chunk's rows; returns its spans.
    fn insert_chunk(&mut self, p: &Prepared, c: &ChunkRows) -> rusqlite::Result<u64> {
        let trace_id = id_to_sql(c.trace_id);
        for l in p.listed.get(c.listed.clone()).unwrap_or_default() {
            self.listed.execute(params![
                p.text(l.service),
                p.text(l.resource),
                p.text(l.name),
                l.start,
                trace_id,
                id_to_sql(l.span_id),
                l.duration,
                l.error,
                l.error_type.map(|t| p.text(t)),
                l.error_message.map(|t| p.text(t)),
            ])?;
        }
        self.chunk
            .execute(params![trace_id, p.blobs.get(c.blob.clone()).unwrap_or_default()])?;
        let root = c.root.as_ref();
        let f = c.filter.0;
        self.trace.execute(params![
            trace_id,
            id_to_sql(c.trace_id_high),
            c.start,
            c.end,
            root.map_or(0, |r| r.rank),
            root.map(|r| p.text(r.service)),
            root.map(|r| p.text(r.name)),
            root.map(|r| p.text(r.resource)),
            root.map(|r| r.duration),
            p.text(c.env),
            i64::try_from(c.spans).unwrap_or(i64::MAX),
            c.errors,
            f[0],
            f[1],
            f[2],
            f[3],
        ])?;
        Ok(c.spans)
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
