//! `Tracer`: the handle applications start spans from.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::buffer::{Chunk, ChunkQueue, ChunkSpans, SHARDS, SpanPool, TraceState};
use crate::config::{ConfigError, TracerConfig};
use crate::export::{self, Control, EncodeContext, FlushError, WorkerHandle};
use crate::health::{AppCounters, Counters, Health, Problem, ProblemLog};
use crate::sampling::{RuleInput, Sampler, SamplingDecision, SamplingInput};
use crate::span::{SpanBuilder, SpanContext, SpanId, Str, TraceId, current_context};

/// Why a tracer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The export thread could not be started.
    #[error("cannot start the trace export thread: {0}")]
    Worker(#[source] std::io::Error),
}

pub(crate) struct TracerInner {
    pub(crate) config: TracerConfig,
    /// The tracer's service, shared by every span that does not set one.
    pub(crate) service: Str,
    pub(crate) sampler: Sampler,
    pub(crate) queue: ChunkQueue,
    pub(crate) pool: SpanPool,
    pub(crate) counters: Counters,
    pub(crate) problems: ProblemLog,
    /// The span ledger (export/ledger.rs), reported to the agent with every payload.
    pub(crate) ledger: export::Ledger,
    shut_down: AtomicBool,
    worker: Mutex<Option<WorkerHandle>>,
    worker_thread: OnceLock<std::thread::Thread>,
    runtime_id: String,
}

impl std::fmt::Debug for TracerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerInner")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The tracer: starts spans and owns the background export worker.
///
/// A `Tracer` is a `Copy` handle to state that lives until the process exits (spans refer
/// to it without reference counting, which keeps the per-span cost down). Build one per
/// process, at start-up; call [`Tracer::shutdown`] before exiting so every finished span
/// is sent.
#[derive(Clone, Copy)]
pub struct Tracer {
    inner: &'static TracerInner,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("service", &self.inner.config.service)
            .field("agent", &self.inner.config.agent.url())
            .field("enabled", &self.inner.config.enabled)
            .finish()
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

impl Tracer {
    /// Builds a tracer from `config` and starts its export thread (none when tracing is
    /// disabled).
    ///
    /// # Errors
    /// When the export thread cannot be started.
    pub fn new(config: TracerConfig) -> Result<Self, TracerError> {
        let inner = TracerInner::leak(config);
        if inner.config.enabled {
            let handle = export::spawn(inner).map_err(TracerError::Worker)?;
            let _ = inner.worker_thread.set(handle.thread.thread().clone());
            if let Ok(mut w) = inner.worker.lock() {
                *w = Some(handle);
            }
        }
        let tracer = Self { inner };
        if inner.config.enabled {
            crate::log_correlation::register_default(tracer);
        }
        Ok(tracer)
    }

    /// The tracer's state, for the crate's integrations.
    pub(crate) fn inner(&self) -> &'static TracerInner {
        self.inner
    }

    /// A tracer whose chunks stay in its queue, for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn without_worker(config: TracerConfig) -> Self {
        Self {
            inner: TracerInner::leak(config),
        }
    }

    /// Pops the next queued chunk (tests only).
    #[cfg(test)]
    pub(crate) fn pop_chunk(&self) -> Option<Vec<crate::SpanData>> {
        self.inner
            .queue
            .pop()
            .map(|c| c.spans.into_iter().map(|b| *b).collect())
    }

    /// Builds a tracer from the `DD_*` environment variables.
    ///
    /// # Errors
    /// A bad variable (named, with its value) or a failure to start the export thread.
    pub fn from_env() -> Result<Self, TracerError> {
        Self::new(TracerConfig::from_env()?)
    }

    /// A builder for a span named `name` (the operation name, e.g. `http.request`). Its
    /// parent is the current span unless set otherwise.
    pub fn span(&self, name: impl Into<Str>) -> SpanBuilder {
        SpanBuilder::new(self.inner, name.into())
    }

    /// The current span context of this thread or task, if any.
    pub fn current_context(&self) -> Option<SpanContext> {
        current_context()
    }

    /// The sampling decision of the trace of `ctx`, taking it now if nobody has yet (as
    /// before propagating the trace to another service).
    pub fn sampling_decision(&self, ctx: &SpanContext) -> SamplingDecision {
        *ctx.trace.decision.get_or_init(|| {
            let service = ctx.service.as_deref().unwrap_or(&self.inner.service);
            let input = SamplingInput {
                trace_id_low: ctx.trace_id.low(),
                root: RuleInput {
                    service,
                    name: "",
                    resource: "",
                    meta: &[],
                    metrics: &[],
                },
            };
            self.inner.sampler.decide(&input, Instant::now())
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TracerConfig {
        &self.inner.config
    }

    /// The process's runtime id (`runtime-id` tag).
    pub fn runtime_id(&self) -> &str {
        &self.inner.runtime_id
    }

    /// A snapshot of the counters.
    pub fn health(&self) -> Health {
        self.inner.counters.snapshot()
    }

    /// Sends every span finished before this call, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] if the worker did not finish in time, [`FlushError::Send`]
    /// if the agent did not take the payload, [`FlushError::ShutDown`] after shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.control(timeout, |reply| Control::Flush { reply })
    }

    /// Sends every finished span, then stops the export thread. Spans finished later are
    /// dropped and counted.
    ///
    /// # Errors
    /// As [`Tracer::flush`].
    pub fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.inner.shut_down.swap(true, Relaxed) {
            return Err(FlushError::ShutDown);
        }
        let result = self.control(timeout, |reply| Control::Shutdown { reply });
        if result.is_ok() {
            let handle = self.inner.worker.lock().ok().and_then(|mut w| w.take());
            if let Some(h) = handle {
                let _ = h.thread.join();
            }
        }
        result
    }

    fn control(
        &self,
        timeout: Duration,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<(), FlushError>>) -> Control,
    ) -> Result<(), FlushError> {
        if !self.inner.config.enabled {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = match self.inner.worker.lock() {
            Ok(w) => w.as_ref().is_some_and(|h| h.control.send(make(tx)).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(FlushError::ShutDown);
        }
        self.inner.wake_worker();
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(FlushError::Timeout(timeout)),
        }
    }
}

