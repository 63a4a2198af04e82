//! The state the store's handle ([`LocalStore`](super::LocalStore)), its writer thread and
//! the web view share: the connections, the counters, what is pending, and the operations
//! on them that count and log (a write transaction, retention, the memory fallback, the
//! spool).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::upstream::spool::{Record, RecordKind, SpoolLane};
use prost::Message;
use rusqlite::Connection;

use super::LocalConfig;
use super::retention::{self, RetentionPolicy, RetentionReport};
use super::schema::{self, StoreError};
use super::store::{StoreMode, lock, open_db, unix_nanos};
use super::writer::{Msg, Queued, Written};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) fallbacks: AtomicU64,
    pub(super) trace_payloads: AtomicU64,
    pub(super) chunks: AtomicU64,
    pub(super) spans: AtomicU64,
    pub(super) stats_payloads: AtomicU64,
    pub(super) stats_groups: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) dropped_traces_full: AtomicU64,
    pub(super) dropped_stats_full: AtomicU64,
    pub(super) dropped_shutdown: AtomicU64,
    pub(super) dropped_traces_error: AtomicU64,
    pub(super) dropped_stats_error: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) retention_runs: AtomicU64,
    pub(super) size_bytes: AtomicU64,
    pub(super) spooled: AtomicU64,
    pub(super) replayed: AtomicU64,
}

/// What was accepted and is not written yet (the queue plus the batch being written).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) payloads: AtomicUsize,
    pub(crate) chunks: AtomicU64,
    pub(crate) bytes: AtomicUsize,
    /// Paired with `room`: the writer notifies after each batch.
    pub(super) lock: Mutex<()>,
    pub(super) room: Condvar,
    /// The same for the receiver's asynchronous wait ([`crate::upstream::Upstream::room_signal`]).
    pub(crate) room_async: Arc<tokio::sync::Notify>,
}

impl Pending {
    pub(crate) fn add(&self, q: &Queued) {
        self.payloads.fetch_add(1, Ordering::AcqRel);
        self.chunks.fetch_add(q.chunks, Ordering::AcqRel);
        self.bytes.fetch_add(q.bytes, Ordering::AcqRel);
    }

    /// Called by the writer once `q` is written (or spooled, or lost).
    pub(crate) fn done(&self, bytes: usize, chunks: u64) {
        self.payloads.fetch_sub(1, Ordering::AcqRel);
        self.chunks.fetch_sub(chunks, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(crate) fn notify(&self) {
        let _g = lock(&self.lock);
        self.room.notify_all();
        self.room_async.notify_waiters();
    }
}

/// The two connections: the writer's and the readers' (the same one in memory).
#[derive(Debug, Clone)]
pub(super) struct Db {
    pub(super) write: Arc<Mutex<Connection>>,
    pub(super) read: Arc<Mutex<Connection>>,
}

/// State shared by the handle, the writer thread and the web view.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: LocalConfig,
    pub(super) db: Mutex<Db>,
    pub(super) mode: Mutex<StoreMode>,
    pub(super) counters: Counters,
    pub(super) deleted: Mutex<RetentionReport>,
    pub(super) last_error: Mutex<Option<(u64, String)>>,
    /// Set once the last write error was logged; cleared by the next success (log once).
    pub(super) error_logged: AtomicBool,
    /// Accepted, not yet written.
    pub(crate) pending: Pending,
    /// Where payloads not written by the shutdown deadline go.
    pub(crate) spool: Option<SpoolLane>,
    /// Set by shutdown when its deadline passed: the writer spools what is left.
    pub(crate) spool_now: AtomicBool,
    /// The writer thread still opens the file (deferred open).
    pub(crate) opening: AtomicBool,
    /// The span ledger, once attached: told what each batch wrote, per service.
    pub(crate) ledger: std::sync::OnceLock<Arc<crate::ledger::Ledger>>,
}

impl Inner {
    pub(super) fn record_error(&self, message: String) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        *lock(&self.last_error) = Some((now, message));
    }

    pub(super) fn fall_back(&self, error: &StoreError) -> Result<(), StoreError> {
        let path = self.config.db_path();
        tracing::error!("{error}. Local mode keeps running IN MEMORY: traces are received and shown, but lost at exit");
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.record_error(error.to_string());
        let conn = Arc::new(Mutex::new(schema::open_memory()?));
        *lock(&self.db) = Db {
            write: Arc::clone(&conn),
            read: conn,
        };
        *lock(&self.mode) = StoreMode::Memory {
            path,
            reason: error.to_string(),
        };
        Ok(())
    }

