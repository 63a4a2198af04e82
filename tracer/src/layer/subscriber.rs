//! [`DatadogSubscriber`]: a `tracing` subscriber of its own, for services whose `tracing`
//! spans go only to Datadog — the same recording as [`DatadogLayer`](super::DatadogLayer)
//! without `tracing-subscriber`'s `Registry` underneath.
//!
//! The `Registry` is the floor of any `Layer`: per span it inserts into a sharded slab,
//! keeps a per-thread span stack with duplicate checks, counts references with a close
//! guard, and boxes each layer's extension (an allocation per span). Here a span is one
//! slot of a per-thread-sharded table (a `Vec` behind an uncontended mutex, slots
//! reused), holding the tracer's span inline.

use std::cell::{Cell, RefCell};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

use super::{Parent, event_wanted, is_own_target, record_event, record_values, start_span};
use crate::export::on_export_thread;
use crate::span::{enter_current, exit_current};
use crate::{Span, SpanId, Tracer};

/// Shards of the span table; a thread creates its spans in one of them.
const SHARDS: usize = 64;
/// Bits of an [`Id`] that hold the slot index (plus one, so no id is zero).
const INDEX_BITS: u32 = 40;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// A `tracing` [`Subscriber`] that records `tracing` spans as spans of a [`Tracer`], with
/// the mapping of [`DatadogLayer`](super::DatadogLayer) (see the [module docs](super)),
/// for a service that sends its `tracing` spans only to Datadog: it cannot be combined
/// with `tracing-subscriber` layers (`fmt`, filters). Cheaper than the Layer on the
/// `Registry`: no allocation of its own per span, about two thirds of the Layer's
/// instructions for a root span with 5 fields and under half for a 4-span tree.
///
/// Events are not printed; those at `ERROR` level or with an `error` field mark their
/// span as an error, as with the Layer. Log lines written another way (the `log` crate,
/// a logger of the service's own) get the current span's ids from
/// [`log_correlation`](crate::log_correlation): entering a `tracing` span makes it the
/// tracer's current span.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tracer = tracer::Tracer::from_env()?;
/// tracing::subscriber::set_global_default(tracer::layer::DatadogSubscriber::new(tracer))?;
/// let _span = tracing::info_span!("checkout", resource.name = "POST /cart").entered();
/// # Ok(())
/// # }
/// ```
///
/// `follows_from` is not recorded (as with the Layer).
pub struct DatadogSubscriber {
    tracer: Tracer,
    span_events: bool,
    /// Tells this subscriber's entries on a thread's stack from another's.
    key: usize,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for DatadogSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatadogSubscriber")
            .field("tracer", &self.tracer)
            .field("span_events", &self.span_events)
            .finish_non_exhaustive()
    }
}

/// An open `tracing` span: the tracer's span and the handles `tracing` holds to it.
struct Node {
    span: Span,
    meta: &'static Metadata<'static>,
    refs: usize,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
}

/// An entered span on a thread's stack.
struct Entered {
    key: usize,
    id: u64,
    /// The tracer's span made current by the enter (zero: none).
    span_id: SpanId,
    meta: &'static Metadata<'static>,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    static STACK: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
}

/// This thread's shard: assigned round-robin at the thread's first span.
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0)
}

fn encode(shard: usize, index: usize) -> Id {
    Id::from_u64(((shard as u64) << INDEX_BITS) | (index as u64 + 1))
}

fn decode(id: &Id) -> (usize, usize) {
    let v = id.into_u64();
    (
        (v >> INDEX_BITS) as usize % SHARDS,
        ((v & INDEX_MASK) as usize).wrapping_sub(1),
    )
}

