//! Trace payload encoding (v0.4 and v0.5 msgpack), streamed chunk by chunk on the export
//! worker.
//!
//! v0.4: an array of traces, each an array of span maps. Its array header is written last
//! into 5 bytes reserved at the front (array32 form), so chunks are encoded once, straight
//! into the buffer that is sent.
//!
//! v0.5: `[string_table, traces]`; each span is a 12-element array
//! `[service, name, resource, trace_id, span_id, parent_id, start, duration, error, meta,
//! metrics, type]` whose strings (and meta/metrics keys and meta values) are indices into
//! the payload's string table, `""` at index 0. Repeated strings (service, tag keys,
//! resources) are sent once per payload.
//!
//! Most spans repeat what earlier spans of the payload said, so each payload keeps
//! [`Caches`]: the tags the worker adds (`env`, `runtime-id`, `_dd.p.dm`, …) encoded once
//! per combination ([`Standard`]), the encoded literal tags of the last span of each shape
//! ([`MetaMemo`]) and the v0.5 service/name/resource of the last span of each name
//! ([`HeadMemo`]). A span found there costs a compare of addresses and a copy of bytes
//! instead of a string-table lookup per string; the memos only trust addresses of
//! `&'static str`s (never reused for other text) and live for one payload (whose
//! string-table indices they hold). The tests check that every span decodes the same
//! whether its payload held earlier spans or not.

use smallvec::SmallVec;

use self::extra::{ExtraMeta, ExtraMetrics};
use self::memo::{Caches, Decided, HeadMemo, MetaMemo, Standard, same_text};
use self::table::{StringTable, Text};

use crate::sampling::SamplingDecision;
use crate::span::TraceTags;
use crate::span::{SpanBox, SpanData, Str};

/// What the worker adds to every span: process-wide tags and identity.
#[derive(Debug, Clone)]
pub(crate) struct EncodeContext {
    pub(crate) service: Str,
    pub(crate) env: Option<Str>,
    pub(crate) version: Option<Str>,
    pub(crate) global_tags: Vec<(Str, Str)>,
    pub(crate) runtime_id: Str,
    pub(crate) process_id: f64,
    /// The agent's `/info` says `span_events: true`: v0.4 spans carry `span_events`
    /// natively (else, and always in v0.5, the `events` JSON tag).
    pub(crate) native_span_events: bool,
}

/// Trace-level facts that go on the first span of a chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkHeader<'a> {
    pub(crate) decision: SamplingDecision,
    pub(crate) tags: Option<&'a TraceTags>,
}

const HEADER_LEN: usize = 5;

/// A trace intake format of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `/v0.4/traces`: span maps with inline strings.
    V04,
    /// `/v0.5/traces`: span arrays over a string table.
    V05,
}

impl Format {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::V04 => "/v0.4/traces",
            Self::V05 => "/v0.5/traces",
        }
    }
}

/// A payload under construction.
#[derive(Debug)]
pub(crate) struct Payload {
    format: Format,
    buf: Vec<u8>,
    table: Option<StringTable>,
    traces: u32,
    spans: u64,
    /// `_dd.p.tid` of the last chunk: the high 64 bits of its trace id, and their hex
    /// text (the same for every trace started in the same second).
    tid: Option<(u64, std::sync::Arc<str>)>,
    /// What this payload encodes the same way in many spans.
    caches: Caches,
}

impl Payload {
    pub(crate) fn new(format: Format) -> Self {
        Self::with_capacity(format, 0)
    }

    /// An empty payload with room for `bytes` (the previous payload's size, say).
    pub(crate) fn with_capacity(format: Format, bytes: usize) -> Self {
        let buf = Vec::with_capacity(bytes.clamp(64 * 1024, 4 * 1024 * 1024));
        Self::in_buffers(format, buf, None)
    }

    /// An empty payload in `buf` (cleared) and `table` (cleared; a new one if `None`).
    fn in_buffers(format: Format, mut buf: Vec<u8>, table: Option<StringTable>) -> Self {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        let table = match (format, table) {
            (Format::V05, Some(mut t)) => {
                t.clear();
                Some(t)
            }
            (Format::V05, None) => Some(StringTable::new()),
            (Format::V04, _) => None,
        };
        Self {
            format,
            buf,
            table,
            traces: 0,
            spans: 0,
            tid: None,
            caches: Caches::default(),
        }
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Encoded bytes so far.
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + self.table.as_ref().map_or(0, |t| t.encoded.len())
    }

    pub(crate) fn traces(&self) -> u32 {
        self.traces
    }

    pub(crate) fn spans(&self) -> u64 {
        self.spans
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.traces == 0
    }