impl TracerInner {
    /// Builds the tracer's state for the life of the process (see [`Tracer`]).
    fn leak(config: TracerConfig) -> &'static Self {
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
            ledger: export::Ledger::default(),
            shut_down: AtomicBool::new(false),
            worker: Mutex::new(None),
            worker_thread: OnceLock::new(),
            runtime_id: runtime_id(),
            config,
        }))
    }

    pub(crate) fn wake_worker(&self) {
        if let Some(t) = self.worker_thread.get() {
            t.unpark();
        }
    }

    pub(crate) fn encode_context(&self) -> EncodeContext {
        let shared = |s: &String| Str::from(s.clone()).into_shared();
        EncodeContext {
            service: self.service.clone(),
            env: self.config.env.as_ref().map(shared),
            version: self.config.version.as_ref().map(shared),
            global_tags: self
                .config
                .global_tags
                .iter()
                .map(|(k, v)| (shared(k), shared(v)))
                .collect(),
            runtime_id: shared(&self.runtime_id),
            process_id: f64::from(std::process::id()),
            native_span_events: false,
        }
    }

    /// Hands finished spans to the queue; never blocks.
    pub(crate) fn emit(&self, spans: ChunkSpans, trace: Option<Arc<TraceState>>) {
        let n = spans.len() as u64;
        let local = self.counters.app.local();
        AppCounters::bump(&local.spans_finished, n);
        if self.shut_down.load(Relaxed) {
            self.ledger.dropped(export::LedgerDrop::Shutdown, &spans, &self.service);
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
                    .dropped(export::LedgerDrop::QueueFull, &dropped.spans, &self.service);
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

/// A disabled tracer for the children of no-op spans.
pub(crate) fn noop_tracer() -> Tracer {
    static NOOP: OnceLock<Tracer> = OnceLock::new();
    *NOOP.get_or_init(|| {
        let config = TracerConfig::default().with_enabled(false);
        Tracer::new(config).unwrap_or_else(|_| unreachable_disabled())
    })
}

/// A disabled tracer never starts a thread, so `Tracer::new` cannot fail for it.
fn unreachable_disabled() -> Tracer {
    Tracer {
        inner: TracerInner::leak(TracerConfig::default().with_enabled(false)),
    }
}

/// Shuts the tracer down when dropped: keep it alive in `main` so that every span is
/// sent when the program ends, however it returns.
#[derive(Debug)]
#[must_use = "the tracer shuts down when this guard drops"]
pub struct ShutdownGuard {
    tracer: Tracer,
    timeout: Duration,
}

impl Tracer {
    /// A guard that calls [`Tracer::shutdown`] with `timeout` when dropped.
    pub fn shutdown_guard(&self, timeout: Duration) -> ShutdownGuard {
        ShutdownGuard { tracer: *self, timeout }
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if let Err(e) = self.tracer.shutdown(self.timeout) {
            if e != FlushError::ShutDown {
                tracing::warn!(target: "tracer::health", error = %e, "traces may be lost at exit");
            }
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tracer>();
    is::<SpanContext>();
    is::<crate::Span>();
    let _ = SpanId::default();
}
