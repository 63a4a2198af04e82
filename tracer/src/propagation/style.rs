//! The propagation formats (`DD_TRACE_PROPAGATION_STYLE` values) and the settings that
//! choose them; `config/` reads them from the environment.

/// A propagation format (`DD_TRACE_PROPAGATION_STYLE` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Style {
    /// `datadog`: `x-datadog-trace-id`, `x-datadog-parent-id`,
    /// `x-datadog-sampling-priority`, `x-datadog-origin`, `x-datadog-tags`.
    Datadog,
    /// `tracecontext`: W3C `traceparent` and `tracestate` (with the `dd=` member).
    TraceContext,
    /// `b3multi`: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`.
    B3Multi,
    /// `b3` (or `b3 single header`): the single `b3` header.
    B3Single,
    /// `baggage`: the W3C `baggage` header (no trace context; see [`Baggage`](super::Baggage)).
    Baggage,
}

impl Style {
    /// Every style, in declaration order.
    pub const ALL: [Style; 5] = [
        Style::Datadog,
        Style::TraceContext,
        Style::B3Multi,
        Style::B3Single,
        Style::Baggage,
    ];

    /// The name in `DD_TRACE_PROPAGATION_STYLE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Datadog => "datadog",
            Self::TraceContext => "tracecontext",
            Self::B3Multi => "b3multi",
            Self::B3Single => "b3",
            Self::Baggage => "baggage",
        }
    }

    /// Parses a `DD_TRACE_PROPAGATION_STYLE` list (comma-separated, case-insensitive):
    /// `datadog`, `tracecontext`, `baggage`, `b3multi`, `b3` (the single header, as in
    /// ddtrace-py and OpenTelemetry; `b3 single header` is accepted too), `none`.
    ///
    /// # Errors
    /// The first entry that is not a supported style.
    pub fn parse_list(list: &str) -> Result<Vec<Style>, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let style = match item.to_ascii_lowercase().as_str() {
                "datadog" => Style::Datadog,
                "tracecontext" => Style::TraceContext,
                "b3multi" => Style::B3Multi,
                "b3" | "b3 single header" => Style::B3Single,
                "baggage" => Style::Baggage,
                "none" => continue,
                other => {
                    return Err(format!(
                        "unsupported propagation style {other:?} (supported: datadog, tracecontext, baggage, b3multi, b3, none)"
                    ));
                }
            };
            if !out.contains(&style) {
                out.push(style);
            }
        }
        Ok(out)
    }

    /// Parses an `OTEL_PROPAGATORS` list, skipping the propagators we do not have (OTel's
    /// rule for unknown entries).
    pub fn parse_otel_list(list: &str) -> Vec<Style> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim) {
            let style = match item.to_ascii_lowercase().as_str() {
                "tracecontext" => Style::TraceContext,
                "baggage" => Style::Baggage,
                "b3" => Style::B3Single,
                "b3multi" => Style::B3Multi,
                "datadog" => Style::Datadog,
                _ => continue,
            };
            if !out.contains(&style) {
                out.push(style);
            }
        }
        out
    }

    /// `datadog,tracecontext,baggage`, the default of Datadog's tracers.
    pub fn defaults() -> Vec<Style> {
        vec![Style::Datadog, Style::TraceContext, Style::Baggage]
    }
}

/// Which propagation formats are read from incoming and written to outgoing requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagationSettings {
    pub(crate) extract: Vec<Style>,
    pub(crate) inject: Vec<Style>,
    pub(crate) extract_first: bool,
}

impl Default for PropagationSettings {
    /// `datadog,tracecontext,baggage` both ways.
    fn default() -> Self {
        Self {
            extract: Style::defaults(),
            inject: Style::defaults(),
            extract_first: false,
        }
    }
}

impl PropagationSettings {
    /// Styles tried on incoming requests, in order.
    pub fn extract(&self) -> &[Style] {
        &self.extract
    }

    /// Styles written on outgoing requests.
    pub fn inject(&self) -> &[Style] {
        &self.inject
    }

    /// Whether extraction stops at the first valid context.
    pub fn extract_first(&self) -> bool {
        self.extract_first
    }
}
