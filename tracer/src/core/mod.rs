//! The tracer's process-wide state, below the span API and the export worker: the
//! configuration, the sampler, the chunk queue and span pool, the counters, the span
//! ledger, and the handle of the export thread. [`TracerInner`] lives for the whole
//! process (spans refer to it without reference counting); the span guard writes finished
//! chunks into it ([`TracerInner::emit`]) and the export worker drains them.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::buffer::{Chunk, ChunkQueue, SHARDS, SpanPool};
use crate::config::TracerConfig;
use crate::health::{AppCounters, Counters, Problem, ProblemLog};
use crate::ledger::{Ledger, LedgerDrop};
use crate::sampling::Sampler;
use crate::span::{ChunkSpans, Str, TraceId, TraceState};

/// Why a flush or shutdown did not deliver everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The worker did not answer in time (the agent may be hanging).
    #[error("the flush did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// The agent refused or never received the payload; its spans are counted as dropped.
    #[error("the agent did not accept the payload: {0}")]
    Send(String),
    /// The tracer was already shut down.
    #[error("the tracer is shut down")]
    ShutDown,
}

/// Requests from application threads to the export worker.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send everything finished so far; reply when done. The caller waits for the reply
    /// with its own timeout; the worker sends with its usual deadline either way, so a
    /// caller that gave up never makes it drop a payload it could still deliver.
    Flush { reply: Sender<Result<(), FlushError>> },
    /// Send everything, then stop.
    Shutdown { reply: Sender<Result<(), FlushError>> },
}

/// The running export worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) control: Sender<Control>,
    pub(crate) thread: JoinHandle<()>,
}

/// The state of one tracer, for the life of the process.
pub(crate) struct TracerInner {
    pub(crate) config: TracerConfig,
    /// The tracer's service, shared by every span that does not set one.
    pub(crate) service: Str,
    pub(crate) sampler: Sampler,
    pub(crate) queue: ChunkQueue,
    pub(crate) pool: SpanPool,
    pub(crate) counters: Counters,
    pub(crate) problems: ProblemLog,
    /// The span ledger (ledger.rs), reported to the agent with every payload.
    pub(crate) ledger: Ledger,
    pub(crate) shut_down: AtomicBool,
    pub(crate) worker: Mutex<Option<WorkerHandle>>,
    pub(crate) worker_thread: OnceLock<std::thread::Thread>,
    pub(crate) runtime_id: String,
}

impl std::fmt::Debug for TracerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerInner")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

fn runtime_id() -> String {
    let a = TraceId::generate(0).low();
    let b = TraceId::generate(0).low();
    // UUID v4 layout.
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

impl TracerInner {
    /// Builds the tracer's state for the life of the process (see `Tracer`).
    pub(crate) fn leak(config: TracerConfig) -> &'static Self {
        let sampler = Sampler::new(
            config.sampling_rules.clone(),
            config.sample_rate,
            config.rate_limit,
            config.env.as_deref().unwrap_or(""),
        );
        Box::leak(Box::new(Self {
            service: Str::from(config.service.clone()).into_shared(),
            // `queue_capacity` chunks in all, spread over the shards.
            queue: ChunkQueue::new(config.queue_capacity.div_ceil(SHARDS)),
            pool: SpanPool::new(config.queue_capacity.clamp(64, 16 * 1024)),
            sampler,
            counters: Counters::default(),
            problems: ProblemLog::default(),
            ledger: Ledger::default(),
            shut_down: AtomicBool::new(false),
            worker: Mutex::new(None),
            worker_thread: OnceLock::new(),
            runtime_id: runtime_id(),
            config,
        }))
    }

    /// A disabled tracer's state, for the children of no-op spans.
    pub(crate) fn noop() -> &'static Self {
        static NOOP: OnceLock<&'static TracerInner> = OnceLock::new();
        NOOP.get_or_init(|| Self::leak(TracerConfig::default().with_enabled(false)))
    }

    pub(crate) fn wake_worker(&self) {
        if let Some(t) = self.worker_thread.get() {
            t.unpark();
        }
    }

    /// Hands finished spans to the queue; never blocks.
    pub(crate) fn emit(&self, spans: ChunkSpans, trace: Option<Arc<TraceState>>) {
        let n = spans.len() as u64;
        let local = self.counters.app.local();
        AppCounters::bump(&local.spans_finished, n);
        if self.shut_down.load(Relaxed) {
            self.ledger.dropped(LedgerDrop::Shutdown, &spans, &self.service);
            self.counters.spans_dropped_shutdown.fetch_add(n, Relaxed);
            self.problems.raise(Problem::FinishedAfterShutdown, || {
                "spans finished after the tracer was shut down are dropped".to_owned()
            });
            return;
        }
        match self.queue.push(Chunk { spans, trace }) {
            Ok(wake) => {
                AppCounters::bump(&local.traces_enqueued, 1);
                if wake {
                    self.wake_worker();
                }
            }
            Err(dropped) => {
                self.ledger
                    .dropped(LedgerDrop::QueueFull, &dropped.spans, &self.service);
                for span in dropped.spans {
                    self.pool.keep_local(span);
                }
                self.counters.spans_dropped_queue_full.fetch_add(n, Relaxed);
                self.counters.traces_dropped_queue_full.fetch_add(1, Relaxed);
                self.problems.raise(Problem::QueueFull, || {
                    format!(
                        "the trace queue is full ({} chunks waiting for the export thread); dropping traces, counted in Health",
                        self.queue.len()
                    )
                });
            }
        }
    }

    pub(crate) fn span_over_trace_cap(&self) {
        self.counters.spans_dropped_trace_too_large.fetch_add(1, Relaxed);
        self.problems.raise(Problem::TraceTooLarge, || {
            format!(
                "a trace passed {} spans; its further spans are dropped (set partial flush with DD_TRACE_PARTIAL_FLUSH_ENABLED)",
                self.config.max_spans_per_trace
            )
        });
    }
}

static DEFAULT: OnceLock<&'static TracerInner> = OnceLock::new();

/// Remembers the first enabled tracer built (log correlation's default).
pub(crate) fn register_default(tracer: &'static TracerInner) {
    let _ = DEFAULT.set(tracer);
}

/// The first enabled tracer built, if any.
pub(crate) fn default_tracer() -> Option<&'static TracerInner> {
    DEFAULT.get().copied()
}
