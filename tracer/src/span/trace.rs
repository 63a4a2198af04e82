//! A trace's state in this process, shared by its spans: the open-span count, the finished
//! spans waiting for the last one (see `buffer/DESIGN.md`), the sampling decision and the
//! tags received from upstream.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use smallvec::SmallVec;

use super::decision::SamplingDecision;
use super::{SpanBox, Str};

/// Trace-level data received from upstream (propagation) that every chunk carries.
#[derive(Debug, Default, Clone)]
pub(crate) struct TraceTags {
    /// `_dd.origin` (`synthetics`, `rum`, …).
    pub(crate) origin: Option<Str>,
    /// Propagated `_dd.p.*` tags other than `_dd.p.tid` and `_dd.p.dm`.
    pub(crate) propagated: Vec<(Str, Str)>,
}

/// State shared by the spans of one trace in this process.
#[derive(Debug)]
pub(crate) struct TraceState {
    /// Spans started and not yet finished.
    open: AtomicU32,
    /// Spans ever started in this trace (for the per-trace cap).
    started: AtomicUsize,
    /// Inline room for small traces: a trace of up to 4 spans allocates only its state.
    finished: Mutex<ChunkSpans>,
    /// Taken once, by the first chunk to need it (or an inject), shared by later chunks.
    pub(crate) decision: OnceLock<SamplingDecision>,
    pub(crate) tags: TraceTags,
}

impl TraceState {
    /// State for a local trace whose root is already started (`open` = 1).
    pub(crate) fn for_local_root() -> Self {
        Self {
            open: AtomicU32::new(1),
            started: AtomicUsize::new(1),
            // A guess that saves the first re-allocations of small traces.
            finished: Mutex::new(ChunkSpans::new()),
            decision: OnceLock::new(),
            tags: TraceTags::default(),
        }
    }

    /// The shared state of a new local root (`open` = 1): the state this thread's last
    /// trace left behind (see [`TraceState::release`]) when there is one, else a new one.
    /// A service whose roots all need their state (`tracing` spans, server spans) then
    /// allocates none per trace, and frees none on the export thread.
    pub(crate) fn local_root() -> Arc<Self> {
        SPARE
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(|| Arc::new(Self::for_local_root()))
    }

    /// The state of a trace whose last chunk is being handed over: `Some` when the chunk
    /// must carry it to the export thread (another handle to it still lives, or it holds
    /// what the worker reads: a sampling decision, tags from upstream); `None` when it
    /// carries nothing (the worker then decides as for a trace without state, which it
    /// would do anyway: nothing else could read a decision it stored), and it is kept
    /// for this thread's next local root instead of being freed by the export thread.
    pub(crate) fn release(mut trace: Arc<Self>) -> Option<Arc<Self>> {
        let Some(state) = Arc::get_mut(&mut trace) else {
            return Some(trace);
        };
        let blank = state.decision.get().is_none() && state.tags.origin.is_none() && state.tags.propagated.is_empty();
        if !blank {
            return Some(trace);
        }
        let Ok(finished) = state.finished.get_mut() else {
            // Poisoned (a panic while it was held): not reused.
            return None;
        };
        finished.clear();
        *state.open.get_mut() = 1;
        *state.started.get_mut() = 1;
        let _ = SPARE.try_with(|spare| spare.set(Some(trace)));
        None
    }

    /// State for a trace continued from upstream, before any local span exists.
    pub(crate) fn for_remote(decision: Option<SamplingDecision>, tags: TraceTags) -> Self {
        let state = Self {
            open: AtomicU32::new(0),
            started: AtomicUsize::new(0),
            finished: Mutex::new(ChunkSpans::new()),
            decision: OnceLock::new(),
            tags,
        };
        if let Some(d) = decision {
            let _ = state.decision.set(d);
        }
        state
    }

    /// Registers a new span; `false` when the trace is over `max_spans` and the span must
    /// not be recorded.
    pub(crate) fn start_span(&self, max_spans: usize) -> bool {
        if self.started.fetch_add(1, Ordering::Relaxed) >= max_spans {
            return false;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Adds a finished span; returns the spans to hand over when the trace is complete
    /// (or, with `partial_flush`, when enough spans are finished).
    pub(crate) fn finish_span(&self, span: SpanBox, partial_flush: Option<usize>) -> Option<ChunkSpans> {
        let mut finished = match self.finished.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        let local_root = span.local_root;
        finished.push(span);
        if local_root {
            // Chunk-level tags go on the first span: keep the local root there.
            let last = finished.len() - 1;
            finished.swap(0, last);
        }
        let remaining = self.open.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if remaining == 0 || partial_flush.is_some_and(|min| finished.len() >= min) {
            Some(std::mem::take(&mut *finished))
        } else {
            None
        }
    }
}

thread_local! {
    /// A blank local-root state for this thread's next trace (see [`TraceState::release`]).
    static SPARE: Cell<Option<Arc<TraceState>>> = const { Cell::new(None) };
}

/// The spans of one chunk: up to 4 inline.
pub(crate) type ChunkSpans = SmallVec<[SpanBox; 4]>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{AUTO_KEEP, Mechanism};

    #[test]
    fn a_private_blank_state_is_reused_by_the_next_local_root() {
        let first = TraceState::local_root();
        assert!(first.finish_span(Box::new(root_span()), None).is_some());
        let addr = Arc::as_ptr(&first);
        assert!(TraceState::release(first).is_none(), "nothing for the worker");
        let next = TraceState::local_root();
        assert_eq!(Arc::as_ptr(&next), addr, "the same allocation");
        assert!(next.start_span(2), "open = 1, started = 1 again");
        assert!(!next.start_span(2), "the cap counts from 1");
        assert!(next.decision.get().is_none());
    }

    #[test]
    fn a_shared_or_decided_state_goes_with_its_chunk() {
        let shared = TraceState::local_root();
        let other = Arc::clone(&shared);
        assert!(TraceState::release(shared).is_some(), "another handle lives");
        drop(other);
        let decided = TraceState::local_root();
        let _ = decided
            .decision
            .set(SamplingDecision::new(AUTO_KEEP, Mechanism::Default));
        assert!(TraceState::release(decided).is_some_and(|t| t.decision.get().is_some()));
        let tagged = Arc::new(TraceState::for_remote(
            None,
            TraceTags {
                origin: Some(Str::from_static("rum")),
                propagated: Vec::new(),
            },
        ));
        assert!(TraceState::release(tagged).is_some(), "upstream tags");
    }

    fn root_span() -> crate::span::SpanData {
        let mut s = crate::span::SpanData::new(
            crate::TraceId::from_u128(1),
            crate::SpanId::from_u64(1),
            crate::SpanId::default(),
            Str::from_static("op"),
        );
        s.local_root = true;
        s
    }
}
