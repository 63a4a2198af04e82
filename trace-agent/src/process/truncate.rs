//! Tag truncation (the Go agent's truncator, run after obfuscation).

use super::normalize::truncate_utf8;
use crate::span::{Span, Str};

/// Meta and metric keys longer than this are cut and suffixed with `...`.
pub const MAX_META_KEY_LEN: usize = 200;
/// Meta values longer than this are cut and suffixed with `...`.
pub const MAX_META_VALUE_LEN: usize = 25_000;

fn cut(s: &Str<'_>, max: usize) -> Option<Str<'static>> {
    (s.len() > max).then(|| Str::from(format!("{}...", truncate_utf8(s, max))))
}

fn exempt(key: &str) -> bool {
    key.starts_with("_dd.") && (key.ends_with(".json") || key.ends_with(".msgpack") || key.ends_with(".protobuf"))
}

/// Truncates over-long meta keys/values and metric keys of `span`.
pub fn truncate_span(span: &mut Span<'_>) {
    for (k, v) in &mut span.meta {
        if let Some(c) = cut(k, MAX_META_KEY_LEN) {
            *k = c;
        }
        if v.len() > MAX_META_VALUE_LEN
            && !exempt(k)
            && let Some(c) = cut(v, MAX_META_VALUE_LEN)
        {
            *v = c;
        }
    }
    for (k, _) in &mut span.metrics {
        if let Some(c) = cut(k, MAX_META_KEY_LEN) {
            *k = c;
        }
    }
}