    /// Appends one chunk as one trace. (`#[inline]`: one call site, on the export loop.)
    #[inline]
    pub(crate) fn push_chunk(&mut self, spans: &[SpanBox], header: ChunkHeader<'_>, ctx: &EncodeContext) {
        let len = u32::try_from(spans.len()).unwrap_or(u32::MAX);
        mp::array_len(&mut self.buf, len);
        let high = spans.first().map_or(0, |s| s.trace_id.high());
        if high != 0 && self.tid.as_ref().is_none_or(|(h, _)| *h != high) {
            let mut hex = [0u8; 16];
            self.tid = Some((high, std::sync::Arc::from(hex16(high, &mut hex))));
        }
        let tid = self.tid.as_ref().filter(|_| high != 0);
        for (i, span) in spans.iter().enumerate() {
            let mut out = Out {
                buf: &mut self.buf,
                table: self.table.as_mut(),
            };
            let first = (i == 0).then_some(FirstSpan { header: &header, tid });
            encode_span(&mut out, span, first, ctx, &mut self.caches);
        }
        self.traces += 1;
        self.spans += spans.len() as u64;
    }

    /// An empty payload built in the buffers of an earlier one (cleared, capacity kept):
    /// a multi-megabyte payload then costs no allocation and no page faults.
    pub(crate) fn reusing(format: Format, spare: Spare) -> Self {
        Self::in_buffers(format, spare.buf, spare.table)
    }

    /// The finished body, and (v0.5, where the body is a new buffer) the buffers the
    /// next payload can reuse.
    pub(crate) fn finish_recycling(mut self) -> (Vec<u8>, Option<Spare>) {
        self.patch_header();
        match self.table {
            None => (self.buf, None),
            Some(table) => {
                let body = finish_v05(&self.buf, &table);
                (
                    body,
                    Some(Spare {
                        buf: self.buf,
                        table: Some(table),
                    }),
                )
            }
        }
    }

    /// The finished body. v0.4: the header is patched in place, no copy.
    #[cfg(test)]
    pub(crate) fn finish(self) -> Vec<u8> {
        self.finish_recycling().0
    }

    /// Writes the trace count into the room reserved at the front (array32 form).
    fn patch_header(&mut self) {
        let count = self.traces.to_be_bytes();
        if let Some(h) = self.buf.get_mut(..HEADER_LEN) {
            h[0] = 0xdd;
            h[1..].copy_from_slice(&count);
        }
    }
}

/// The buffers of a sent payload, for the next one.
#[derive(Debug)]
pub(crate) struct Spare {
    buf: Vec<u8>,
    table: Option<StringTable>,
}

impl Spare {
    /// Bytes the buffers hold on to.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity() + self.table.as_ref().map_or(0, |t| t.encoded.capacity())
    }
}

/// A v0.5 body: `[string table, traces]` (`traces` is the payload's buffer, its array
/// header already patched).
fn finish_v05(traces: &[u8], table: &StringTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + table.encoded.len() + traces.len());
    mp::array_len(&mut out, 2);
    mp::array_len(&mut out, u32::try_from(table.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&table.encoded);
    out.extend_from_slice(traces);
    out
}

/// Where a span is written: the body, plus the string table for v0.5.
struct Out<'a> {
    buf: &'a mut Vec<u8>,
    table: Option<&'a mut StringTable>,
}

impl Out<'_> {
    /// A string: inline (v0.4) or as its string-table index (v0.5).
    #[inline(always)]
    fn string<'t>(&mut self, s: impl Into<Text<'t>>) {
        let s = s.into();
        match self.table.as_deref_mut() {
            None => write_str(self.buf, s.as_str()),
            Some(t) => {
                let i = t.intern_text(s);
                mp::uint(self.buf, u64::from(i));
            }
        }
    }

    /// A field name: v0.4 only (v0.5 spans are positional arrays).
    fn field(&mut self, name: &str) {
        if self.table.is_none() {
            write_str(self.buf, name);
        }
    }

    /// A metrics key: inline (v0.4) or an index (v0.5); the value is always a float.
    fn metric<'t>(&mut self, key: impl Into<Text<'t>>, value: f64) {
        self.string(key);
        mp::f64(self.buf, value);
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text::Other(s)
    }
}

fn hex16(v: u64, out: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        let nibble = (v >> ((15 - i) * 4)) & 0xf;
        *slot = DIGITS.get(nibble as usize).copied().unwrap_or(b'0');
    }
    std::str::from_utf8(out).unwrap_or("")
}

