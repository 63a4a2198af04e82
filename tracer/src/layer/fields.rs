//! `tracing` field recording: span fields go straight into the span's data (special
//! names to span fields, the rest to `meta`/`metrics` by type); error events to error tags.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use crate::span::SpanData;
use crate::span::intern::{intern, intern_owned};
use crate::{Span, Str};

/// What a special field name sets.
#[derive(Clone, Copy)]
enum Special {
    Service,
    Resource,
    SpanType,
    Name,
    Kind,
    Error,
    ErrorTag(&'static str),
    StatusCode,
    StatusMessage,
    Measured,
}

fn special(name: &str) -> Option<Special> {
    // Most field names (`http.*`, `db.*`, `user.id`, …) cannot be special: skip the
    // string comparisons below by their first byte.
    if !matches!(name.as_bytes().first(), Some(b's' | b'r' | b'o' | b'e' | b'd')) {
        return None;
    }
    Some(match name {
        "service.name" | "dd.service" => Special::Service,
        "resource.name" | "dd.resource" => Special::Resource,
        "span.type" | "dd.span_type" => Special::SpanType,
        "otel.name" | "operation.name" | "dd.operation" => Special::Name,
        "otel.kind" | "span.kind" => Special::Kind,
        "error" => Special::Error,
        "error.message" => Special::ErrorTag("error.message"),
        "error.type" => Special::ErrorTag("error.type"),
        "error.stack" => Special::ErrorTag("error.stack"),
        "otel.status_code" => Special::StatusCode,
        "otel.status_message" | "otel.status_description" => Special::StatusMessage,
        "dd.measured" => Special::Measured,
        _ => return None,
    })
}

/// `span.kind` values without allocating for the usual ones.
fn kind_value(v: &str) -> Str {
    const KINDS: [&str; 5] = ["server", "client", "producer", "consumer", "internal"];
    KINDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(v))
        .map_or_else(|| Str::from(v.to_ascii_lowercase()), |k| Str::from_static(k))
}

/// Records span fields into a span's data.
pub(super) struct SpanFields<'a> {
    data: &'a mut SpanData,
    /// `on_record`: a key set again replaces its value; at creation keys are unique.
    replace: bool,
    status_error: bool,
    status_message: Option<Str>,
}

impl<'a> SpanFields<'a> {
    pub(super) fn new(data: &'a mut SpanData, replace: bool) -> Self {
        Self {
            data,
            replace,
            status_error: false,
            status_message: None,
        }
    }

    /// Applies what needs all fields (the OpenTelemetry-style status).
    pub(super) fn finish(self) {
        if self.status_error {
            self.data.error = true;
            if let Some(m) = self.status_message {
                self.data.set_meta(Str::from_static("error.message"), m);
            }
        }
    }

    #[inline]
    fn meta(&mut self, key: &'static str, value: Str) {
        if self.replace {
            self.data.set_meta(Str::from_static(key), value);
        } else {
            self.data.push_meta(Str::from_static(key), value);
        }
    }

    #[inline]
    fn metric(&mut self, key: &'static str, value: f64) {
        if self.replace {
            self.data.set_metric(Str::from_static(key), value);
        } else {
            self.data.push_metric(Str::from_static(key), value);
        }
    }

    /// A string-valued field; `value` is only built when needed.
    fn string(&mut self, field: &Field, value: &str) {
        let name = field.name();
        match special(name) {
            None => self.meta(name, intern(value)),
            Some(Special::Service) => self.data.service = Some(intern(value).into_shared()),
            Some(Special::Resource) => self.data.resource = Some(intern(value)),
            Some(Special::SpanType) => self.data.span_type = Some(intern(value)),
            Some(Special::Name) => self.data.name = intern(value),
            Some(Special::Kind) => {
                let kind = kind_value(value);
                self.meta("span.kind", kind);
            }
            Some(Special::Error) => {
                self.data.error = true;
                self.data
                    .set_meta(Str::from_static("error.message"), Str::from(value.to_owned()));
            }
            Some(Special::ErrorTag(tag)) => {
                self.data.error = true;
                self.data.set_meta(Str::from_static(tag), Str::from(value.to_owned()));
            }
            Some(Special::StatusCode) => self.status_error = value.eq_ignore_ascii_case("error"),
            Some(Special::StatusMessage) => self.status_message = Some(Str::from(value.to_owned())),
            Some(Special::Measured) => self.data.measured = matches!(value, "true" | "1"),
        }
    }

    fn flag(&mut self, field: &Field, value: bool) {
        let name = field.name();
        match special(name) {
            Some(Special::Error) => self.data.error = value,
            Some(Special::Measured) => self.data.measured = value,
            None => self.meta(name, Str::from_static(if value { "true" } else { "false" })),
            Some(_) => self.string(field, if value { "true" } else { "false" }),
        }
    }

