//! The writer thread: takes payloads from the bounded queue, writes them in batches (one
//! transaction per batch, rows made by [`super::rows`]) and runs retention periodically.
//! Payloads become rows here, off the ingest path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::upstream::pb;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::prepare::Prepared;
pub(crate) use super::rows::{id_from_sql, id_to_sql, write_messages};
use super::state::Inner;

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Kept trace chunks, as rows ready to bind.
    Traces(Box<Prepared>),
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

    /// Bytes of database pages it will write, about (what a batch and the room made before
    /// it are measured in): trace payloads by their rows ([`Prepared::disk_bytes`]), not by
    /// their buffers in memory.
    fn disk_bytes(&self) -> usize {
        match &self.msg {
            Msg::Traces(p) => p.disk_bytes(),
            _ => self.bytes,
        }
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
    // A batch is at most an eighth of the size cap, so that the cap plus one batch bounds the
    // files whatever the configured batch size (a quarter left too little room for the pages
    // the size pass rewrites on top of a batch with 16 KiB pages: hostile case 10 saw
    // 28-30 MB for a 16 MiB cap).
    let cap = inner.config.max_size_bytes;
    let batch_max_bytes = inner
        .config
        .batch_max_bytes
        .min(usize::try_from(cap / 8).unwrap_or(usize::MAX))
        .max(1);
    loop {
        let wait = next_retention.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let mut bytes = first.disk_bytes();
                batch.push(first);
                while batch.len() < inner.config.batch_max.max(1) && bytes < batch_max_bytes {
                    match rx.try_recv() {
                        Ok(m) => {
                            bytes += m.disk_bytes();
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
                        crate::upstream::spool::RecordKind::Traces => pb::TracerPayload::decode(r.body.as_slice())
                            .map(|p| Msg::Traces(Box::new(Prepared::from_pb(&p, inner.ledger.get().is_some())))),
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
                    ledger.written("local", &p.ledger);
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
