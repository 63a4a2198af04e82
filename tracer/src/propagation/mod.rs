//! Trace context propagation over HTTP headers: Datadog (`x-datadog-*`), W3C trace
//! context (`traceparent`/`tracestate`), B3 (multi and single header) and W3C `baggage`,
//! extracted and injected per `DD_TRACE_PROPAGATION_STYLE` (default
//! `datadog,tracecontext,baggage`; see `Propagator::from_config`).
//!
//! Extraction never fails loudly: a malformed header is ignored (the next style is tried,
//! or a new trace starts), never a panic.

mod b3;
mod baggage;
mod datadog;
mod style;
mod tracecontext;

pub use style::{PropagationSettings, Style};

pub use baggage::{Baggage, BaggageGuard, MAX_BYTES as BAGGAGE_MAX_BYTES, MAX_ITEMS as BAGGAGE_MAX_ITEMS};

use std::collections::HashMap;

use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::{SpanContext, SpanId, Str, TraceId};

/// Reads request headers (names are looked up in lower case).
pub trait Extractor {
    /// The value of header `name`, if present and valid UTF-8.
    fn get(&self, name: &str) -> Option<&str>;
}

/// Writes request headers.
pub trait Injector {
    /// Sets header `name` (lower case) to `value`.
    fn set(&mut self, name: &'static str, value: String);
}

impl Extractor for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Injector for http::HeaderMap {
    fn set(&mut self, name: &'static str, value: String) {
        if let Ok(v) = http::HeaderValue::try_from(value) {
            self.insert(name, v);
        }
    }
}

impl Extractor for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Injector for HashMap<String, String> {
    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

/// What one style read from the headers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extracted {
    pub(crate) trace_id: TraceId,
    pub(crate) parent_id: SpanId,
    pub(crate) priority: Option<i8>,
    pub(crate) mechanism: Option<Mechanism>,
    pub(crate) origin: Option<String>,
    /// `_dd.p.*` tags other than `tid` and `dm`.
    pub(crate) tags: Vec<(String, String)>,
    /// The `p` field of tracestate's `dd=` member: the last Datadog span upstream.
    pub(crate) last_parent: Option<String>,
}

/// Everything read from an incoming request.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The remote parent, when a style found a valid one.
    pub context: Option<SpanContext>,
    /// The `baggage` items, when the style is enabled and the header is valid.
    pub baggage: Option<Baggage>,
    /// The value for the `_dd.parent_id` tag of the first local span: the last Datadog
    /// span upstream, when W3C's parent (a non-Datadog hop in between) won over it.
    pub reparent_id: Option<String>,
}

/// Extracts and injects trace context with a list of styles.
#[derive(Debug, Clone)]
pub struct Propagator {
    extract: Vec<Style>,
    inject: Vec<Style>,
    extract_first: bool,
}

impl Default for Propagator {
    /// `datadog,tracecontext,baggage` both ways.
    fn default() -> Self {
        Self::new(Style::defaults(), Style::defaults())
    }
}

impl Propagator {
    /// A propagator with explicit extraction and injection styles (tried in order).
    pub fn new(extract: Vec<Style>, inject: Vec<Style>) -> Self {
        Self {
            extract,
            inject,
            extract_first: false,
        }
    }

    /// The propagator `settings` describe (`DD_TRACE_PROPAGATION_STYLE[_EXTRACT|_INJECT]`,
    /// `DD_TRACE_PROPAGATION_EXTRACT_FIRST`); `Propagator::from_config` takes them from a
    /// `TracerConfig`.
    pub fn from_settings(settings: &PropagationSettings) -> Self {
        Self::new(settings.extract().to_vec(), settings.inject().to_vec()).with_extract_first(settings.extract_first())
    }

    /// Stops at the first style that yields a context (`DD_TRACE_PROPAGATION_EXTRACT_FIRST`)
    /// instead of reconciling it with the W3C context of the same trace.
    #[must_use]
    pub fn with_extract_first(mut self, first: bool) -> Self {
        self.extract_first = first;
        self
    }

    /// The extraction styles, in order.
    pub fn extract_styles(&self) -> &[Style] {
        &self.extract
    }

    /// The injection styles.
    pub fn inject_styles(&self) -> &[Style] {
        &self.inject
    }

    /// Reads an incoming context: the first style that yields a valid one wins; a later
    /// W3C context of the same trace contributes its parent id (the closest hop).
    pub fn extract(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        self.extract_incoming(carrier).context
    }

    /// Reads the trace context and the baggage of an incoming request.
    ///
    /// Styles are tried in order and the first valid context wins. Unless `extract_first`,
    /// a later W3C context of the same trace supplies the parent id (it is the nearer hop)
    /// and [`Incoming::reparent_id`] keeps the Datadog parent; a context of another trace
    /// is ignored. Malformed headers are skipped, never an error.
    pub fn extract_incoming(&self, carrier: &dyn Extractor) -> Incoming {
        let mut found: Option<Extracted> = None;
        let mut reparent_id = None;
        let mut baggage = None;
        for style in &self.extract {
            let ctx = match style {
                Style::Datadog => datadog::extract(carrier),
                Style::TraceContext => tracecontext::extract(carrier),
                Style::B3Multi => b3::extract_multi(carrier),
                Style::B3Single => b3::extract_single(carrier),
                Style::Baggage => {
                    baggage = baggage::extract(carrier);
                    continue;
                }
            };
            let Some(ctx) = ctx else { continue };
            match &mut found {
                None => found = Some(ctx),
                Some(_) if self.extract_first => {}
                Some(first) if *style == Style::TraceContext && first.trace_id.low() == ctx.trace_id.low() => {
                    // Same trace seen through W3C: its parent is the nearer one.
                    if ctx.parent_id.is_valid() && ctx.parent_id != first.parent_id {
                        reparent_id = Some(
                            ctx.last_parent
                                .clone()
                                .unwrap_or_else(|| format!("{:016x}", first.parent_id.to_u64())),
                        );
                        first.parent_id = ctx.parent_id;
                    }
                    if first.trace_id.high() == 0 {
                        first.trace_id = ctx.trace_id;
                    }
                }
                Some(_) => {}
            }
        }
        let context = found.map(|e| {
            let decision = e
                .priority
                .map(|p| SamplingDecision::new(p, e.mechanism.unwrap_or(Mechanism::Propagated(0))));
            let tags = e.tags.into_iter().map(|(k, v)| (Str::from(k), Str::from(v))).collect();
            SpanContext::remote(e.trace_id, e.parent_id, decision, e.origin.map(Str::from), tags)
        });
        Incoming {
            context,
            baggage,
            reparent_id,
        }
    }

    /// Writes `ctx` into outgoing headers with the trace's `decision` (`Propagator::inject`
    /// takes it from the tracer first).
    pub(crate) fn inject_decided(&self, ctx: &SpanContext, decision: SamplingDecision, carrier: &mut dyn Injector) {
        for style in &self.inject {
            match style {
                Style::Datadog => datadog::inject(ctx, decision, carrier),
                Style::TraceContext => tracecontext::inject(ctx, decision, carrier),
                Style::B3Multi => b3::inject_multi(ctx, decision, carrier),
                Style::B3Single => b3::inject_single(ctx, decision, carrier),
                Style::Baggage => {}
            }
        }
    }

    /// Writes `baggage` into outgoing headers when the `baggage` style is enabled.
    pub fn inject_baggage(&self, baggage: &Baggage, carrier: &mut dyn Injector) {
        if self.inject.contains(&Style::Baggage) {
            baggage::inject(baggage, carrier);
        }
    }
}

#[cfg(test)]
mod tests;
