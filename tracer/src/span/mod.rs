//! Spans: identifiers, the finished-span model, the builder, the guard that finishes on
//! drop, and the context that follows a request across threads and `.await`.

mod builder;
mod context;
mod data;
pub(crate) mod error;
mod guard;
mod ids;
#[cfg(any(feature = "tracing-layer", feature = "opentelemetry"))]
pub(crate) mod intern;
mod links;
mod str;

pub use builder::SpanBuilder;
pub use context::{Entered, Instrument, Instrumented, SpanContext, WithContext};
pub use data::SpanData;
pub use guard::Span;
pub use ids::{SpanId, TraceId};
pub use links::{AttributeValue, SpanEvent, SpanLink};
pub use str::Str;

pub(crate) use data::SpanBox;

pub(crate) use context::current_context;
#[cfg(feature = "opentelemetry")]
pub(crate) use context::native_current_context;
#[cfg(feature = "tracing-layer")]
pub(crate) use context::{enter_current, exit_current, is_current};
