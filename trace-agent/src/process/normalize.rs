//! Span and chunk normalization (spec section 3): fallbacks for empty fields, length caps,
//! tag-value and metric-name character rules, timestamp sanity. Fatal problems drop the chunk.

use std::borrow::Cow;

use crate::span::{Span, Str, TraceChunk, tag_remove};

/// Maximum service length in bytes.
pub const MAX_SERVICE_LEN: usize = 100;
/// Maximum span name length in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Maximum span type length in bytes.
pub const MAX_TYPE_LEN: usize = 100;
/// Default maximum resource length in bytes (`big_resource` feature: 15 000).
pub const MAX_RESOURCE_LEN: usize = 5000;
/// Tag normalization stops after this many characters…
pub const MAX_TAG_CHARS: usize = 200;
/// …or after this many input bytes.
const MAX_TAG_INPUT_BYTES: usize = 400;
/// Span name used when a span has none (or an invalid one).
pub const DEFAULT_SPAN_NAME: &str = "unnamed_operation";
/// `2000-01-01T00:00:00Z` in ns: earlier starts are replaced.
pub const YEAR_2000_NS: i64 = 946_684_800_000_000_000;

/// Why a chunk was dropped by normalization (counted per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NormalizeDrop {
    /// The chunk had no spans.
    EmptyTrace,
    /// A span's `trace_id` differs from the first span's.
    ForeignSpan,
    /// A span has `trace_id == 0`.
    TraceIdZero,
    /// A span has `span_id == 0`.
    SpanIdZero,
}

impl NormalizeDrop {
    /// Metric-style name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyTrace => "empty_trace",
            Self::ForeignSpan => "foreign_span",
            Self::TraceIdZero => "trace_id_zero",
            Self::SpanIdZero => "span_id_zero",
        }
    }
}

/// A non-fatal correction the normalizer made (counted, like the Go agent's receiver stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fix {
    /// Empty service replaced by the fallback.
    ServiceEmpty,
    /// Service longer than 100 bytes, truncated.
    ServiceTruncate,
    /// Service with no valid character at all, replaced by the fallback (a service that is only
    /// rewritten, e.g. lower-cased, is not counted, like in the Go agent).
    ServiceInvalid,
    /// Empty span name replaced.
    NameEmpty,
    /// Span name longer than 100 bytes, truncated.
    NameTruncate,
    /// Span name without any ASCII letter, replaced (rewrites are not counted).
    NameInvalid,
    /// Empty resource set to the name.
    ResourceEmpty,
    /// Resource truncated.
    ResourceTruncate,
    /// Negative or overflowing duration set to 0.
    InvalidDuration,
    /// Start before 2000 replaced.
    InvalidStartDate,
    /// Type truncated.
    TypeTruncate,
    /// Invalid `http.status_code` removed.
    InvalidHttpStatusCode,
}

impl Fix {
    /// Every fix, in counter order.
    pub const ALL: [Fix; 12] = [
        Fix::ServiceEmpty,
        Fix::ServiceTruncate,
        Fix::ServiceInvalid,
        Fix::NameEmpty,
        Fix::NameTruncate,
        Fix::NameInvalid,
        Fix::ResourceEmpty,
        Fix::ResourceTruncate,
        Fix::InvalidDuration,
        Fix::InvalidStartDate,
        Fix::TypeTruncate,
        Fix::InvalidHttpStatusCode,
    ];

    /// The Go agent's metric name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Fix::ServiceEmpty => "service_empty",
            Fix::ServiceTruncate => "service_truncate",
            Fix::ServiceInvalid => "service_invalid",
            Fix::NameEmpty => "span_name_empty",
            Fix::NameTruncate => "span_name_truncate",
            Fix::NameInvalid => "span_name_invalid",
            Fix::ResourceEmpty => "resource_empty",
            Fix::ResourceTruncate => "resource_truncate",
            Fix::InvalidDuration => "invalid_duration",
            Fix::InvalidStartDate => "invalid_start_date",
            Fix::TypeTruncate => "type_truncate",
            Fix::InvalidHttpStatusCode => "invalid_http_status_code",
        }
    }
}

/// Counts of [`Fix`]es.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixes([u64; Fix::ALL.len()]);

impl Fixes {
    /// Counts one fix.
    pub fn add(&mut self, fix: Fix) {
        if let Some(c) = self.0.get_mut(fix as usize) {
            *c += 1;
        }
    }

    /// How many times `fix` happened.
    pub fn get(&self, fix: Fix) -> u64 {
        self.0.get(fix as usize).copied().unwrap_or(0)
    }

