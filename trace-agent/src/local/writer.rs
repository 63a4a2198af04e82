//! The writer thread: takes payloads from the bounded queue, writes them in batches (one
//! transaction per batch) and runs retention periodically. Converts the protobuf payloads into
//! rows here, off the ingest path.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::upstream::pb;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{Connection, Transaction, params};

use super::schema::MAX_INDEXED_TAG_BYTES;
use super::store::Inner;

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Kept trace chunks.
    Traces(Arc<pb::TracerPayload>),
    /// A stats flush.
    Stats(Arc<pb::StatsPayload>),
    /// Reply once everything queued before it is written.
    Sync(Sender<()>),
    /// Write what is queued, then stop.
    Shutdown(Sender<()>),
}

/// A message with what it counts for in the queue's bounds.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) msg: Msg,
    /// Estimated bytes in memory.
    pub(crate) bytes: usize,
    /// Trace chunks inside.
    pub(crate) chunks: u64,
}

impl Queued {
    /// A control message (sync, shutdown): not counted in the bounds.
    pub(crate) fn control(msg: Msg) -> Self {
        Self {
            msg,
            bytes: 0,
            chunks: 0,
        }
    }

    fn is_data(&self) -> bool {
        matches!(self.msg, Msg::Traces(_) | Msg::Stats(_))
    }
}

/// What one batch wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) trace_payloads: u64,
    pub(crate) chunks: u64,
    pub(crate) spans: u64,
    pub(crate) stats_payloads: u64,
    pub(crate) stats_groups: u64,
}

/// Bytes on disk: the database file and its WAL.
pub(crate) fn disk_bytes(inner: &Inner) -> u64 {
    let db = inner.config.db_path();
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    let len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    len(&db) + len(std::path::Path::new(&wal))
}

