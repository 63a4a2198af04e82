//! `tracing` integration: [`DatadogLayer`] records `tracing` spans (`#[instrument]`,
//! `info_span!`, …) as spans of this tracer, and [`WithLogCorrelation`] adds
//! `dd.trace_id`/`dd.span_id` (and service, env, version) to formatted log lines.
//! [`DatadogSubscriber`] records the same way as a `tracing` subscriber of its own, for a
//! service that sends its `tracing` spans only to Datadog: without `tracing-subscriber`'s
//! `Registry` (and so without `fmt` or filter layers), at two thirds (a root span) to
//! under half (a tree) of the Layer's instructions, and one allocation fewer per span.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tracer = tracer::Tracer::from_env()?;
//! tracing_subscriber::registry()
//!     .with(tracer::layer::DatadogLayer::new(tracer))
//!     .with(
//!         tracing_subscriber::fmt::layer()
//!             .event_format(tracer::layer::WithLogCorrelation::new(tracing_subscriber::fmt::format())),
//!     )
//!     .init();
//!
//! let span = tracing::info_span!("checkout", resource.name = "POST /cart", user.id = 42);
//! let _entered = span.enter();
//! tracing::info!("logged with dd.trace_id and dd.span_id");
//! # Ok(())
//! # }
//! ```
//!
//! # How spans map
//!
//! - The `tracing` span's name (`Metadata::name`, the function name for `#[instrument]`)
//!   is the operation name; the resource defaults to it.
//! - Parentage follows the `tracing` span tree: an explicit `parent:` is used as given, a
//!   contextual span nests under the current span — the innermost of the entered `tracing`
//!   spans and of this tracer's own current span (the Layer makes an entered `tracing`
//!   span current for the native API too, so both kinds nest in either order, also across
//!   `.await` with `tracing::Instrument`).
//! - Fields become tags: strings, `Debug`/`Display` values and booleans go to `meta`,
//!   integers and floats to `metrics`. These field names are special:
//!
//! | field | effect |
//! |---|---|
//! | `service.name`, `dd.service` | the span's service |
//! | `resource.name`, `dd.resource` | the resource |
//! | `span.type`, `dd.span_type` | the span type (`web`, `sql`, …) |
//! | `otel.name`, `operation.name`, `dd.operation` | replaces the operation name |
//! | `otel.kind`, `span.kind` | `span.kind` tag (`server`, `client`, …) |
//! | `error` | `true`, a message or an `&dyn Error`: marks the span as an error (with `error.message`, and `error.stack` for an `Error`) |
//! | `error.message`, `error.type`, `error.stack` | these tags, and marks the span as an error |
//! | `otel.status_code` | `ERROR` marks the span as an error (`otel.status_message`/`otel.status_description` → `error.message`) |
//! | `dd.measured` | `true`: stats are computed for the span (`_dd.measured`) |
//!
//! - An event at `ERROR` level, or with an `error` field, marks its span as an error:
//!   `error.message` is the `error` field (else the message), `error.type` and
//!   `error.stack` come from the fields of those names (or the `Error`'s source chain).
//!   Other events are not recorded (the Datadog span model has no logs).
//! - The span finishes when the `tracing` span closes (its last handle drops).
//!
//! # Not tracing itself
//!
//! Spans and events with the targets of the tracer's own logs (`tracer::health`,
//! `tracer::export`), and everything on the export thread (its HTTP client logs through
//! `tracing`), are ignored.

mod fields;
mod fmt;
mod subscriber;
#[cfg(test)]
mod tests;

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub use fmt::WithLogCorrelation;
pub use subscriber::DatadogSubscriber;

use crate::export::on_export_thread;
use crate::span::{SpanContext, enter_current, exit_current, is_current};
use crate::{Span, Str, Tracer};

/// The span of this tracer that a `tracing` span records into, kept in the `tracing`
/// span's extensions from `on_new_span` to `on_close`.
struct DdSpan(Span);

/// A `tracing-subscriber` [`Layer`](tracing_subscriber::Layer) that records `tracing`
/// spans as spans of a [`Tracer`]. See the [module docs](self) for the mapping.
#[derive(Debug, Clone, Copy)]
pub struct DatadogLayer {
    tracer: Tracer,
    span_events: bool,
    /// Tells this layer's entries on a thread's [`ENTERED`] stack from another's (given
    /// when the layer is added to a subscriber).
    key: usize,
}

impl DatadogLayer {
    /// A layer recording into `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        Self {
            tracer,
            span_events: false,
            key: 0,
        }
    }

    /// Also records every `tracing` event inside a recorded span (`info!`, `warn!`, …) as a
    /// span event of that span (off by default): the event's message is its name (else the
    /// callsite name), its other fields and `level` / `target` its attributes, its time the
    /// moment it was emitted.
    #[must_use]
    pub fn with_span_events(mut self, enabled: bool) -> Self {
        self.span_events = enabled;
        self
    }
}

/// Targets of the tracer's own logs (the export worker's, the health reports): never
/// traced. The crate logs only under these.
const OWN_TARGETS: [&str; 2] = ["tracer::health", "tracer::export"];