    /// The non-zero counts.
    pub fn iter(&self) -> impl Iterator<Item = (Fix, u64)> + '_ {
        Fix::ALL.iter().map(|&f| (f, self.get(f))).filter(|(_, n)| *n > 0)
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Fixes) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

/// Settings of the normalizer.
#[derive(Debug, Clone)]
pub struct NormalizeConfig {
    /// Resource length cap in bytes.
    pub max_resource_len: usize,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self {
            max_resource_len: MAX_RESOURCE_LEN,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a UTF-8 boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn is_ascii_start(b: u8) -> bool {
    b.is_ascii_lowercase() || b == b':'
}

fn is_ascii_tag_char(b: u8) -> bool {
    is_ascii_start(b) || b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'-')
}

/// Fast path of the Go agent: already-normalized ASCII.
#[inline]
fn is_normalized_ascii_tag(tag: &[u8], check_start: bool) -> bool {
    if tag.is_empty() {
        return true;
    }
    if tag.len() > MAX_TAG_CHARS {
        return false;
    }
    if check_start && !tag.first().copied().is_some_and(is_ascii_start) {
        return false;
    }
    let mut i = 0;
    while let Some(&b) = tag.get(i) {
        if !is_ascii_tag_char(b) {
            if b != b'_' {
                return false;
            }
            // An underscore is fine only when a valid non-underscore character follows.
            i += 1;
            if !tag.get(i).copied().is_some_and(is_ascii_tag_char) {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// Fast path inline (already-normalized ASCII), the rewrite out of line.
#[inline]
fn normalize_tag_impl(s: &str, remove_leading_invalid: bool) -> Cow<'_, str> {
    if is_normalized_ascii_tag(s.as_bytes(), remove_leading_invalid) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(rewrite_tag(s, remove_leading_invalid))
}

#[cold]
fn rewrite_tag(s: &str, remove_leading_invalid: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = 0usize;
    let mut cut = false;
    let mut consumed = 0usize;
    for c in s.chars() {
        consumed += c.len_utf8();
        let mut c = c;
        if c.is_ascii_uppercase() {
            c = c.to_ascii_lowercase();
        } else if c.is_uppercase() {
            let mut low = c.to_lowercase();
            if let (Some(l), None) = (low.next(), low.next())
                && l.len_utf8() == c.len_utf8()
            {
                c = l;
            }
        }
        let legal_start = c.is_alphabetic() || c == ':';
        if legal_start || (!(remove_leading_invalid && chars == 0) && (c.is_numeric() || matches!(c, '.' | '/' | '-')))
        {
            if cut {
                out.push('_');
                cut = false;
            }
            out.push(c);
            chars += 1;
        } else if remove_leading_invalid && chars == 0 {
            // cannot start a tag: trimmed
        } else {
            chars += 1;
            cut = true;
        }
        if consumed >= MAX_TAG_INPUT_BYTES || chars >= MAX_TAG_CHARS {
            break;
        }
    }
    out
}

/// Go `NormalizeTag`: lowercase, legal characters, leading non-letters trimmed.
#[inline]
pub fn normalize_tag(s: &str) -> Cow<'_, str> {
    normalize_tag_impl(s, true)
}

/// Go `NormalizeTagValue` (service, env, peer.service): like [`normalize_tag`] but leading
/// digits and `.`/`/`/`-` are kept, and a leading illegal run becomes `_`.
#[inline]
pub fn normalize_tag_value(s: &str) -> Cow<'_, str> {
    normalize_tag_impl(s, false)
}

/// Byte classes of span names: 1 letter or digit, 2 `.`, 3 `_`, 0 anything else.
#[allow(clippy::indexing_slicing)] // `b < 256` by the loop condition, at compile time
const NAME_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() {
            1
        } else if c == b'.' {
            2
        } else if c == b'_' {
            3
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Whether `s` is already a normalized span name: an ASCII letter, then letters, digits, `.`
/// and `_` with no `_` after `_` or `.`, no `.` after `_`, and no trailing `_`.
#[inline]
fn is_normalized_name(s: &[u8]) -> bool {
    let Some(&first) = s.first() else { return false };
    if !first.is_ascii_alphabetic() || s.last() == Some(&b'_') {
        return false;
    }
    let mut prev = 1u8;
    for &b in s.iter().skip(1) {
        let class = NAME_CLASS.get(usize::from(b)).copied().unwrap_or(0);
        // After `_` only a letter or digit; after `.` anything but `_`.
        let ok = match class {
            1 => true,
            2 => prev != 3,
            3 => prev == 1,
            _ => false,
        };
        if !ok {
            return false;
        }
        prev = class;
    }
    true
}

/// Span-name (metric-name) normalization; `None` when the name has no ASCII letter at all.
#[inline]
pub fn normalize_name(s: &str) -> Option<Cow<'_, str>> {
    if is_normalized_name(s.as_bytes()) {
        return Some(Cow::Borrowed(s));
    }
    rewrite_name(s).map(Cow::Owned)
}

#[cold]
fn rewrite_name(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|b| b.is_ascii_alphabetic())?;
    // Only ASCII letters, digits, `.` and `_` are written, each as a `char` (no UTF-8 pass).
    let rest = bytes.get(start..).unwrap_or_default();
    let mut out = String::with_capacity(rest.len());
    for &b in rest {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else if b == b'.' {
            // `_.` becomes `.`.
            if out.ends_with('_') {
                out.pop();
            }
            out.push('.');
        } else if !out.is_empty() && !out.ends_with(['_', '.']) {
            out.push('_');
        }
    }
    if out.ends_with('_') {
        out.pop();
    }
    Some(out)
}

/// Normalizes a service name: `None` when it is already normal, else the replacement
/// (empty or invalid names fall back to `unnamed-<lang>-service`).
#[inline]
pub fn normalize_service(service: &str, lang: &str) -> Option<String> {
    // Fast path: a short, already-normalized name (the usual case) is left alone.
    if !service.is_empty() && service.len() <= MAX_SERVICE_LEN && is_normalized_ascii_tag(service.as_bytes(), false) {
        return None;
    }
    normalize_service_slow(service, lang)
}

#[cold]
fn normalize_service_slow(service: &str, lang: &str) -> Option<String> {
    let fallback = || {
        if lang.is_empty() {
            "unnamed-service".to_owned()
        } else {
            format!("unnamed-{lang}-service")
        }
    };
    if service.is_empty() {
        return Some(fallback());
    }
    let cut = truncate_utf8(service, MAX_SERVICE_LEN);
    match normalize_tag_value(cut) {
        Cow::Borrowed(s) if s.len() == service.len() => None,
        v if v.is_empty() => Some(fallback()),
        v => Some(v.into_owned()),
    }
}

/// Normalizes one span in place (spec section 3, per-span part).
pub fn normalize_span(span: &mut Span<'_>, lang: &str, now_ns: i64, config: &NormalizeConfig) {
    normalize_span_counted(span, lang, now_ns, config, &mut Fixes::default());
}

/// [`normalize_span`], counting what it corrected into `fixes`.
pub fn normalize_span_counted(
    span: &mut Span<'_>,
    lang: &str,
    now_ns: i64,
    config: &NormalizeConfig,
    fixes: &mut Fixes,
) {
    normalize_span_memo(span, lang, now_ns, config, fixes, &mut Seen::default());
}

/// Service and span-name strings of the request body already found normal, by address and
/// length: the decoder hands out one view for every copy of a repeated string
/// (`decode::str_cache`), so the spans of a payload mostly share a few service and name views,
/// and a view found normal once is normal again (same bytes) — the check is skipped. Only views
/// of the body are remembered: the body outlives processing, so an address cannot be reused by
/// another string meanwhile.
#[derive(Debug, Default)]
pub struct Seen {
    service: (usize, usize),
    name: (usize, usize),
}

/// Address and length of `s` when it borrows the body (`(0, 0)` otherwise: never remembered).
#[inline]
fn view_of(s: &Str<'_>) -> (usize, usize) {
    if s.is_borrowed() && !s.is_empty() {
        (s.as_ptr() as usize, s.len())
    } else {
        (0, 0)
    }
}

/// [`normalize_span_counted`] with `seen` remembering the normal service and name views.
fn normalize_span_memo(
    span: &mut Span<'_>,
    lang: &str,
    now_ns: i64,
    config: &NormalizeConfig,
    fixes: &mut Fixes,
    seen: &mut Seen,
) {
    let service_view = view_of(&span.service);
    if service_view.1 == 0 || service_view != seen.service {
        normalize_span_service(span, lang, fixes);
        if view_of(&span.service) == service_view {
            seen.service = service_view;
        }
    }
    let name_view = view_of(&span.name);
    if name_view.1 == 0 || name_view != seen.name {
        normalize_span_name(span, fixes);
        if view_of(&span.name) == name_view {
            seen.name = name_view;
        }
    }
    normalize_span_rest(span, now_ns, config, fixes);
}

fn normalize_span_service(span: &mut Span<'_>, lang: &str, fixes: &mut Fixes) {
    if span.service.is_empty() {
        fixes.add(Fix::ServiceEmpty);
    } else if span.service.len() > MAX_SERVICE_LEN {
        fixes.add(Fix::ServiceTruncate);
    }
    if let Some(service) = normalize_service(&span.service, lang) {
        // Only on change: was it a fallback for a name with no valid character at all?
        if !span.service.is_empty() && normalize_tag_value(truncate_utf8(&span.service, MAX_SERVICE_LEN)).is_empty() {
            fixes.add(Fix::ServiceInvalid);
        }
        span.service = Str::from(service);
    }
}

fn normalize_span_name(span: &mut Span<'_>, fixes: &mut Fixes) {
    if span.name.is_empty() {
        span.name = Str::from_static(DEFAULT_SPAN_NAME);
        fixes.add(Fix::NameEmpty);
    } else {
        let cut = truncate_utf8(&span.name, MAX_NAME_LEN);
        let cut_len = cut.len();
        if cut_len < span.name.len() {
            fixes.add(Fix::NameTruncate);
        }
        match normalize_name(cut) {
            None => {
                span.name = Str::from_static(DEFAULT_SPAN_NAME);
                fixes.add(Fix::NameInvalid);
            }
            Some(Cow::Borrowed(_)) if cut_len == span.name.len() => {}
            Some(v) => span.name = Str::from(v.into_owned()),
        }
    }
}

fn normalize_span_rest(span: &mut Span<'_>, now_ns: i64, config: &NormalizeConfig, fixes: &mut Fixes) {
    if span.resource.is_empty() {
        span.resource = span.name.clone();
        fixes.add(Fix::ResourceEmpty);
    } else if span.resource.len() > config.max_resource_len {
        span.resource = Str::from(truncate_utf8(&span.resource, config.max_resource_len).to_owned());
        fixes.add(Fix::ResourceTruncate);
    }
    if span.parent_id == span.trace_id && span.parent_id == span.span_id {
        span.parent_id = 0;
    }
    if span.duration < 0 || span.start.checked_add(span.duration).is_none() {
        span.duration = 0;
        fixes.add(Fix::InvalidDuration);
    }
    if span.start < YEAR_2000_NS {
        fixes.add(Fix::InvalidStartDate);
        span.start = (now_ns - span.duration).max(0);
        if span.start == 0 {
            span.start = now_ns;
        }
    }
    if span.r#type.len() > MAX_TYPE_LEN {
        span.r#type = Str::from(truncate_utf8(&span.r#type, MAX_TYPE_LEN).to_owned());
        fixes.add(Fix::TypeTruncate);
    }
    let mut bad_status = false;
    for (k, v) in &mut span.meta {
        match k.as_str() {
            "env" => {
                if let Cow::Owned(n) = normalize_tag_value(v) {
                    *v = Str::from(n);
                }
            }
            "peer.service" | "_dd.base_service" => {
                let normalized = normalize_tag_value(truncate_utf8(v, MAX_SERVICE_LEN));
                if normalized.len() != v.len() || matches!(normalized, Cow::Owned(_)) {
                    *v = Str::from(normalized.into_owned());
                }
            }
            "http.status_code" => {
                bad_status |= !v.parse::<i64>().is_ok_and(|c| (100..600).contains(&c));
            }
            _ => {}
        }
    }
    if bad_status {
        tag_remove(&mut span.meta, "http.status_code");
        fixes.add(Fix::InvalidHttpStatusCode);
    }
}