impl DatadogSubscriber {
    /// A subscriber recording into `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        static KEYS: AtomicUsize = AtomicUsize::new(1);
        Self {
            tracer,
            span_events: false,
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Also records `tracing` events as span events, as
    /// [`DatadogLayer::with_span_events`](super::DatadogLayer::with_span_events).
    #[must_use]
    pub fn with_span_events(mut self, enabled: bool) -> Self {
        self.span_events = enabled;
        self
    }

    /// Runs `f` on the open span `id` (`None`: not one of ours, or closed).
    fn with_node<R>(&self, id: &Id, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let (shard, index) = decode(id);
        let mut shard = self.shards.get(shard)?.lock().ok()?;
        shard.slots.get_mut(index)?.as_mut().map(f)
    }

    /// The innermost span this subscriber entered on this thread.
    fn current(&self) -> Option<(u64, &'static Metadata<'static>)> {
        STACK
            .try_with(|s| {
                s.borrow()
                    .iter()
                    .rev()
                    .find(|e| e.key == self.key)
                    .map(|e| (e.id, e.meta))
            })
            .ok()
            .flatten()
    }
}

impl Subscriber for DatadogSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_own_target(meta.target()) {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        !is_own_target(meta.target())
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let meta = attrs.metadata();
        // Own targets never get here (`register_callsite`, `enabled`); everything on the
        // export thread is ignored.
        let span = if on_export_thread() {
            Span::noop()
        } else {
            let parent = if let Some(parent) = attrs.parent() {
                self.with_node(parent, |n| n.span.context())
                    .flatten()
                    .map_or(Parent::Current, Parent::Of)
            } else if attrs.is_root() {
                Parent::Root
            } else {
                // Entered spans are the tracer's current span (see `enter`).
                Parent::Current
            };
            start_span(self.tracer, attrs, parent)
        };
        let node = Node { span, meta, refs: 1 };
        let shard_index = my_shard();
        let Some(Ok(mut shard)) = self.shards.get(shard_index).map(Mutex::lock) else {
            // A poisoned shard (a panic while it was held, which nothing here does):
            // the span is dropped (finished) now, its id is never found.
            return Id::from_u64(u64::MAX);
        };
        let index = match shard.free.pop() {
            Some(i) => {
                if let Some(slot) = shard.slots.get_mut(i) {
                    *slot = Some(node);
                }
                i
            }
            None => {
                shard.slots.push(Some(node));
                shard.slots.len() - 1
            }
        };
        encode(shard_index, index)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.with_node(span, |n| record_values(&mut n.span, values));
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event_enabled(&self, event: &Event<'_>) -> bool {
        event_wanted(event.metadata(), self.span_events)
    }

    fn event(&self, event: &Event<'_>) {
        if !event_wanted(event.metadata(), self.span_events) {
            return;
        }
        let id = match event.parent() {
            Some(p) => p.into_u64(),
            None if event.is_contextual() => match self.current() {
                Some((id, _)) => id,
                None => return,
            },
            None => return,
        };
        self.with_node(&Id::from_u64(id), |n| {
            record_event(&mut n.span, event, self.span_events)
        });
    }

    fn enter(&self, span: &Id) {
        let Some((ctx, meta)) = self.with_node(span, |n| (n.span.context(), n.meta)) else {
            return;
        };
        let span_id = ctx.as_ref().map(|c| c.span_id).unwrap_or_default();
        if let Some(ctx) = ctx {
            enter_current(ctx);
        }
        let _ = STACK.try_with(|s| {
            s.borrow_mut().push(Entered {
                key: self.key,
                id: span.into_u64(),
                span_id,
                meta,
            });
        });
    }

    fn exit(&self, span: &Id) {
        let id = span.into_u64();
        let entered = STACK
            .try_with(|s| {
                let mut s = s.borrow_mut();
                // `tracing` lets spans exit out of order: the innermost entry of `id`.
                let i = s.iter().rposition(|e| e.key == self.key && e.id == id)?;
                Some(s.remove(i).span_id)
            })
            .ok()
            .flatten();
        if let Some(span_id) = entered.filter(|s| s.is_valid()) {
            exit_current(span_id);
        }
    }

    fn current_span(&self) -> Current {
        match self.current() {
            Some((id, meta)) => Current::new(Id::from_u64(id), meta),
            None => Current::none(),
        }
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.with_node(id, |n| n.refs += 1);
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let (shard, index) = decode(&id);
        let Some(Ok(mut shard)) = self.shards.get(shard).map(Mutex::lock) else {
            return false;
        };
        let Some(slot) = shard.slots.get_mut(index) else {
            return false;
        };
        let closed = match slot {
            Some(n) if n.refs > 1 => {
                n.refs -= 1;
                return false;
            }
            Some(_) => slot.take(),
            None => return false,
        };
        shard.free.push(index);
        drop(shard);
        drop(closed); // finishes the span, outside the lock
        true
    }
}
