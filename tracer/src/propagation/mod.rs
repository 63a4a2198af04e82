//! Trace context propagation over HTTP headers: Datadog (`x-datadog-*`) and W3C trace
//! context (`traceparent`/`tracestate`), extracted and injected per
//! `DD_TRACE_PROPAGATION_STYLE` (default `datadog,tracecontext`).
//!
//! Extraction never fails loudly: a malformed header is ignored (the next style is tried,
//! or a new trace starts), never a panic.

mod datadog;
mod tracecontext;

use std::collections::HashMap;

use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::{SpanContext, SpanId, Str, TraceId};
use crate::tracer::Tracer;

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

/// A propagation format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `x-datadog-trace-id`, `x-datadog-parent-id`, `x-datadog-sampling-priority`,
    /// `x-datadog-origin`, `x-datadog-tags`.
    Datadog,
    /// W3C `traceparent` and `tracestate` (with the `dd=` member).
    TraceContext,
}

impl Style {
    /// Parses a `DD_TRACE_PROPAGATION_STYLE` list; unknown entries are returned as errors.
    ///
    /// # Errors
    /// The first entry that is not a supported style.
    pub fn parse_list(list: &str) -> Result<Vec<Style>, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let style = match item.to_ascii_lowercase().as_str() {
                "datadog" => Style::Datadog,
                "tracecontext" => Style::TraceContext,
                "none" => continue,
                other => {
                    return Err(format!(
                        "unsupported propagation style {other:?} (supported: datadog, tracecontext, none)"
                    ));
                }
            };
            if !out.contains(&style) {
                out.push(style);
            }
        }
        Ok(out)
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
}

/// Extracts and injects trace context with a list of styles.
#[derive(Debug, Clone)]
pub struct Propagator {
    extract: Vec<Style>,
    inject: Vec<Style>,
}

impl Default for Propagator {
    /// Datadog, then W3C trace context, both ways.
    fn default() -> Self {
        Self::new(
            vec![Style::Datadog, Style::TraceContext],
            vec![Style::Datadog, Style::TraceContext],
        )
    }
}

impl Propagator {
    /// A propagator with explicit extraction and injection styles (tried in order).
    pub fn new(extract: Vec<Style>, inject: Vec<Style>) -> Self {
        Self { extract, inject }
    }

    /// Reads an incoming context: the first style that yields a valid one wins; a later
    /// W3C context of the same trace contributes its parent id (the closest hop).
    pub fn extract(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let mut found: Option<Extracted> = None;
        for style in &self.extract {
            let Some(ctx) = (match style {
                Style::Datadog => datadog::extract(carrier),
                Style::TraceContext => tracecontext::extract(carrier),
            }) else {
                continue;
            };
            match &mut found {
                None => found = Some(ctx),
                Some(first) if *style == Style::TraceContext && first.trace_id.low() == ctx.trace_id.low() => {
                    // Same trace seen through W3C: its parent is the nearer one.
                    if ctx.parent_id.is_valid() {
                        first.parent_id = ctx.parent_id;
                    }
                    if first.trace_id.high() == 0 {
                        first.trace_id = ctx.trace_id;
                    }
                }
                Some(_) => {}
            }
        }
        let e = found?;
        let decision = e
            .priority
            .map(|p| SamplingDecision::new(p, e.mechanism.unwrap_or(Mechanism::Propagated(0))));
        let tags = e.tags.into_iter().map(|(k, v)| (Str::from(k), Str::from(v))).collect();
        Some(SpanContext::remote(
            e.trace_id,
            e.parent_id,
            decision,
            e.origin.map(Str::from),
            tags,
        ))
    }

    /// Writes `ctx` into outgoing headers, taking the trace's sampling decision now if
    /// nobody has yet (it is then final for the trace).
    pub fn inject(&self, tracer: &Tracer, ctx: &SpanContext, carrier: &mut dyn Injector) {
        let decision = tracer.sampling_decision(ctx);
        for style in &self.inject {
            match style {
                Style::Datadog => datadog::inject(ctx, decision, carrier),
                Style::TraceContext => tracecontext::inject(ctx, decision, carrier),
            }
        }
    }
}

#[cfg(test)]
mod tests;