    fn number(&mut self, field: &Field, value: f64) {
        let name = field.name();
        match special(name) {
            None => self.metric(name, value),
            Some(Special::Error) => self.data.error = value != 0.0,
            Some(Special::Measured) => self.data.measured = value != 0.0,
            Some(_) => self.string(field, &value.to_string()),
        }
    }
}

impl Visit for SpanFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        let name = field.name();
        match special(name) {
            None => self.meta(name, intern_owned(s)),
            Some(_) => self.string(field, &s),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.flag(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value as f64);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value as f64);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() == "error" {
            let (message, stack) = error_parts(value);
            self.data.error = true;
            self.data
                .set_meta(Str::from_static("error.message"), Str::from(message));
            self.data.set_meta(Str::from_static("error.stack"), Str::from(stack));
        } else {
            self.string(field, &value.to_string());
        }
    }
}

/// An error's message and its chain of sources (`error.stack`, as [`Span::set_error`]
/// writes it, without the type name the `dyn Error` no longer has).
fn error_parts(err: &(dyn std::error::Error + 'static)) -> (String, String) {
    use crate::span::error::{CAUSED_BY, with_causes};
    let message = err.to_string();
    let stack = with_causes(message.clone(), err, CAUSED_BY);
    (message, stack)
}

/// The error details of an event (`ERROR` level or with an `error` field).
#[derive(Default)]
pub(super) struct ErrorEvent {
    /// `Some(false)`: `error = false`, the event does not mark an error.
    flag: Option<bool>,
    error: Option<String>,
    message: Option<String>,
    kind: Option<String>,
    stack: Option<String>,
    is_error_level: bool,
}

impl ErrorEvent {
    pub(super) fn new(is_error_level: bool) -> Self {
        Self {
            is_error_level,
            ..Self::default()
        }
    }

    /// Marks `span` as an error with what the event carried.
    pub(super) fn apply(self, span: &mut Span) {
        let marks = match self.flag {
            Some(f) => f,
            None => self.is_error_level || self.error.is_some(),
        };
        if !marks {
            return;
        }
        span.set_error_flag(true);
        if let Some(m) = self.error.or(self.message) {
            span.set_tag("error.message", m);
        }
        if let Some(k) = self.kind {
            span.set_tag("error.type", k);
        }
        if let Some(s) = self.stack {
            span.set_tag("error.stack", s);
        }
    }

    fn string(&mut self, field: &Field, value: String) {
        match field.name() {
            "error" => self.error = Some(value),
            "message" => self.message = Some(value),
            "error.message" => self.error = Some(value),
            "error.type" => self.kind = Some(value),
            "error.stack" => self.stack = Some(value),
            _ => {}
        }
    }
}

impl Visit for ErrorEvent {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(
            field.name(),
            "error" | "message" | "error.message" | "error.type" | "error.stack"
        ) {
            self.string(field, format!("{value:?}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "error" {
            self.flag = Some(value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() == "error" {
            let (message, stack) = error_parts(value);
            self.error = Some(message);
            self.stack.get_or_insert(stack);
        } else {
            self.string(field, value.to_string());
        }
    }
}

/// The fields of a `tracing` event recorded as a span event.
#[derive(Default)]
pub(super) struct EventFields {
    message: Option<String>,
    attributes: Vec<(String, crate::AttributeValue)>,
}

impl EventFields {
    pub(super) fn into_event(self, meta: &tracing::Metadata<'_>) -> crate::SpanEvent {
        let mut attributes = self.attributes;
        attributes.push(("level".to_owned(), meta.level().as_str().into()));
        attributes.push(("target".to_owned(), meta.target().into()));
        let now = crate::clock::unix_nanos(crate::clock::now());
        crate::SpanEvent::new(self.message.unwrap_or_else(|| meta.name().to_owned()), now, attributes)
    }

    fn push(&mut self, field: &Field, value: crate::AttributeValue) {
        if field.name() == "message" {
            self.message = Some(value.to_string_value());
        } else if self.attributes.len() < 64 {
            self.attributes.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format!("{value:?}").into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).map_or_else(|_| crate::AttributeValue::from(value.to_string()), Into::into);
        self.push(field, v);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }
}

#[cfg(test)]
mod special_tests {
    #[test]
    fn every_special_name_passes_the_first_byte_filter_and_others_do_not() {
        for name in [
            "service.name",
            "dd.service",
            "resource.name",
            "dd.resource",
            "span.type",
            "dd.span_type",
            "otel.name",
            "operation.name",
            "dd.operation",
            "otel.kind",
            "span.kind",
            "error",
            "error.message",
            "error.type",
            "error.stack",
            "otel.status_code",
            "otel.status_message",
            "otel.status_description",
            "dd.measured",
        ] {
            assert!(super::special(name).is_some(), "{name}");
        }
        for name in ["http.method", "component", "user.id", "", "span.kinds", "errors"] {
            assert!(super::special(name).is_none(), "{name}");
        }
    }
}
