//! `SpanContext` and the current span: a thread-local stack that instrumented futures set
//! on every poll, so the current span follows a task across `.await` and threads.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use super::decision::SamplingDecision;
use super::trace::{TraceState, TraceTags};
use super::{SpanId, Str, TraceId};

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
    if let Some(hook) = CURRENT_HOOK.get() {
        return hook();
    }
    native_current_context()
}

/// Finds the current span context when another context API may hold it too.
#[cfg(feature = "opentelemetry")]
pub(crate) type CurrentHook = fn() -> Option<SpanContext>;

#[cfg(feature = "opentelemetry")]
static CURRENT_HOOK: std::sync::OnceLock<CurrentHook> = std::sync::OnceLock::new();

/// Makes [`current_context`] ask `hook` (the OpenTelemetry bridge: the innermost of our
/// current span and OpenTelemetry's). Set once; the span model stays below the bridge.
#[cfg(feature = "opentelemetry")]
pub(crate) fn set_current_hook(hook: CurrentHook) {
    let _ = CURRENT_HOOK.set(hook);
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

/// Guard of [`Span::enter`](crate::Span::enter): the span stays current on this thread until it drops.
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