/// Checks the chunk-level rules and normalizes every span; a fatal problem drops the chunk.
///
/// # Errors
/// The [`NormalizeDrop`] reason of the first fatal problem.
pub fn normalize_chunk(
    chunk: &mut TraceChunk<'_>,
    lang: &str,
    now_ns: i64,
    config: &NormalizeConfig,
) -> Result<(), NormalizeDrop> {
    normalize_chunk_counted(chunk, lang, now_ns, config, &mut Fixes::default())
}

/// [`normalize_chunk`], counting span corrections into `fixes`.
///
/// # Errors
/// The [`NormalizeDrop`] reason of the first fatal problem.
pub fn normalize_chunk_counted(
    chunk: &mut TraceChunk<'_>,
    lang: &str,
    now_ns: i64,
    config: &NormalizeConfig,
    fixes: &mut Fixes,
) -> Result<(), NormalizeDrop> {
    normalize_chunk_seen(chunk, lang, now_ns, config, fixes, &mut Seen::default())
}

/// [`normalize_chunk_counted`] for the chunks of one payload, sharing `seen` between them.
///
/// # Errors
/// The [`NormalizeDrop`] reason of the first fatal problem.
pub fn normalize_chunk_seen(
    chunk: &mut TraceChunk<'_>,
    lang: &str,
    now_ns: i64,
    config: &NormalizeConfig,
    fixes: &mut Fixes,
    seen: &mut Seen,
) -> Result<(), NormalizeDrop> {
    let Some(first) = chunk.spans.first() else {
        return Err(NormalizeDrop::EmptyTrace);
    };
    let trace_id = first.trace_id;
    for span in &chunk.spans {
        if span.trace_id == 0 {
            return Err(NormalizeDrop::TraceIdZero);
        }
        if span.span_id == 0 {
            return Err(NormalizeDrop::SpanIdZero);
        }
        if span.trace_id != trace_id {
            return Err(NormalizeDrop::ForeignSpan);
        }
    }
    for span in &mut chunk.spans {
        normalize_span_memo(span, lang, now_ns, config, fixes, seen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The byte-vector rewrite the `char` one replaced.
    fn rewrite_name_by_bytes(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let start = bytes.iter().position(|b| b.is_ascii_alphabetic())?;
        let mut out: Vec<u8> = Vec::new();
        for &b in bytes.iter().skip(start) {
            if b.is_ascii_alphanumeric() {
                out.push(b);
            } else if b == b'.' {
                match out.last_mut() {
                    Some(last) if *last == b'_' => *last = b'.',
                    _ => out.push(b'.'),
                }
            } else if out.last().is_some_and(|&l| l != b'_' && l != b'.') {
                out.push(b'_');
            }
        }
        if out.last() == Some(&b'_') {
            out.pop();
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    proptest! {
        #[test]
        fn rewrite_name_agrees_with_the_byte_version(s in "[a-cA-C0-9._\\-&é ]{0,40}") {
            prop_assert_eq!(rewrite_name(&s), rewrite_name_by_bytes(&s));
        }
    }

    /// The byte-by-byte rule the class table replaced.
    fn is_normalized_name_by_bytes(s: &[u8]) -> bool {
        let Some(&first) = s.first() else { return false };
        if !first.is_ascii_alphabetic() || s.last() == Some(&b'_') {
            return false;
        }
        let mut prev = first;
        for &b in s.iter().skip(1) {
            let ok = match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
                b'.' => prev != b'_',
                b'_' => prev != b'_' && prev != b'.',
                _ => false,
            };
            if !ok {
                return false;
            }
            prev = b;
        }
        true
    }

    proptest! {
        /// Skipping the service and name checks for views already found normal changes
        /// nothing: spans sharing views of one body (valid, invalid, empty, too long, non-ASCII
        /// strings, as the decoder's string cache hands them out) normalize as one by one.
        #[test]
        fn remembered_views_normalize_as_without(
            picks in prop::collection::vec((0usize..8, 0usize..8), 1..40),
        ) {
            let long = "s".repeat(MAX_SERVICE_LEN + 5);
            let pool: [&str; 8] = ["web", "Web App", "", "flask.request", "_bad_", &long, "é-svc", "a__b"];
            let spans: Vec<Span<'_>> = picks
                .iter()
                .enumerate()
                .map(|(i, &(svc, name))| Span {
                    service: Str::borrowed(pool[svc]),
                    name: Str::borrowed(pool[name]),
                    trace_id: 7,
                    span_id: i as u64 + 1,
                    start: 1_700_000_000_000_000_000,
                    ..Span::default()
                })
                .collect();
            let mut chunk = TraceChunk::from_spans(spans.clone());
            let mut fixes = Fixes::default();
            let mut seen = Seen::default();
            let config = NormalizeConfig::default();
            normalize_chunk_seen(&mut chunk, "python", 0, &config, &mut fixes, &mut seen).unwrap();
            let mut one_by_one = spans;
            let mut expected = Fixes::default();
            for span in &mut one_by_one {
                normalize_span_counted(span, "python", 0, &config, &mut expected);
            }
            prop_assert_eq!(&chunk.spans, &one_by_one);
            prop_assert_eq!(fixes, expected);
        }

        #[test]
        fn name_fast_check_agrees_with_the_byte_rule(s in "[a-cA-Z0-9._\\-é ]{0,12}") {
            prop_assert_eq!(is_normalized_name(s.as_bytes()), is_normalized_name_by_bytes(s.as_bytes()));
        }
    }
}
