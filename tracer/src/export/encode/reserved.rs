//! Tag keys the worker may add to a span, a bit each: one pass over the span's own tags
//! tells which of them it set (the span's value wins).

pub(super) const ENV: u16 = 1;
pub(super) const VERSION: u16 = 1 << 1;
pub(super) const LANGUAGE: u16 = 1 << 2;
pub(super) const RUNTIME_ID: u16 = 1 << 3;
pub(super) const DM: u16 = 1 << 4;
pub(super) const TID: u16 = 1 << 5;
pub(super) const ORIGIN: u16 = 1 << 6;
pub(super) const LINKS: u16 = 1 << 7;
pub(super) const EVENTS: u16 = 1 << 8;
pub(super) const HAS_EXCEPTION: u16 = 1 << 9;

/// The reserved keys among `meta`'s keys.
pub(super) fn meta_bits(meta: &[(crate::span::Str, crate::span::Str)]) -> u16 {
    meta.iter().fold(0, |b, (k, _)| b | meta_bit(k))
}

#[inline]
pub(super) fn meta_bit(key: &str) -> u16 {
    // Most tags (`http.*`, `span.kind`, `component`, `db.*`…) start with none of the
    // reserved keys' first letters: one compare instead of ten.
    if !matches!(key.as_bytes().first(), Some(b'e' | b'v' | b'l' | b'r' | b'_')) {
        return 0;
    }
    match key {
        "env" => ENV,
        "version" => VERSION,
        "language" => LANGUAGE,
        "runtime-id" => RUNTIME_ID,
        "_dd.p.dm" => DM,
        "_dd.p.tid" => TID,
        "_dd.origin" => ORIGIN,
        "_dd.span_links" => LINKS,
        "events" => EVENTS,
        "_dd.span_events.has_exception" => HAS_EXCEPTION,
        _ => 0,
    }
}

pub(super) const TOP_LEVEL: u8 = 1;
pub(super) const MEASURED: u8 = 1 << 1;
pub(super) const PROCESS_ID: u8 = 1 << 2;
pub(super) const PRIORITY: u8 = 1 << 3;
pub(super) const AGENT_PSR: u8 = 1 << 4;
pub(super) const RULE_PSR: u8 = 1 << 5;
pub(super) const LIMIT_PSR: u8 = 1 << 6;

#[inline]
pub(super) fn metric_bit(key: &str) -> u8 {
    if !matches!(key.as_bytes().first(), Some(b'_' | b'p')) {
        return 0;
    }
    match key {
        "_dd.top_level" => TOP_LEVEL,
        "_dd.measured" => MEASURED,
        "process_id" => PROCESS_ID,
        "_sampling_priority_v1" => PRIORITY,
        "_dd.agent_psr" => AGENT_PSR,
        "_dd.rule_psr" => RULE_PSR,
        "_dd.limit_psr" => LIMIT_PSR,
        _ => 0,
    }
}
