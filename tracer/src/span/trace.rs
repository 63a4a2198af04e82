//! A trace's state in this process, shared by its spans: the open-span count, the finished
//! spans waiting for the last one (see `buffer/DESIGN.md`), the sampling decision and the
//! tags received from upstream.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

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

/// The spans of one chunk: up to 4 inline.
pub(crate) type ChunkSpans = SmallVec<[SpanBox; 4]>;
