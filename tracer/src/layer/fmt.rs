//! [`WithLogCorrelation`]: a `tracing-subscriber` event formatter that adds the Datadog
//! correlation fields to each formatted log line.

use std::cell::RefCell;
use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::DdSpan;
use crate::Tracer;
use crate::log_correlation::LogCorrelation;
use crate::span::current_context;

/// Wraps a `tracing-subscriber` event formatter (`fmt::format()`, `.compact()`,
/// `.json()`, …) and adds `dd.trace_id`, `dd.span_id`, `dd.service`, `dd.env` and
/// `dd.version` to each line: as `key=value` pairs at the end of a text line, or as
/// fields of the object of a JSON line.
///
/// The line is formatted into a buffer first, so ANSI colours are not written.
#[derive(Debug, Clone)]
pub struct WithLogCorrelation<F> {
    inner: F,
    tracer: Option<Tracer>,
}

impl<F> WithLogCorrelation<F> {
    /// Wraps `inner`; service, env and version come from the first tracer built.
    pub fn new(inner: F) -> Self {
        Self { inner, tracer: None }
    }

    /// Takes service, env and version from `tracer`.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(tracer);
        self
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Inserts the correlation fields into one formatted line (JSON object or text).
pub(super) fn insert_correlation(line: &mut String, corr: &LogCorrelation) {
    let newline = line.ends_with('\n');
    if newline {
        line.pop();
    }
    if line.ends_with('}') && line.starts_with('{') {
        line.pop();
        let mut empty = line.ends_with('{');
        let _ = corr.write_pairs(|k, v| {
            let sep = if empty { "" } else { "," };
            empty = false;
            // Values are ids and configured names: escape what JSON needs.
            let value = v.to_string();
            fmt::Write::write_fmt(line, format_args!("{sep}\"{k}\":\"{}\"", json_escape(&value)))
        });
        line.push('}');
    } else {
        let _ = corr.write_pairs(|k, v| fmt::Write::write_fmt(line, format_args!(" {k}={v}")));
    }
    if newline {
        line.push('\n');
    }
}

fn json_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl<S, N, F> FormatEvent<S, N> for WithLogCorrelation<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // An explicit parent names the span; otherwise the innermost current span, ours or
        // an entered `tracing` span.
        let span_ctx = if event.parent().is_some() {
            ctx.event_scope()
                .and_then(|mut scope| scope.find_map(|s| s.extensions().get::<DdSpan>().and_then(|d| d.0.context())))
        } else {
            current_context()
        };
        let tracer = self.tracer.or_else(crate::log_correlation::default_tracer);
        let corr = LogCorrelation::new(tracer, span_ctx.as_ref());
        let mut format = |line: &mut String| -> fmt::Result {
            line.clear();
            self.inner.format_event(ctx, Writer::new(line), event)?;
            insert_correlation(line, &corr);
            writer.write_str(line)
        };
        match LINE.try_with(|l| l.try_borrow_mut().ok().map(|mut l| format(&mut l))) {
            Ok(Some(r)) => r,
            // Re-entered (a log written while formatting one) or thread exiting.
            _ => format(&mut String::new()),
        }
    }
}
