//! Span buffering: finished spans collect per trace; a complete trace (or a partial-flush
//! chunk) goes into a bounded lock-free queue that the export worker drains.
//!
//! Design (see `DESIGN.md` beside this file): a trace that never has more than its root
//! span needs no shared state at all — the root's data moves straight into the queue.
//! Shared [`TraceState`] is created on the first child (or when the root's context is
//! taken), holds the open-span count in an atomic and the finished spans under a small,
//! per-trace, uncontended mutex; the last span to finish hands the chunk over. The queue
//! is a fixed-size `crossbeam_queue::ArrayQueue`: a push never blocks or allocates, a full
//! queue drops the chunk and counts it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::span::{ChunkSpans, SpanBox, SpanData, SpanId, Str, TraceId, TraceState};

/// One unit of export: spans of one trace, plus the trace's shared state if it has any.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) spans: ChunkSpans,
    pub(crate) trace: Option<Arc<TraceState>>,
}

/// Span boxes handed back by the export worker for reuse, in batches (not necessarily
/// cleared: [`SpanPool::take`] clears them).
///
/// The worker returns boxes [`BATCH`] at a time; an application thread takes a whole
/// batch into a thread-local cache when its cache runs dry, so the shared pool is touched
/// once per [`BATCH`] spans on each side. The pool is a stack: the batch taken is the one
/// returned last, whose boxes were written and read most recently (still in the caches),
/// not the oldest of up to 16 384 boxes. The emptied batch vectors go back to the worker
/// the same way, so neither side allocates or frees one in steady state.
#[derive(Debug)]
pub(crate) struct SpanPool {
    stacks: Mutex<PoolStacks>,
    /// Batches the pool holds at most.
    max_batches: usize,
}

#[derive(Debug, Default)]
struct PoolStacks {
    /// Batches of boxes, the most recently returned last.
    full: Vec<Vec<SpanBox>>,
    /// Empty batch vectors (capacity [`BATCH`]) for the worker to fill.
    empty: Vec<Vec<SpanBox>>,
}

/// Boxes per batch.
pub(crate) const BATCH: usize = 32;

thread_local! {
    static LOCAL_FREE: RefCell<Vec<SpanBox>> = const { RefCell::new(Vec::new()) };
    static PUSHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl SpanPool {
    /// A pool holding up to `capacity` boxes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            stacks: Mutex::new(PoolStacks::default()),
            max_batches: capacity.div_ceil(BATCH).max(1),
        }
    }

    fn stacks(&self) -> std::sync::MutexGuard<'_, PoolStacks> {
        self.stacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cleared span named `name`: recycled when one is free, else newly allocated.
    pub(crate) fn take(&self, name: Str) -> SpanBox {
        let recycled = LOCAL_FREE
            .try_with(|cache| {
                let mut cache = cache.try_borrow_mut().ok()?;
                if cache.is_empty() {
                    self.refill(&mut cache);
                }
                cache.pop()
            })
            .ok()
            .flatten();
        match recycled {
            Some(mut b) => {
                // Boxes come back from the worker as it encoded them (see
                // `PoolReturn::give`): cleared here, on the core that writes them next.
                b.reset(name);
                b
            }
            None => Box::new(SpanData::new(
                TraceId::default(),
                SpanId::default(),
                SpanId::default(),
                name,
            )),
        }
    }

    /// Swaps the thread's empty cache for the most recently returned batch, if any. An
    /// application thread never waits for the lock: when the worker (or another thread)
    /// holds it, the span gets a new box instead.
    fn refill(&self, cache: &mut Vec<SpanBox>) {
        let mut stacks = match self.stacks.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Some(batch) = stacks.full.pop() {
            let emptied = std::mem::replace(cache, batch);
            if emptied.capacity() >= BATCH && stacks.empty.len() < self.max_batches {
                stacks.empty.push(emptied);
            }
        }
    }

    /// Hands back a batch (dropped when the pool is full) and returns an empty vector for
    /// the next one.
    pub(crate) fn give_batch(&self, batch: Vec<SpanBox>) -> Vec<SpanBox> {
        let mut stacks = self.stacks();
        if !batch.is_empty() && stacks.full.len() < self.max_batches {
            stacks.full.push(batch);
        }
        stacks.empty.pop().unwrap_or_default()
    }

    /// Keeps a span dropped on an application thread (queue full) in that thread's cache,
    /// up to two batches; frees it beyond that.
    pub(crate) fn keep_local(&self, mut span: SpanBox) {
        span.reset(Str::EMPTY);
        let _ = LOCAL_FREE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                if cache.len() < 2 * BATCH {
                    cache.push(span);
                }
            }
        });
    }
}

