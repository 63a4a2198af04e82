//! [`LocalStore`]: the handle the pipeline writes to and the web view reads from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::upstream::pb;
use crate::upstream::spool::SpoolLane;
use crossbeam_channel::Sender;
use prost::Message;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::LocalConfig;
use super::prepare::Prepared;
use super::retention::RetentionReport;
use super::schema::{self, StoreError};
use super::state::{Counters, Db, Inner, Pending};
use super::writer::{self, Msg, Queued};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreMode {
    /// The database file.
    File {
        /// Its path.
        path: PathBuf,
    },
    /// In memory (lost at exit), because the file could not be used.
    Memory {
        /// The file that could not be used.
        path: PathBuf,
        /// Why (the error message).
        reason: String,
    },
}

impl std::fmt::Display for StoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path } => write!(f, "file {}", path.display()),
            Self::Memory { reason, .. } => write!(f, "in memory, NOT persisted: {reason}"),
        }
    }
}

/// The store's counters, for `status` and `/api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// File or memory fallback.
    pub mode: StoreMode,
    /// Times the store fell back to memory (at open or on a corrupt file at run time).
    pub fallbacks: u64,
    /// Payloads waiting for the writer.
    pub queue_depth: usize,
    /// Queue bound in payloads.
    pub queue_capacity: usize,
    /// Trace payloads written.
    pub trace_payloads_written: u64,
    /// Trace chunks written.
    pub chunks_written: u64,
    /// Spans written.
    pub spans_written: u64,
    /// Stats payloads written.
    pub stats_payloads_written: u64,
    /// Stats groups (one key of one bucket) written.
    pub stats_groups_written: u64,
    /// Write transactions committed.
    pub batches: u64,
    /// Trace payloads dropped because the queue was full.
    pub dropped_trace_payloads_queue_full: u64,
    /// Stats payloads dropped because the queue was full.
    pub dropped_stats_payloads_queue_full: u64,
    /// Payloads offered after shutdown.
    pub dropped_after_shutdown: u64,
    /// Trace payloads lost in failed write transactions.
    pub dropped_trace_payloads_write_error: u64,
    /// Stats payloads lost in failed write transactions.
    pub dropped_stats_payloads_write_error: u64,
    /// Failed write transactions.
    pub write_errors: u64,
    /// Retention runs.
    pub retention_runs: u64,
    /// Rows deleted by retention (spans, traces, stats rows).
    pub retention_deleted: RetentionReport,
    /// Bytes the database uses (after the last retention run).
    pub size_bytes: u64,
    /// Size cap.
    pub max_size_bytes: u64,
    /// Retention age, seconds.
    pub retention_seconds: u64,
    /// Last error: unix seconds and message.
    pub last_error: Option<(u64, String)>,
    /// Payloads accepted and not yet written (queued, or in the batch being written).
    #[serde(default)]
    pub pending_payloads: u64,
    /// Trace chunks accepted and not yet written.
    #[serde(default)]
    pub pending_chunks: u64,
    /// Estimated bytes accepted and not yet written.
    #[serde(default)]
    pub pending_bytes: u64,
    /// Bound of `pending_bytes`.
    #[serde(default)]
    pub queue_max_bytes: u64,
    /// Payloads not written by the shutdown deadline, put in the spool instead.
    #[serde(default)]
    pub spooled_payloads: u64,
    /// Spooled payloads written after a start.
    #[serde(default)]
    pub replayed_payloads: u64,
    /// The file is still being opened (integrity check, retention): readers see nothing yet.
    #[serde(default)]
    pub opening: bool,
}

/// The local store: an embedded SQLite database of kept traces and stats buckets, written by
/// its own thread from a queue bounded in payloads and bytes (see the [module docs](super)).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
    tx: Sender<Queued>,
    closed: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Creates `dir` (and missing parents) with mode 0700, and takes group and other access away