    /// Runs one write transaction; counts what it wrote, or the loss. A corrupt file switches
    /// the store to memory (the batch is retried there once).
    /// Writes `data` with `f`; returns whether it was written.
    pub(crate) fn write(&self, f: impl Fn(&mut Connection) -> rusqlite::Result<Written>, data: &[Msg]) -> bool {
        let mut result = {
            let write = Arc::clone(&lock(&self.db).write);
            let mut conn = lock(&write);
            f(&mut conn)
        };
        if let Err(e) = &result
            && schema::is_fatal(e)
            && matches!(*lock(&self.mode), StoreMode::File { .. })
        {
            let error = StoreError::Corrupt {
                path: self.config.db_path(),
                detail: format!("while writing: {e}"),
            };
            if self.fall_back(&error).is_ok() {
                let write = Arc::clone(&lock(&self.db).write);
                let mut conn = lock(&write);
                result = f(&mut conn);
            }
        }
        let c = &self.counters;
        match result {
            Ok(w) => {
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.trace_payloads.fetch_add(w.trace_payloads, Ordering::Relaxed);
                c.chunks.fetch_add(w.chunks, Ordering::Relaxed);
                c.spans.fetch_add(w.spans, Ordering::Relaxed);
                c.stats_payloads.fetch_add(w.stats_payloads, Ordering::Relaxed);
                c.stats_groups.fetch_add(w.stats_groups, Ordering::Relaxed);
                self.error_logged.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                let traces = data.iter().filter(|m| matches!(m, Msg::Traces(_))).count() as u64;
                let stats = data.iter().filter(|m| matches!(m, Msg::Stats(_))).count() as u64;
                c.dropped_traces_error.fetch_add(traces, Ordering::Relaxed);
                c.dropped_stats_error.fetch_add(stats, Ordering::Relaxed);
                let msg = format!("local store: write failed, {traces} trace and {stats} stats payloads lost: {e}");
                if !self.error_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!("{msg}");
                }
                self.record_error(msg);
                false
            }
        }
    }

    /// Runs retention at `now`; logs and counts failures.
    pub(crate) fn retain_now(&self, now: SystemTime) -> Option<RetentionReport> {
        let policy = RetentionPolicy {
            max_age: self.config.retention,
            max_size_bytes: self.config.max_size_bytes,
        };
        let write = Arc::clone(&lock(&self.db).write);
        let result = retention::retain(&mut lock(&write), unix_nanos(now), policy);
        self.counters.retention_runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) => {
                self.counters.size_bytes.store(r.size_after, Ordering::Relaxed);
                let mut d = lock(&self.deleted);
                d.spans += r.spans;
                d.traces += r.traces;
                d.stats_rows += r.stats_rows;
                d.size_passes += r.size_passes;
                if r.spans + r.stats_rows > 0 {
                    tracing::debug!(?r, "local store retention");
                }
                Some(r)
            }
            Err(e) => {
                let msg = format!("local store: retention failed: {e}");
                tracing::warn!("{msg}");
                self.record_error(msg);
                None
            }
        }
    }

    /// Writes `msgs` to the spool (the writer at a shutdown past its deadline); returns how
    /// many could not be spooled.
    pub(crate) fn spool_messages(&self, msgs: &[Msg]) -> u64 {
        let mut lost = 0;
        for m in msgs {
            let record = match m {
                Msg::Traces(p) => Record {
                    kind: RecordKind::Traces,
                    items: p.chunk_count(),
                    headers: Vec::new(),
                    body: p.to_pb().encode_to_vec(),
                },
                Msg::Stats(p) => Record {
                    kind: RecordKind::Stats,
                    items: 0,
                    headers: Vec::new(),
                    body: p.encode_to_vec(),
                },
                Msg::Sync(_) | Msg::Shutdown(_) => continue,
            };
            match self.spool.as_ref().map(|s| s.put(&record)) {
                Some(Ok(())) => {
                    self.counters.spooled.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    lost += 1;
                    self.record_error(format!("local store: cannot spool at shutdown: {e}"));
                }
                None => lost += 1,
            }
        }
        lost
    }

    /// Counts payloads lost at shutdown (neither written nor spooled).
    pub(crate) fn count_lost_at_shutdown(&self, n: u64) {
        self.counters.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts payloads written back from the spool.
    pub(crate) fn count_replayed(&self, n: u64) {
        self.counters.replayed.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the size of the files (database + WAL) for `status`.
    pub(crate) fn set_size(&self, bytes: u64) {
        self.counters.size_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Opens the database file (the deferred open of [`LocalStore::open_in_background`]),
    /// swapping it in for the placeholder; falls back to memory on failure.
    pub(crate) fn open_file_now(&self) {
        match open_db(&self.config) {
            Ok(db) => {
                *lock(&self.db) = db;
                tracing::info!(path = %self.config.db_path().display(), "local store opened");
            }
            Err(e) => {
                // The placeholder is an in-memory database already.
                tracing::error!(
                    "{e}. Local mode keeps running IN MEMORY: traces are received and shown, but lost at exit"
                );
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.record_error(e.to_string());
                *lock(&self.mode) = StoreMode::Memory {
                    path: self.config.db_path(),
                    reason: e.to_string(),
                };
            }
        }
        self.opening.store(false, Ordering::Release);
    }

    /// The size pass alone, down to `target` bytes in use (after a batch took the files past
    /// the cap); logs and counts like [`Self::retain_now`].
    pub(crate) fn shrink_now(&self, target: u64) {
        let write = Arc::clone(&lock(&self.db).write);
        let result = retention::shrink(&mut lock(&write), target);
        self.counters.retention_runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) => {
                let mut d = lock(&self.deleted);
                d.spans += r.spans;
                d.traces += r.traces;
                d.stats_rows += r.stats_rows;
                d.size_passes += r.size_passes;
            }
            Err(e) => {
                let msg = format!("local store: size retention failed: {e}");
                tracing::warn!("{msg}");
                self.record_error(msg);
            }
        }
    }

    /// Checkpoints the WAL into the database file and truncates it.
    pub(crate) fn checkpoint_now(&self) {
        let write = Arc::clone(&lock(&self.db).write);
        if let Err(e) = retention::checkpoint(&lock(&write)) {
            tracing::debug!("local store: WAL checkpoint failed: {e}");
        }
    }

    /// The readers' connection (the current one: after a fallback, the in-memory database).
    pub(crate) fn reader(&self) -> Arc<Mutex<Connection>> {
        Arc::clone(&lock(&self.db).read)
    }
}