/// Runs until a [`Msg::Shutdown`] arrives or every sender is gone: opens the file when the
/// open was deferred, writes back the spool, runs the first retention pass, then writes
/// batches (bounded in payloads and bytes), keeps the files under the size cap after every
/// batch and runs the age retention every `retention_interval`.
pub(crate) fn run(inner: &Inner, rx: &Receiver<Queued>) {
    if inner.opening.load(Ordering::Acquire) {
        inner.open_file_now();
    }
    replay_spool(inner);
    // First retention pass: a restart after a long pause sheds the expired data at once.
    inner.retain_now(SystemTime::now());
    inner.set_size(disk_bytes(inner));
    let interval = inner.config.retention_interval.max(Duration::from_millis(10));
    let mut next_retention = Instant::now() + interval;
    let mut batch: Vec<Queued> = Vec::with_capacity(inner.config.batch_max);
    // A batch is at most a quarter of the size cap, so that the cap plus one batch bounds the
    // files whatever the configured batch size.
    let cap = inner.config.max_size_bytes;
    let batch_max_bytes = inner
        .config
        .batch_max_bytes
        .min(usize::try_from(cap / 4).unwrap_or(usize::MAX))
        .max(1);
    loop {
        let wait = next_retention.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let mut bytes = first.bytes;
                batch.push(first);
                while batch.len() < inner.config.batch_max.max(1) && bytes < batch_max_bytes {
                    match rx.try_recv() {
                        Ok(m) => {
                            bytes += m.bytes;
                            batch.push(m);
                        }
                        Err(_) => break,
                    }
                }
                make_room(inner, bytes as u64);
                let stop = write_batch(inner, &mut batch);
                enforce_size(inner);
                if inner.spool_now.load(Ordering::Acquire) && inner.spool.is_some() {
                    spool_rest(inner, rx);
                    return;
                }
                if stop {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                inner.retain_now(SystemTime::now());
                inner.set_size(disk_bytes(inner));
                next_retention = Instant::now() + interval;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Before a batch of about `incoming` bytes: when the files and the batch would pass the cap,
/// deletes the oldest spans first (down to 90 % of the cap less the batch), so that writing
/// the batch does not take the files past the cap plus one batch.
fn make_room(inner: &Inner, incoming: u64) {
    let cap = inner.config.max_size_bytes;
    if disk_bytes(inner).saturating_add(incoming) > cap {
        inner.checkpoint_now();
        inner.shrink_now((cap / 10 * 9).saturating_sub(incoming));
    }
}

/// After a batch: when the files (database + WAL) are past the cap, moves the WAL into the
/// database (truncating it) and, if still past the cap, deletes the oldest spans down to 90 %
/// of it and gives the pages back (vacuum, WAL truncated); when only the WAL is large (a reader
/// held it), checkpoints it. Records the size for `status`.
fn enforce_size(inner: &Inner) {
    let cap = inner.config.max_size_bytes;
    let size = disk_bytes(inner);
    if size > cap {
        // The WAL first: deleting rows writes pages to it, on top of the batch's.
        inner.checkpoint_now();
        if disk_bytes(inner) > cap {
            inner.shrink_now(cap / 10 * 9);
        }
    } else if size > cap / 2 {
        let wal_limit = (cap / 8).min(64 << 20);
        let db = std::fs::metadata(inner.config.db_path()).map_or(0, |m| m.len());
        if size.saturating_sub(db) > wal_limit {
            inner.checkpoint_now();
        }
    }
    inner.set_size(disk_bytes(inner));
}

/// Shutdown past its deadline: everything still queued goes to the spool; sync and shutdown
/// messages are answered.
fn spool_rest(inner: &Inner, rx: &Receiver<Queued>) {
    let mut replies = Vec::new();
    let mut data = Vec::new();
    let mut counted = Vec::new();
    while let Ok(q) = rx.try_recv() {
        match q.msg {
            Msg::Sync(tx) | Msg::Shutdown(tx) => replies.push(tx),
            m => {
                counted.push((q.bytes, q.chunks));
                data.push(m);
            }
        }
    }
    let lost = inner.spool_messages(&data);
    inner.count_lost_at_shutdown(lost);
    for (bytes, chunks) in counted {
        inner.pending.done(bytes, chunks);
    }
    inner.pending.notify();
    for r in replies {
        let _ = r.send(());
    }
}

/// Writes back what the spool holds (payloads a previous shutdown could not write), in
/// batches, oldest first.
fn replay_spool(inner: &Inner) {
    use prost::Message;
    let Some(spool) = &inner.spool else { return };
    let files = spool.files().len();
    if files == 0 {
        return;
    }
    tracing::info!(
        "local store: writing {files} payloads spooled at the last shutdown ({})",
        spool.path().display()
    );
    let mut total = 0;
    loop {
        let mut data = Vec::new();
        while data.len() < inner.config.batch_max.max(1) {
            match spool.take_oldest() {
                Ok(Some(r)) => {
                    let msg = match r.kind {
                        crate::upstream::spool::RecordKind::Traces => {
                            pb::TracerPayload::decode(r.body.as_slice()).map(|p| Msg::Traces(Arc::new(p)))
                        }
                        crate::upstream::spool::RecordKind::Stats => {
                            pb::StatsPayload::decode(r.body.as_slice()).map(|p| Msg::Stats(Arc::new(p)))
                        }
                    };
                    match msg {
                        Ok(m) => data.push(m),
                        Err(e) => tracing::warn!("local store: a spooled payload does not decode, skipped: {e}"),
                    }
                }
                Ok(None) => break,
                Err(path) => tracing::warn!(
                    "local store: spool file {} is not a valid record: removed",
                    path.display()
                ),
            }
        }
        if data.is_empty() {
            break;
        }
        total += data.len() as u64;
        let _ = inner.write(|conn| write_messages(conn, &data), &data);
        inner.count_replayed(data.len() as u64);
        enforce_size(inner);
    }
    tracing::info!("local store: {total} spooled payloads written");
}

/// Writes the data messages of `batch` in one transaction, then answers the sync messages.
/// Returns whether a shutdown was asked.
fn write_batch(inner: &Inner, batch: &mut Vec<Queued>) -> bool {
    let mut replies = Vec::new();
    let mut stop = false;
    let mut data = Vec::with_capacity(batch.len());
    let mut counted = Vec::with_capacity(batch.len());
    for q in batch.drain(..) {
        if q.is_data() {
            counted.push((q.bytes, q.chunks));
        }
        match q.msg {
            Msg::Sync(tx) => replies.push(tx),
            Msg::Shutdown(tx) => {
                replies.push(tx);
                stop = true;
            }
            m => data.push(m),
        }
    }
    if !data.is_empty() && inner.write(|conn| write_messages(conn, &data), &data) {
        // The span ledger: what this run received and the store wrote, per service.
        if let Some(ledger) = inner.ledger.get() {
            for m in &data {
                if let Msg::Traces(p) = m {
                    ledger.written("local", &crate::ledger::count_pb(p));
                }
            }
        }
    }
    for (bytes, chunks) in counted {
        inner.pending.done(bytes, chunks);
    }
    inner.pending.notify();
    for r in replies {
        let _ = r.send(());
    }
    stop
}

/// Writes trace and stats messages in one transaction.
pub(crate) fn write_messages(conn: &mut Connection, data: &[Msg]) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut w = Written::default();
    for m in data {
        match m {
            Msg::Traces(p) => {
                w.trace_payloads += 1;
                for chunk in &p.chunks {
                    w.chunks += 1;
                    w.spans += insert_chunk(&tx, p, chunk)?;
                }
            }
            Msg::Stats(p) => {
                w.stats_payloads += 1;
                w.stats_groups += insert_stats(&tx, p)?;
            }
            Msg::Sync(_) | Msg::Shutdown(_) => {}
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

fn insert_chunk(tx: &Transaction<'_>, payload: &pb::TracerPayload, chunk: &pb::TraceChunk) -> rusqlite::Result<u64> {
    let Some(first) = chunk.spans.first() else {
        return Ok(0);
    };
    let mut span_stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, service, name, resource, type, start, \
         duration, error, meta, metrics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut start = i64::MAX;
    let mut end = i64::MIN;
    let mut errors = 0i64;
    // Distinct string tags of the chunk small enough for `trace_tags`.
    let mut tags: HashSet<(&str, &str)> = HashSet::new();
    for s in &chunk.spans {
        tags.extend(
            s.meta
                .iter()
                .filter(|(k, v)| k.len() <= MAX_INDEXED_TAG_BYTES && v.len() <= MAX_INDEXED_TAG_BYTES)
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // Sorted tags: stable JSON, easier to read.
        let meta: BTreeMap<&String, &String> = s.meta.iter().collect();
        let metrics: BTreeMap<&String, f64> = s
            .metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k, *v))
            .collect();
        let meta = serde_json::to_string(&meta).unwrap_or_else(|_| "{}".to_owned());
        let metrics = serde_json::to_string(&metrics).unwrap_or_else(|_| "{}".to_owned());
        span_stmt.execute(params![
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
            meta,
            metrics,
        ])?;
        start = start.min(s.start);
        end = end.max(s.start.saturating_add(s.duration));
        errors += i64::from(s.error != 0);
    }
    let mut tag_stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO trace_tags (key, value, start, trace_id) VALUES (?1, ?2, ?3, ?4)")?;
    for (k, v) in tags {
        tag_stmt.execute(params![k, v, start, id_to_sql(first.trace_id)])?;
    }
    // The root: the span without a parent (rank 2), else one whose parent is not in this chunk
    // (rank 1: a partial flush, or a service called by another one).
    let ids: HashSet<u64> = chunk.spans.iter().map(|s| s.span_id).collect();
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
    let mut trace_stmt = tx.prepare_cached(
        "INSERT INTO traces (trace_id, trace_id_high, start, end, root_rank, root_service, root_name, \
         root_resource, root_duration, env, span_count, error_count) \
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
           error_count = error_count + excluded.error_count",
    )?;
    trace_stmt.execute(params![
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