/// The worker's side of the pool: collects boxes into batches.
#[derive(Debug, Default)]
pub(crate) struct PoolReturn {
    batch: Vec<SpanBox>,
}

impl PoolReturn {
    /// Adds `span` to the batch being filled, handing the batch over when full. A span
    /// holding heap data is cleared now; any other is left as it is (the taker clears
    /// it), so the worker only reads a span's cache lines and never writes them.
    pub(crate) fn give(&mut self, pool: &SpanPool, mut span: SpanBox) {
        if span.holds_heap() {
            span.reset(Str::EMPTY);
        }
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(BATCH);
        }
        self.batch.push(span);
        if self.batch.len() >= BATCH {
            let full = std::mem::take(&mut self.batch);
            self.batch = pool.give_batch(full);
        }
    }
}

/// Shards of the chunk queue: each application thread writes to one (by its
/// [`stripe`](crate::health::stripe)), so threads finishing traces at once do not contend
/// on one tail; the worker drains them all.
pub(crate) const SHARDS: usize = 4;

/// The bounded queue between application threads and the export worker: [`SHARDS`]
/// lock-free array queues of `capacity` chunks each; a thread whose shard is full pushes
/// into the others.
#[derive(Debug)]
pub(crate) struct ChunkQueue {
    shards: Box<[CachePadded<ArrayQueue<Chunk>>]>,
    wake_at: usize,
    wake_pending: AtomicBool,
    /// The shard the last chunk was popped from, where the next pop looks first (one
    /// thread usually fills one shard). Only the worker pops: relaxed is enough.
    pop_from: AtomicUsize,
}