fn is_own_target(target: &str) -> bool {
    OWN_TARGETS.iter().any(|own| {
        target
            .strip_prefix(own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn ignored(meta: &tracing::Metadata<'_>) -> bool {
    is_own_target(meta.target()) || on_export_thread()
}

/// The context of the nearest span (`id` itself or an ancestor) that this layer records.
fn recorded_context<S>(ctx: &Context<'_, S>, id: &Id) -> Option<SpanContext>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.span(id).and_then(recorded_in)
}

/// The context of the nearest span (`span` itself or an ancestor) that this layer records.
fn recorded_in<R>(span: tracing_subscriber::registry::SpanRef<'_, R>) -> Option<SpanContext>
where
    R: for<'a> LookupSpan<'a>,
{
    span.scope()
        .find_map(|s| s.extensions().get::<DdSpan>().and_then(|d| d.0.context()))
}

/// An entered span this layer made current on this thread.
struct Entered {
    key: usize,
    id: u64,
    span_id: crate::SpanId,
}

thread_local! {
    /// The spans this layer entered on this thread, innermost last: `on_exit` finds what
    /// to undo here, without looking the span up in the `Registry`.
    static ENTERED: std::cell::RefCell<Vec<Entered>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `id` is the innermost span layer `key` entered on this thread.
fn is_innermost_entered(key: usize, id: &Id) -> bool {
    let id = id.into_u64();
    ENTERED
        .try_with(|s| {
            s.borrow()
                .iter()
                .rev()
                .find(|e| e.key == key)
                .is_some_and(|e| e.id == id)
        })
        .unwrap_or(false)
}

/// Where a new span goes.
enum Parent {
    /// The builder's default: this thread's current span, if any.
    Current,
    Root,
    Of(SpanContext),
}

/// Starts the span of a new `tracing` span, its fields recorded.
fn start_span(tracer: Tracer, attrs: &Attributes<'_>, parent: Parent) -> Span {
    // Entering the span (`on_enter`) needs its trace state at once.
    let mut builder = tracer.span(Str::from_static(attrs.metadata().name())).eager_trace();
    match parent {
        Parent::Current => {}
        Parent::Root => builder = builder.root(),
        Parent::Of(p) => builder = builder.child_of(&p),
    }
    let mut visitor = fields::SpanFields::new(builder.data_mut(), false);
    attrs.record(&mut visitor);
    visitor.finish();
    builder.start()
}

/// Records `values` (`Span::record`) into `span`.
fn record_values(span: &mut Span, values: &Record<'_>) {
    if let Some(data) = span.data_mut() {
        let mut visitor = fields::SpanFields::new(data, true);
        values.record(&mut visitor);
        visitor.finish();
    }
}

/// Whether an event is recorded at all: as a span event (`with_span_events`), or as an
/// error (`ERROR` level or an `error` field) — and not one of the tracer's own.
fn event_wanted(meta: &tracing::Metadata<'_>, span_events: bool) -> bool {
    let marks_error = *meta.level() == tracing::Level::ERROR || meta.fields().field("error").is_some();
    (span_events || marks_error) && !ignored(meta)
}

/// Records an event [`event_wanted`] into the span it happened in.
fn record_event(span: &mut Span, event: &Event<'_>, span_events: bool) {
    let meta = event.metadata();
    if span_events {
        let mut visitor = fields::EventFields::default();
        event.record(&mut visitor);
        span.push_event(visitor.into_event(meta));
    }
    let is_error = *meta.level() == tracing::Level::ERROR;
    if is_error || meta.fields().field("error").is_some() {
        let mut visitor = fields::ErrorEvent::new(is_error);
        event.record(&mut visitor);
        visitor.apply(span);
    }
}

impl<S> tracing_subscriber::Layer<S> for DatadogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if ignored(meta) {
            return;
        }
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let parent = if let Some(parent) = attrs.parent() {
            // Explicit parent: the nearest recorded ancestor, else whatever is current.
            recorded_context(&ctx, parent).map_or(Parent::Current, Parent::Of)
        } else if attrs.is_root() {
            Parent::Root
        } else {
            // Contextual: the builder's default parent is this thread's current span,
            // which includes entered `tracing` spans (see `on_enter`) and anything entered
            // inside them. Only a `tracing` span entered without this layer seeing it
            // (another dispatcher at the time) is missing there: then it is the parent.
            // The `Registry` made the current `tracing` span the new span's parent; the
            // usual case, the innermost span this layer entered, needs nothing more.
            match span_ref.parent() {
                Some(current) if !is_innermost_entered(self.key, &current.id()) => recorded_in(current)
                    .filter(|p| !is_current(p.span_id))
                    .map_or(Parent::Current, Parent::Of),
                _ => Parent::Current,
            }
        };
        let span = start_span(self.tracer, attrs, parent);
        span_ref.extensions_mut().insert(DdSpan(span));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        if let Some(DdSpan(span)) = span_ref.extensions_mut().get_mut::<DdSpan>() {
            record_values(span, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !event_wanted(event.metadata(), self.span_events) {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span_ref in scope {
            let mut ext = span_ref.extensions_mut();
            if let Some(DdSpan(span)) = ext.get_mut::<DdSpan>() {
                record_event(span, event, self.span_events);
                return;
            }
        }
    }

    fn on_layer(&mut self, _subscriber: &mut S) {
        static KEYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        self.key = KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        if let Some(span_ctx) = span_ref.extensions().get::<DdSpan>().and_then(|d| d.0.context()) {
            let entered = Entered {
                key: self.key,
                id: id.into_u64(),
                span_id: span_ctx.span_id,
            };
            enter_current(span_ctx);
            let _ = ENTERED.try_with(|s| s.borrow_mut().push(entered));
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let (key, id) = (self.key, id.into_u64());
        let span_id = ENTERED
            .try_with(|s| {
                let mut s = s.borrow_mut();
                // `tracing` lets spans exit out of order: the innermost entry of `id`.
                let i = s.iter().rposition(|e| e.key == key && e.id == id)?;
                Some(s.remove(i).span_id)
            })
            .ok()
            .flatten();
        if let Some(span_id) = span_id {
            exit_current(span_id);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(&id) else {
            return;
        };
        let span = span_ref.extensions_mut().remove::<DdSpan>();
        drop(span); // finishes it
    }
}