/// from it when it already exists: stored traces hold request data.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Creates the database file with mode 0600 before SQLite opens it (SQLite gives its `-wal`
/// and `-shm` files the database file's mode), and sets 0600 on those that already exist.
fn private_files(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Creates the data directory (0700, see [`private_dir`]) and the database files (0600) and
/// opens the writer's and readers' connections.
pub(super) fn open_db(config: &LocalConfig) -> Result<Db, StoreError> {
    let path = config.db_path();
    let data_dir_error = |source| StoreError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    private_dir(&config.data_dir).map_err(data_dir_error)?;
    private_files(&path).map_err(data_dir_error)?;
    let write = schema::open_file(&path)?;
    let read = schema::open_reader(&path)?;
    Ok(Db {
        write: Arc::new(Mutex::new(write)),
        read: Arc::new(Mutex::new(read)),
    })
}

impl LocalStore {
    /// Version of the database schema (`PRAGMA user_version`): files written by an older
    /// agent are upgraded at open, newer ones are refused.
    pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

    /// Opens the database in `config.data_dir` (creating both if needed) and starts the writer
    /// thread. When the file cannot be used (corrupt, locked by another process, unwritable
    /// directory, newer schema), logs the error clearly, counts it and runs **in memory**
    /// instead ([`StoreStatus::mode`]): the agent keeps receiving and showing traces. The first
    /// retention pass runs on the writer thread.
    ///
    /// # Errors
    /// Only when even the in-memory database cannot be created, or the thread not started.
    pub fn open(config: LocalConfig) -> Result<Self, StoreError> {
        let (db, error) = match open_db(&config) {
            Ok(db) => (db, None),
            Err(e) => {
                let conn = Arc::new(Mutex::new(schema::open_memory()?));
                (
                    Db {
                        write: Arc::clone(&conn),
                        read: conn,
                    },
                    Some(e),
                )
            }
        };
        let store = Self::start(config, db, None, false)?;
        if let Some(e) = error {
            let inner = &store.inner;
            tracing::error!("{e}. Local mode keeps running IN MEMORY: traces are received and shown, but lost at exit");
            inner.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
            inner.record_error(e.to_string());
            *lock(&inner.mode) = StoreMode::Memory {
                path: inner.config.db_path(),
                reason: e.to_string(),
            };
        } else {
            tracing::info!(path = %store.inner.config.db_path().display(), "local store opened");
        }
        Ok(store)
    }

    /// Like [`LocalStore::open`], but returns at once: the writer thread opens the file
    /// (integrity check included), writes back what `spool` holds, runs the first retention
    /// pass, then takes the queue. Until the file is open, readers see an empty database and
    /// [`StoreStatus::opening`] is set; accepted payloads wait in the queue. A large store
    /// never delays the agent's start.
    ///
    /// # Errors
    /// Only when the placeholder in-memory database cannot be created, or the thread not started.
    pub fn open_in_background(config: LocalConfig, spool: Option<SpoolLane>) -> Result<Self, StoreError> {
        let conn = Arc::new(Mutex::new(schema::open_memory()?));
        let db = Db {
            write: Arc::clone(&conn),
            read: conn,
        };
        Self::start(config, db, spool, true)
    }

    fn start(config: LocalConfig, db: Db, spool: Option<SpoolLane>, deferred: bool) -> Result<Self, StoreError> {
        let path = config.db_path();
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            config,
            db: Mutex::new(db),
            mode: Mutex::new(StoreMode::File { path }),
            counters: Counters::default(),
            deleted: Mutex::default(),
            last_error: Mutex::default(),
            error_logged: AtomicBool::new(false),
            pending: Pending::default(),
            spool,
            spool_now: AtomicBool::new(false),
            opening: AtomicBool::new(deferred),
            ledger: std::sync::OnceLock::new(),
        });
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("local-store-writer".to_owned())
            .spawn(move || writer::run(&thread_inner, &rx))
            .map_err(StoreError::Thread)?;
        Ok(Self {
            inner,
            tx,
            closed: Arc::new(AtomicBool::new(false)),
            writer: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Queues `msg`, waiting (at most `offer_wait`) while the queue is full in payloads or
    /// bytes; then drops and counts it.
    fn offer(&self, msg: Msg) {
        let is_traces = matches!(msg, Msg::Traces(_));
        let c = &self.inner.counters;
        if self.closed.load(Ordering::Acquire) {
            c.dropped_shutdown.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (bytes, chunks) = match &msg {
            Msg::Traces(p) => (p.bytes(), p.chunk_count()),
            Msg::Stats(p) => (p.encoded_len() + 256, 0),
            Msg::Sync(_) | Msg::Shutdown(_) => (0, 0),
        };
        let cfg = &self.inner.config;
        let pending = &self.inner.pending;
        let fits = || {
            let b = pending.bytes.load(Ordering::Acquire);
            self.tx.len() < cfg.queue_capacity.max(1) && (b == 0 || b.saturating_add(bytes) <= cfg.queue_max_bytes)
        };
        if !fits() {
            let deadline = Instant::now() + cfg.offer_wait;
            let mut guard = lock(&pending.lock);
            while !fits() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(guard);
                    let counter = if is_traces {
                        &c.dropped_traces_full
                    } else {
                        &c.dropped_stats_full
                    };
                    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            "local store: the writer is behind (slow disk?); payloads are dropped and counted \
                             (see trace-agent status)"
                        );
                    }
                    return;
                }
                guard = pending
                    .room
                    .wait_timeout(guard, left.min(Duration::from_millis(50)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let q = Queued { msg, bytes, chunks };
        pending.add(&q);
        if let Err(e) = self.tx.send(q) {
            pending.done(e.0.bytes, e.0.chunks);
            c.dropped_shutdown.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How far behind the writer is: [`Pressure::High`](crate::upstream::Pressure::High) past
    /// half of the queue bounds, `Full` past 80 % (the pipeline's payloads in flight still fit).
    pub fn pressure(&self) -> crate::upstream::Pressure {
        use crate::upstream::Pressure;
        let cfg = &self.inner.config;
        let b = self.inner.pending.bytes.load(Ordering::Relaxed);
        let n = self.tx.len();
        let cap = cfg.queue_capacity.max(1);
        let max = cfg.queue_max_bytes.max(1);
        if b.saturating_mul(10) >= max.saturating_mul(8) || n * 10 >= cap * 8 {
            Pressure::Full
        } else if b.saturating_mul(2) >= max || n * 2 >= cap {
            Pressure::High
        } else {
            Pressure::Normal
        }
    }

    /// Signalled after each written batch (room freed), for the receiver's wait.
    pub(crate) fn room_notify(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.pending.room_async)
    }

    /// Tells the span ledger what each batch wrote from now on (see [`crate::ledger`]).
    pub(crate) fn attach_ledger_inner(&self, ledger: Arc<crate::ledger::Ledger>) {
        ledger.register_writer("local");
        let _ = self.inner.ledger.set(ledger);
    }

    /// The span ledger's snapshot, when one is attached.
    pub fn ledger_snapshot(&self) -> Option<crate::ledger::LedgerSnapshot> {
        self.inner.ledger.get().map(|l| l.snapshot())
    }

    /// Queues kept trace chunks for writing. A full queue waits (at most `offer_wait`), then
    /// drops and counts. The rows are made here, on the caller's thread ([`super::prepare`]).
    pub fn push_traces(&self, payload: Arc<pb::TracerPayload>) {
        let ledger = self.inner.ledger.get().is_some();
        self.offer(Msg::Traces(Box::new(Prepared::from_pb(&payload, ledger))));
    }

    /// Like [`Self::push_traces`], from the borrowed span model the pipeline decoded (the
    /// forwarding stage: no owned `pb` copy is made for local mode).
    pub fn push_borrowed_traces(&self, payload: &crate::span::TracerPayload<'_>) {
        let ledger = self.inner.ledger.get().is_some();
        self.offer(Msg::Traces(Box::new(Prepared::from_borrowed(payload, ledger))));
    }

    /// Queues a stats payload for writing (like [`Self::push_traces`]).
    pub fn push_stats(&self, payload: Arc<pb::StatsPayload>) {
        self.offer(Msg::Stats(payload));
    }

    /// Waits (blocking, at most `timeout`) until everything queued so far is written. Returns
    /// false on timeout or after shutdown.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Queued::control(Msg::Sync(tx))).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Runs retention now, as of `now` (tests pass a clock; the writer runs it every
    /// `retention_interval` with the wall clock).
    pub fn run_retention(&self, now: SystemTime) -> Option<RetentionReport> {
        self.inner.retain_now(now)
    }

    /// Writes what is queued and stops the writer thread (blocking). Until `timeout` the writer
    /// writes; then what is left goes to the spool (without a spool, the writer goes on writing
    /// for at most ten times `timeout`). Later payloads are dropped and counted. Logs what was
    /// written, spooled and lost. Returns whether everything was written or spooled.
    pub fn shutdown_blocking(&self, timeout: Duration) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return true;
        }
        let started = Instant::now();
        let before = self.status();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut done = self.tx.send(Queued::control(Msg::Shutdown(tx))).is_ok() && rx.recv_timeout(timeout).is_ok();
        let mut late = false;
        if !done {
            late = true;
            self.inner.spool_now.store(true, Ordering::Release);
            let cap = if self.inner.spool.is_some() {
                timeout.max(Duration::from_secs(30))
            } else {
                timeout.saturating_mul(10)
            };
            done = rx.recv_timeout(cap).is_ok();
        }
        if done && let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        let after = self.status();
        let written = after.trace_payloads_written + after.stats_payloads_written
            - before.trace_payloads_written
            - before.stats_payloads_written;
        let spooled = after.spooled_payloads - before.spooled_payloads;
        let lost = after.pending_payloads
            + (after.dropped_trace_payloads_write_error
                + after.dropped_stats_payloads_write_error
                + after.dropped_after_shutdown)
            - (before.dropped_trace_payloads_write_error
                + before.dropped_stats_payloads_write_error
                + before.dropped_after_shutdown);
        let took = started.elapsed();
        if spooled > 0 || lost > 0 || late {
            tracing::warn!(
                "local store: shutdown wrote {written} payloads in {took:.1?}; {spooled} payloads not written by \
                 the deadline were spooled to {} (written after the next start); {lost} lost",
                self.inner
                    .spool
                    .as_ref()
                    .map_or_else(|| "(no spool)".to_owned(), |s| s.path().display().to_string())
            );
        } else {
            tracing::info!("local store: shutdown wrote the {written} payloads still queued in {took:.1?}");
        }
        done && lost == 0
    }

    /// A copy of the counters.
    pub fn status(&self) -> StoreStatus {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStatus {
            mode: lock(&self.inner.mode).clone(),
            fallbacks: l(&c.fallbacks),
            queue_depth: self.tx.len(),
            queue_capacity: self.inner.config.queue_capacity.max(1),
            pending_payloads: self.inner.pending.payloads.load(Ordering::Relaxed) as u64,
            pending_chunks: self.inner.pending.chunks.load(Ordering::Relaxed),
            pending_bytes: self.inner.pending.bytes.load(Ordering::Relaxed) as u64,
            queue_max_bytes: self.inner.config.queue_max_bytes as u64,
            spooled_payloads: l(&c.spooled),
            replayed_payloads: l(&c.replayed),
            opening: self.inner.opening.load(Ordering::Relaxed),
            trace_payloads_written: l(&c.trace_payloads),
            chunks_written: l(&c.chunks),
            spans_written: l(&c.spans),
            stats_payloads_written: l(&c.stats_payloads),
            stats_groups_written: l(&c.stats_groups),
            batches: l(&c.batches),
            dropped_trace_payloads_queue_full: l(&c.dropped_traces_full),
            dropped_stats_payloads_queue_full: l(&c.dropped_stats_full),
            dropped_after_shutdown: l(&c.dropped_shutdown),
            dropped_trace_payloads_write_error: l(&c.dropped_traces_error),
            dropped_stats_payloads_write_error: l(&c.dropped_stats_error),
            write_errors: l(&c.write_errors),
            retention_runs: l(&c.retention_runs),
            retention_deleted: *lock(&self.inner.deleted),
            size_bytes: l(&c.size_bytes),
            max_size_bytes: self.inner.config.max_size_bytes,
            retention_seconds: self.inner.config.retention.as_secs(),
            last_error: lock(&self.inner.last_error).clone(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &LocalConfig {
        &self.inner.config
    }

    /// The writer's connection (tests hold it to play a slow disk).
    #[cfg(test)]
    pub(crate) fn writer_connection(&self) -> Arc<Mutex<Connection>> {
        Arc::clone(&lock(&self.inner.db).write)
    }

    /// Runs `f` on the readers' connection (blocking: call it from a blocking thread).
    ///
    /// # Errors
    /// What `f` returns.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let reader = self.inner.reader();
        let conn = lock(&reader);
        f(&conn)
    }
}
