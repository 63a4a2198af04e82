//! The writer thread: takes payloads from the bounded queue, writes them in batches (one
//! transaction per batch) and runs retention periodically. Converts the protobuf payloads into
//! rows here, off the ingest path.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::upstream::pb;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{Connection, Transaction, params};

use super::schema::{tag_hash, tag_indexed};
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
    let mut pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.clear();
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push('}');
}

/// Like [`json_strings`] for the numeric tags; non-finite values (not JSON) are left out.
fn json_numbers(out: &mut String, map: &std::collections::HashMap<String, f64>) {
    let mut pairs: Vec<(&str, f64)> = map
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.clear();
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        // serde_json's number text (shortest round-trip, `1.0` for integers).
        if let Some(n) = serde_json::Number::from_f64(*v) {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
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