/// For each entry, whether it is the last one with its key (the value that wins); `None`
/// when no key repeats (the common case: nothing to skip).
fn last_of_key<T>(items: &[(crate::span::Str, T)]) -> Option<SmallVec<[bool; 16]>> {
    let repeats = |i: usize, key: &str| {
        items
            .iter()
            .skip(i + 1)
            .any(|(later, _)| later.len() == key.len() && later.as_str() == key)
    };
    let first = items.iter().enumerate().position(|(i, (k, _))| repeats(i, k))?;
    let mut keep: SmallVec<[bool; 16]> = SmallVec::from_elem(true, items.len());
    for (i, (key, _)) in items.iter().enumerate().skip(first) {
        if repeats(i, key) {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
        }
    }
    Some(keep)
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    mp::str(buf, s);
}

/// What only the first span of a chunk carries.
#[derive(Clone, Copy)]
struct FirstSpan<'a> {
    header: &'a ChunkHeader<'a>,
    /// `_dd.p.tid`, when the trace id has high bits: those bits, and their hex text.
    tid: Option<&'a (u64, std::sync::Arc<str>)>,
}

fn encode_span(
    out: &mut Out<'_>,
    span: &SpanData,
    first: Option<FirstSpan<'_>>,
    ctx: &EncodeContext,
    caches: &mut Caches,
) {
    let Caches {
        standard,
        meta: memos,
        head: heads,
    } = caches;
    let service: Text<'_> = span.service.as_ref().unwrap_or(&ctx.service).into();
    let entry = span.top_level || first.is_some();
    let v05 = out.table.is_some();
    // Links: a native field in v0.4, the `_dd.span_links` JSON tag in v0.5 (as ddtrace).
    // Events: native in v0.4 when the agent takes them, else the `events` JSON tag.
    let native_links = !v05 && !span.links.is_empty();
    let native_events = !v05 && ctx.native_span_events && !span.events.is_empty();
    let links_json = (v05 && !span.links.is_empty()).then(|| links::links_json(&span.links));
    let events_json = (!native_events && !span.events.is_empty()).then(|| links::events_json(&span.events));
    let has_exception = span.events.iter().any(|e| e.name == "exception");

    // --- meta the worker adds, skipping keys the span set itself ---
    // The span's own meta: as the last span with the same literal tags, or worked out.
    let memo_slot = MetaMemo::slot(&span.meta);
    let memo = memos.get(memo_slot).filter(|m| m.matches(&span.meta));
    let (own_bits, keep_meta, own_meta) = match memo {
        Some(m) => (m.bits, None, m.own),
        None => {
            let keep = last_of_key(&span.meta);
            let own = keep
                .as_ref()
                .map_or(span.meta.len(), |k| k.iter().filter(|k| **k).count());
            (reserved::meta_bits(&span.meta), keep, own)
        }
    };
    let memo_hit = memo.is_some();
    let mut extra = ExtraMeta::with_bits(own_bits);
    if ctx.env.is_some() {
        extra.standard(reserved::ENV, Standard::ENV);
    }
    if ctx.version.is_some() && same_text(service, &ctx.service) {
        extra.standard(reserved::VERSION, Standard::VERSION);
    }
    for (k, v) in &ctx.global_tags {
        extra.dynamic(span, k.into(), v.into());
    }
    if entry {
        extra.standard(reserved::LANGUAGE, Standard::LANGUAGE);
        extra.standard(reserved::RUNTIME_ID, Standard::RUNTIME_ID);
    }
    if let Some(FirstSpan { header: h, tid }) = first {
        if h.decision.priority > 0 {
            extra.standard(reserved::DM, Standard::DM);
        }
        if tid.is_some() {
            extra.standard(reserved::TID, Standard::TID);
        }
        if let Some(tags) = h.tags {
            if let Some(origin) = &tags.origin {
                extra.fixed(reserved::ORIGIN, "_dd.origin", origin.into());
            }
            for (k, v) in &tags.propagated {
                extra.dynamic(span, k.into(), v.into());
            }
        }
    }
    if let Some(j) = links_json.as_deref() {
        extra.fixed(reserved::LINKS, "_dd.span_links", Text::Other(j));
    }
    if let Some(j) = events_json.as_deref() {
        extra.fixed(reserved::EVENTS, "events", Text::Other(j));
    }
    if has_exception {
        extra.fixed(
            reserved::HAS_EXCEPTION,
            "_dd.span_events.has_exception",
            Text::Static("true"),
        );
    }

    // --- metrics the worker adds ---
    let mut extra_metrics = ExtraMetrics::new(span);
    if span.top_level {
        extra_metrics.standard(reserved::TOP_LEVEL, Standard::TOP_LEVEL);
    }
    if span.measured {
        extra_metrics.add(reserved::MEASURED, "_dd.measured", 1.0);
    }
    if entry {
        extra_metrics.standard(reserved::PROCESS_ID, Standard::PROCESS_ID);
    }
    if let Some(FirstSpan { header: h, .. }) = first {
        let d = h.decision;
        extra_metrics.standard(reserved::PRIORITY, Standard::PRIORITY);
        for (bit, k, v) in [
            (reserved::AGENT_PSR, "_dd.agent_psr", d.agent_rate),
            (reserved::RULE_PSR, "_dd.rule_psr", d.rule_rate),
            (reserved::LIMIT_PSR, "_dd.limit_psr", d.limit_rate),
        ] {
            if let Some(v) = v {
                extra_metrics.add(bit, k, v);
            }
        }
    }

    let meta_len =
        u32::try_from(own_meta + extra.items.len() + extra.standard.count_ones() as usize).unwrap_or(u32::MAX);
    let keep_metrics = last_of_key(&span.metrics);
    let own_metrics = keep_metrics
        .as_ref()
        .map_or(span.metrics.len(), |k| k.iter().filter(|k| **k).count());
    let metrics_len =
        u32::try_from(own_metrics + extra_metrics.items.len() + extra_metrics.standard.count_ones() as usize)
            .unwrap_or(u32::MAX);
    let resource = span.resource.as_ref().unwrap_or(&span.name);
    let span_type = span.span_type.as_ref().map_or(Text::Static(""), Text::from);

    if v05 {
        mp::array_len(out.buf, 12);
        let literals = HeadMemo::literals(span);
        let head = literals.and_then(|l| heads.get_mut(HeadMemo::slot(&l)).map(|h| (l, h)));
        match head {
            Some((l, h)) if h.literals == l && h.len > 0 => {
                out.buf.extend_from_slice(h.bytes.get(..h.len).unwrap_or_default());
            }
            head => {
                let from = out.buf.len();
                out.string(service);
                out.string(&span.name);
                out.string(resource);
                if let (Some((l, h)), Some(bytes)) = (head, out.buf.get(from..)) {
                    if let Some(dst) = h.bytes.get_mut(..bytes.len()) {
                        dst.copy_from_slice(bytes);
                        h.literals = l;
                        h.len = bytes.len();
                    }
                }
            }
        }
    } else {
        let fields = 12 + u32::from(native_links) + u32::from(native_events);
        mp::map_len(out.buf, fields);
    }
    out.field("trace_id");
    mp::uint(out.buf, span.trace_id.low());
    out.field("span_id");
    mp::uint(out.buf, span.span_id.to_u64());
    out.field("parent_id");
    mp::uint(out.buf, span.parent_id.to_u64());
    if !v05 {
        out.field("name");
        out.string(&span.name);
        out.field("service");
        out.string(service);
        out.field("resource");
        out.string(resource);
        out.field("type");
        out.string(span_type);
    }
    out.field("start");
    mp::sint(out.buf, span.start);
    out.field("duration");
    mp::sint(out.buf, span.duration.max(0));
    out.field("error");
    mp::uint(out.buf, u64::from(span.error));
    out.field("meta");
    mp::map_len(out.buf, meta_len);
    match memos.get_mut(memo_slot) {
        Some(m) if memo_hit => out.buf.extend_from_slice(&m.bytes),
        memo => {
            let from = out.buf.len();
            for (i, (k, v)) in span.meta.iter().enumerate() {
                if keep_meta
                    .as_ref()
                    .is_none_or(|keep| keep.get(i).copied().unwrap_or(true))
                {
                    out.string(k);
                    out.string(v);
                }
            }
            if let Some(m) = memo.filter(|_| !span.meta.is_empty()) {
                m.remember(&span.meta, out.buf.get(from..).unwrap_or_default(), own_meta, own_bits);
            }
        }
    }
    let decided = Decided {
        decision: first.map_or(SamplingDecision::new(0, crate::sampling::Mechanism::Default), |f| {
            f.header.decision
        }),
        tid: first.and_then(|f| f.tid),
    };
    standard.write(out, extra.standard, ctx, decided);
    for (k, v) in &extra.items {
        out.string(*k);
        out.string(*v);
    }
    out.field("metrics");
    mp::map_len(out.buf, metrics_len);
    for (i, (k, v)) in span.metrics.iter().enumerate() {
        if keep_metrics
            .as_ref()
            .is_none_or(|keep| keep.get(i).copied().unwrap_or(true))
        {
            out.metric(k, *v);
        }
    }
    standard.write(out, extra_metrics.standard, ctx, decided);
    for (k, v) in &extra_metrics.items {
        out.metric(Text::Static(k), *v);
    }
    if v05 {
        out.string(span_type);
    }
    if native_links {
        links::write_links(out.buf, &span.links);
    }
    if native_events {
        links::write_events(out.buf, &span.events);
    }
}

mod extra;
mod links;
mod memo;
mod mp;
mod reserved;
mod table;
#[cfg(test)]
mod tests;
