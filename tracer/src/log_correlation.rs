//! Log correlation: the ids of the current span (and the service, env and version) in the
//! form Datadog's log pipeline links to traces, `dd.trace_id=… dd.span_id=… dd.service=…
//! dd.env=… dd.version=…` (the keys `DD_LOGS_INJECTION` adds in other tracers).
//!
//! `dd.trace_id` is the full 128-bit id in 32 lower-case hex digits when
//! `DD_TRACE_128_BIT_TRACEID_LOGGING_ENABLED` is on (the default) and the id has high
//! bits, else the low 64 bits in decimal, as Datadog's tracers log it.

use std::fmt;

use crate::span::{SpanContext, current_context};
use crate::{SpanId, TraceId, Tracer};

/// The first tracer built (`core` remembers it), for [`log_correlation`].
pub(crate) fn default_tracer() -> Option<Tracer> {
    crate::core::default_tracer().map(Tracer::from_inner)
}

/// What a log line needs to link to the current span. `Display` writes
/// `dd.trace_id=… dd.span_id=… dd.service=… dd.env=… dd.version=…`, leaving out what is
/// unknown (the ids outside any span; env and version when not configured).
#[derive(Debug, Clone)]
pub struct LogCorrelation {
    ids: Option<(TraceId, SpanId)>,
    service: Option<crate::Str>,
    env: Option<&'static str>,
    version: Option<&'static str>,
    hex_trace_id: bool,
}

impl LogCorrelation {
    pub(crate) fn new(tracer: Option<Tracer>, ctx: Option<&SpanContext>) -> Self {
        let config = tracer.map(|t| &t.inner().config);
        let service = match ctx.and_then(|c| c.service.clone()) {
            Some(s) => Some(s),
            None => tracer.map(|t| t.inner().service.clone()),
        };
        Self {
            ids: ctx.map(|c| (c.trace_id, c.span_id)),
            service,
            env: config.and_then(|c| c.env.as_deref()),
            version: config.and_then(|c| c.version.as_deref()),
            hex_trace_id: config.is_none_or(|c| c.log_128bit_trace_id),
        }
    }

    /// The trace id as logged (`dd.trace_id`), if a span is current.
    pub fn trace_id(&self) -> Option<String> {
        self.ids.map(|(t, _)| self.format_trace_id(t).to_string())
    }

    /// The span id as logged (`dd.span_id`, decimal), if a span is current.
    pub fn span_id(&self) -> Option<u64> {
        self.ids.map(|(_, s)| s.to_u64())
    }

    /// The service (`dd.service`).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The environment (`dd.env`).
    pub fn env(&self) -> Option<&str> {
        self.env
    }

    /// The version (`dd.version`).
    pub fn version(&self) -> Option<&str> {
        self.version
    }

    fn format_trace_id(&self, id: TraceId) -> TraceIdDisplay {
        TraceIdDisplay {
            id,
            hex: self.hex_trace_id && id.high() != 0,
        }
    }

    /// The fields as `(key, value)` pairs, in `Display` order (for JSON and structured
    /// formats).
    pub(crate) fn write_pairs(&self, mut f: impl FnMut(&'static str, &dyn fmt::Display) -> fmt::Result) -> fmt::Result {
        if let Some((trace_id, span_id)) = self.ids {
            f("dd.trace_id", &self.format_trace_id(trace_id))?;
            f("dd.span_id", &span_id.to_u64())?;
        }
        if let Some(s) = &self.service {
            f("dd.service", s)?;
        }
        if let Some(e) = self.env {
            f("dd.env", &e)?;
        }
        if let Some(v) = self.version {
            f("dd.version", &v)?;
        }
        Ok(())
    }
}

struct TraceIdDisplay {
    id: TraceId,
    hex: bool,
}

impl fmt::Display for TraceIdDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hex {
            write!(f, "{:032x}", self.id.to_u128())
        } else {
            write!(f, "{}", self.id.low())
        }
    }
}

impl fmt::Display for LogCorrelation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        self.write_pairs(|k, v| {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{k}={v}")
        })
    }
}

/// Correlation fields for the current span (ours, an entered `tracing` span, or a span of
/// the OpenTelemetry bridge) and the first tracer built in the process.
///
/// ```
/// let line = format!("{} payment accepted", tracer::log_correlation());
/// # let _ = line;
/// ```
pub fn log_correlation() -> LogCorrelation {
    LogCorrelation::new(default_tracer(), current_context().as_ref())
}

impl Tracer {
    /// Correlation fields for the current span, with this tracer's service, env and version.
    pub fn log_correlation(&self) -> LogCorrelation {
        LogCorrelation::new(Some(*self), current_context().as_ref())
    }

    /// Correlation fields for `ctx`, with this tracer's service, env and version.
    pub fn log_correlation_for(&self, ctx: Option<&SpanContext>) -> LogCorrelation {
        LogCorrelation::new(Some(*self), ctx)
    }
}
