//! Attribute lookup in an OTLP span's attributes, then its resource's; the lookup the shared
//! naming rules (`apm_conventions::otel`: operation name, resource, span type) read through.

use std::borrow::Cow;

use apm_conventions::otel::{Attributes, Key};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use super::value_string;

/// The last value of `key` in `attrs` (OTLP keys are unique; a repeated key: the last wins).
fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// The string value of the first of `keys` set (non-empty) in `attrs`.
pub(super) fn attr_str<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<Cow<'a, str>> {
    keys.iter()
        .find_map(|k| Some(value_string(attr(attrs, k))).filter(|v| !v.is_empty()))
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Span attributes first, then the resource's (the Datadog agent's precedence).
pub(super) struct Lookup<'a> {
    pub(super) span: &'a [KeyValue],
    pub(super) res: &'a [KeyValue],
}

impl<'a> Lookup<'a> {
    pub(super) fn get(&self, keys: &[&str]) -> Option<Cow<'a, str>> {
        attr_str(self.span, keys).or_else(|| attr_str(self.res, keys))
    }

    pub(super) fn int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter()
            .find_map(|k| attr_int(self.span, k).or_else(|| attr_int(self.res, k)))
    }
}

impl<'a> Attributes<'a> for Lookup<'a> {
    /// One key: the span's value, else the resource's (Datadog looks up key by key, so a new
    /// semantic-convention key on the resource wins over an old one on the span).
    fn get(&self, key: Key) -> Option<Cow<'a, str>> {
        let keys = [key.name()];
        attr_str(self.span, &keys).or_else(|| attr_str(self.res, &keys))
    }
}
