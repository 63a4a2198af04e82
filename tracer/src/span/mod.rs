//! The span model: identifiers, the finished-span data, links and events, errors, the
//! context that follows a request across threads and `.await`, and the per-trace state
//! its spans share (with the trace's sampling decision). The API that starts and
//! finishes spans (`SpanBuilder`, `Span`) is `tracer/`.

mod context;
mod data;
mod decision;
pub(crate) mod error;
mod ids;
#[cfg(any(feature = "tracing-layer", feature = "opentelemetry"))]
pub(crate) mod intern;
mod links;
mod str;
mod trace;

pub use context::{Entered, SpanContext};
pub use data::SpanData;
pub use decision::{Mechanism, SamplingDecision};
pub use ids::{SpanId, TraceId};
pub use links::{AttributeValue, SpanEvent, SpanLink};
pub use str::Str;

pub(crate) use data::SpanBox;
pub(crate) use trace::{ChunkSpans, TraceState, TraceTags};

pub(crate) use context::current_context;

/// The span of `chunk` called `name` (tests of the bridges: they look spans up by name).
#[cfg(all(test, any(feature = "tracing-layer", feature = "opentelemetry")))]
pub(crate) fn find<'a>(chunk: &'a [SpanData], name: &str) -> &'a SpanData {
    chunk
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no span {name} in {chunk:?}"))
}
#[cfg(feature = "tracing-layer")]
pub(crate) use context::{enter_current, exit_current, is_current};
#[cfg(feature = "opentelemetry")]
pub(crate) use context::{native_current_context, set_current_hook};
