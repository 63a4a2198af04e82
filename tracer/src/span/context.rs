//! `SpanContext` and the current span: a thread-local stack that instrumented futures set
//! on every poll, so the current span follows a task across `.await` and threads.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Span, SpanId, Str, TraceId};
use crate::buffer::{TraceState, TraceTags};
use crate::sampling::SamplingDecision;

/// What a child needs from its parent: ids, the parent's service and the trace's shared
/// state. Cheap to clone, `Send + Sync`; pass it to other threads and tasks freely.
#[derive(Clone)]
pub struct SpanContext {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) service: Option<Str>,
    pub(crate) trace: Arc<TraceState>,
    /// The parent lives in another process (extracted from headers).
    pub(crate) remote: bool,
}

impl std::fmt::Debug for SpanContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanContext")
            .field("trace_id", &self.trace_id)
            .field("span_id", &self.span_id)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl SpanContext {
    /// A context received from another process: its trace id, the id of the remote parent
    /// span, and, when the upstream decided, its sampling decision, origin and propagated
    /// `_dd.p.*` tags.
    pub fn remote(
        trace_id: TraceId,
        parent_id: SpanId,
        decision: Option<SamplingDecision>,
        origin: Option<Str>,
        propagated: Vec<(Str, Str)>,
    ) -> Self {
        let tags = TraceTags { origin, propagated };
        Self {
            trace_id,
            span_id: parent_id,
            service: None,
            trace: Arc::new(TraceState::for_remote(decision, tags)),
            remote: true,
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span id (of the remote parent, for a remote context).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the context came from another process.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The trace's sampling decision, if taken yet.
    pub fn sampling_decision(&self) -> Option<SamplingDecision> {
        self.trace.decision.get().copied()
    }

    /// The trace's origin (`_dd.origin`), if any.
    pub fn origin(&self) -> Option<&str> {
        self.trace.tags.origin.as_deref()
    }

    /// Propagated `_dd.p.*` tags received from upstream.
    pub fn propagated_tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.trace.tags.propagated.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Makes this context current until the guard drops.
    pub fn enter(&self) -> Entered {
        Entered::new(Some(self.clone()))
    }
}

thread_local! {
    static CURRENT: RefCell<Vec<SpanContext>> = const { RefCell::new(Vec::new()) };
}

/// The innermost current span context of this thread, if any.
///
/// With the `opentelemetry` feature, the span of OpenTelemetry's current `Context` counts
/// too (the innermost of the two), so native spans nest under OpenTelemetry-instrumented
/// code as well.
pub(crate) fn current_context() -> Option<SpanContext> {
    #[cfg(feature = "opentelemetry")]
    {
        crate::otel::innermost_current()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        native_current_context()
    }
}

/// The innermost span context on this thread's stack (ours and entered `tracing` spans).
pub(crate) fn native_current_context() -> Option<SpanContext> {
    CURRENT.try_with(|c| c.borrow().last().cloned()).ok().flatten()
}

/// Whether `span_id` is on this thread's stack of current spans.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn is_current(span_id: SpanId) -> bool {
    CURRENT
        .try_with(|c| c.borrow().iter().any(|e| e.span_id == span_id))
        .unwrap_or(false)
}

/// Makes `ctx` current without a guard (the `tracing` Layer's `on_enter`); undone by
/// [`exit_current`].
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn enter_current(ctx: SpanContext) {
    let _ = CURRENT.try_with(|c| c.borrow_mut().push(ctx));
}

/// Removes the innermost entry of `span_id` from this thread's stack (the `tracing`
/// Layer's `on_exit`). `tracing` lets spans exit out of order, so this searches from the
/// top instead of popping blindly.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn exit_current(span_id: SpanId) {
    let _ = CURRENT.try_with(|c| {
        let mut stack = c.borrow_mut();
        if stack.last().is_some_and(|top| top.span_id == span_id) {
            stack.pop();
        } else if let Some(i) = stack.iter().rposition(|e| e.span_id == span_id) {
            stack.remove(i);
        }
    });
}

/// Guard of [`Span::enter`]: the span stays current on this thread until it drops.
/// Not `Send`: it must drop on the thread that entered.
#[must_use = "the span is current only while the guard lives"]
pub struct Entered {
    pushed: bool,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entered").field("pushed", &self.pushed).finish()
    }
}

impl Entered {
    pub(crate) fn new(ctx: Option<SpanContext>) -> Self {
        let pushed = match ctx {
            Some(ctx) => CURRENT.try_with(|c| c.borrow_mut().push(ctx)).is_ok(),
            None => false,
        };
        Self {
            pushed,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.pushed {
            let _ = CURRENT.try_with(|c| c.borrow_mut().pop());
        }
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with its span current on every poll and finishes the span when
    /// the future completes or is dropped. Made by [`Instrument::in_span`].
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        ctx: Option<SpanContext>,
    }
}

impl<F> std::fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = {
            let _entered = Entered::new(this.ctx.clone());
            this.inner.poll(cx)
        };
        if out.is_ready() {
            // Finish the span as soon as the work is done, not whenever the future is dropped.
            drop(this.span.take());
        }
        out
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with a span context current on every poll. Made by
    /// [`Instrument::with_context`].
    pub struct WithContext<F> {
        #[pin]
        inner: F,
        ctx: Option<SpanContext>,
    }
}

impl<F> std::fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithContext")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = Entered::new(this.ctx.clone());
        this.inner.poll(cx)
    }
}

/// Attaches spans to futures so the current span follows them across `.await`, tasks
/// and threads.
pub trait Instrument: Future + Sized {
    /// Runs the future with `span` current; the span finishes when the future completes.
    fn in_span(self, span: Span) -> Instrumented<Self> {
        let ctx = span.context();
        Instrumented {
            inner: self,
            span: Some(span),
            ctx,
        }
    }

    /// Runs the future with `ctx` current (e.g. inside `tokio::spawn`).
    fn with_context(self, ctx: Option<SpanContext>) -> WithContext<Self> {
        WithContext { inner: self, ctx }
    }

    /// Runs the future with the caller's current span current, e.g.
    /// `tokio::spawn(work().in_current_span())`.
    fn in_current_span(self) -> WithContext<Self> {
        WithContext {
            inner: self,
            ctx: current_context(),
        }
    }
}

impl<F: Future> Instrument for F {}
