//! `Tracer`: the handle applications start spans from.

mod builder;
mod guard;
mod instrument;

pub use builder::SpanBuilder;
pub use guard::Span;
pub use instrument::{Instrument, Instrumented, WithContext};

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, TracerConfig};
use crate::core::{Control, FlushError, TracerInner};
use crate::export;
use crate::health::Health;
use crate::propagation::{Injector, Propagator};
use crate::sampling::{RuleInput, SamplingDecision, SamplingInput};
use crate::span::{SpanContext, SpanId, Str, current_context};

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
            crate::core::register_default(inner);
        }
        Ok(tracer)
    }

    /// The tracer's state, for the crate's integrations.
    pub(crate) fn inner(&self) -> &'static TracerInner {
        self.inner
    }

    /// The tracer of `inner` (the state of a tracer built earlier).
    pub(crate) fn from_inner(inner: &'static TracerInner) -> Self {
        Self { inner }
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

impl Propagator {
    /// Writes `ctx` into outgoing headers, taking the trace's sampling decision now if
    /// nobody has yet (it is then final for the trace).
    ///
    /// (Defined beside [`Tracer`], which takes the decision, so that `propagation` stays
    /// below the tracer.)
    pub fn inject(&self, tracer: &Tracer, ctx: &SpanContext, carrier: &mut dyn Injector) {
        self.inject_decided(ctx, tracer.sampling_decision(ctx), carrier);
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tracer>();
    is::<SpanContext>();
    is::<Span>();
    let _ = SpanId::default();
}