impl ChunkQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(ArrayQueue::new(capacity)))
                .collect(),
            wake_at: capacity.div_ceil(2),
            wake_pending: AtomicBool::new(false),
            pop_from: AtomicUsize::new(0),
        }
    }

    /// Pushes without blocking. `Ok(true)` when the thread's shard is half full and the
    /// worker should be woken (reported once until the worker has drained).
    pub(crate) fn push(&self, chunk: Chunk) -> Result<bool, Chunk> {
        let home = crate::health::stripe() % SHARDS;
        let Some(shard) = self.shards.get(home) else {
            return Err(chunk);
        };
        if let Err(rejected) = shard.push(chunk) {
            // The thread's shard is full: the others take the overflow (the queue's whole
            // capacity serves one busy thread), and the worker is woken at once.
            let mut chunk = rejected;
            for i in 1..SHARDS {
                let Some(other) = self.shards.get((home + i) % SHARDS) else {
                    continue;
                };
                match other.push(chunk) {
                    Ok(()) => return Ok(!self.wake_pending.swap(true, Ordering::AcqRel)),
                    Err(c) => chunk = c,
                }
            }
            return Err(chunk);
        }
        // Reading the length costs more than the push: look every 16 pushes of this thread
        // (or every push for tiny queues); the half-full threshold leaves room for that.
        let check = self.wake_at <= 16
            || PUSHES.with(|n| {
                let v = n.get().wrapping_add(1);
                n.set(v);
                v % 16 == 0
            });
        let wake = check && shard.len() >= self.wake_at && !self.wake_pending.swap(true, Ordering::AcqRel);
        Ok(wake)
    }

    /// Pops a waiting chunk from any shard.
    pub(crate) fn pop(&self) -> Option<Chunk> {
        let first = self.pop_from.load(Ordering::Relaxed);
        for i in 0..SHARDS {
            let at = (first + i) % SHARDS;
            if let Some(chunk) = self.shards.get(at).and_then(|s| s.pop()) {
                if i != 0 {
                    self.pop_from.store(at, Ordering::Relaxed);
                }
                return Some(chunk);
            }
        }
        None
    }

    /// Called by the worker before draining: later pushes may wake it again.
    pub(crate) fn rearm(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Chunks waiting.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u64, parent: u64, local_root: bool) -> SpanBox {
        let mut s = SpanData::new(
            TraceId::from_u128(1),
            SpanId::from_u64(id),
            SpanId::from_u64(parent),
            Str::from("op"),
        );
        s.local_root = local_root;
        Box::new(s)
    }

    #[test]
    fn trace_completes_when_last_span_finishes_and_root_comes_first() {
        let t = TraceState::for_local_root();
        assert!(t.start_span(100));
        assert!(t.start_span(100));
        assert!(t.finish_span(span(2, 1, false), None).is_none());
        assert!(t.finish_span(span(1, 0, true), None).is_none());
        let chunk = t.finish_span(span(3, 1, false), None).unwrap_or_default();
        let ids: Vec<u64> = chunk.iter().map(|s| s.span_id.to_u64()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn partial_flush_hands_over_finished_spans() {
        let t = TraceState::for_local_root();
        for _ in 0..4 {
            assert!(t.start_span(100));
        }
        assert!(t.finish_span(span(2, 1, false), Some(2)).is_none());
        assert_eq!(t.finish_span(span(3, 1, false), Some(2)).map(|c| c.len()), Some(2));
        assert!(t.finish_span(span(4, 1, false), Some(2)).is_none());
        assert!(t.finish_span(span(5, 1, false), Some(2)).is_some_and(|c| c.len() == 2));
        assert_eq!(t.finish_span(span(1, 0, true), Some(2)).map(|c| c.len()), Some(1));
    }

    #[test]
    fn span_cap_refuses_spans() {
        let t = TraceState::for_local_root();
        assert!(t.start_span(2));
        assert!(!t.start_span(2));
    }

    #[test]
    fn the_pool_hands_out_the_batch_returned_last_cleared() {
        let pool = SpanPool::new(4 * BATCH);
        let addr = |b: &SpanBox| std::ptr::from_ref::<SpanData>(b) as usize;
        let mut returns = PoolReturn::default();
        let mut last = Vec::new();
        for round in 0..2 {
            for i in 0..BATCH as u64 {
                let mut s = span(i + 1, 0, true);
                s.push_meta(Str::from_static("k"), Str::from_static("v"));
                if round == 1 {
                    last.push(addr(&s));
                }
                returns.give(&pool, s);
            }
        }
        // This thread's cache is empty: the first take pulls the newest batch.
        let taken = pool.take(Str::from_static("next"));
        assert!(last.contains(&addr(&taken)), "a box of the batch returned last");
        assert_eq!(taken.name(), "next");
        assert_eq!(taken.tags().count(), 0, "cleared by the taker");
        assert_eq!(taken.span_id(), SpanId::default());
        // The emptied vector went back: the worker's next batch reuses it.
        assert_eq!(pool.stacks().empty.len(), 0, "the cache vector was empty-capacity");
        let mut left = BATCH - 1;
        while left > 0 {
            drop(pool.take(Str::EMPTY));
            left -= 1;
        }
        drop(pool.take(Str::EMPTY));
        assert_eq!(pool.stacks().full.len(), 0, "both batches taken");
        assert_eq!(pool.stacks().empty.len(), 1, "the first batch's vector came back");
    }

    #[test]
    fn a_span_holding_heap_data_is_cleared_by_the_worker() {
        let mut s = span(1, 0, true);
        assert!(!s.holds_heap());
        s.push_meta(Str::from_static("k"), Str::from(String::from("owned")));
        assert!(s.holds_heap());
        let pool = SpanPool::new(BATCH);
        let mut returns = PoolReturn::default();
        returns.give(&pool, s);
        assert_eq!(returns.batch.first().map(|b| b.tags().count()), Some(0));
    }

    #[test]
    fn queue_is_bounded_and_wakes_once_at_half() {
        let q = ChunkQueue::new(4);
        let chunk = || Chunk {
            spans: smallvec::SmallVec::new(),
            trace: None,
        };
        assert_eq!(q.push(chunk()).ok(), Some(false));
        assert_eq!(q.push(chunk()).ok(), Some(true));
        assert_eq!(q.push(chunk()).ok(), Some(false), "already woken");
        assert!(q.push(chunk()).is_ok());
        // This thread's shard is full: the other shards take the overflow, then the
        // queue is full.
        q.rearm();
        assert_eq!(q.push(chunk()).ok(), Some(true), "overflow wakes the worker");
        for _ in 0..(SHARDS - 1) * 4 - 1 {
            assert!(q.push(chunk()).is_ok());
        }
        assert_eq!(q.len(), SHARDS * 4);
        assert!(q.push(chunk()).is_err(), "full");
        q.rearm();
        let mut popped = 0;
        while q.pop().is_some() {
            popped += 1;
        }
        assert_eq!(popped, SHARDS * 4, "every shard drained");
        assert_eq!(q.len(), 0);
    }
}
