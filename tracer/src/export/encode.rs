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

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::buffer::TraceTags;
use crate::sampling::SamplingDecision;
use crate::span::{SpanBox, SpanData};

/// What the worker adds to every span: process-wide tags and identity.
#[derive(Debug, Clone)]
pub(crate) struct EncodeContext {
    pub(crate) service: String,
    pub(crate) env: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) global_tags: Vec<(String, String)>,
    pub(crate) runtime_id: String,
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

/// The v0.5 string table: each distinct string once, in first-use order.
#[derive(Debug)]
struct StringTable {
    index: HashMap<Box<str>, u32>,
    encoded: Vec<u8>,
}

impl StringTable {
    fn new() -> Self {
        let mut t = Self {
            index: HashMap::new(),
            encoded: Vec::with_capacity(4096),
        };
        t.intern("");
        t
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = u32::try_from(self.index.len()).unwrap_or(u32::MAX);
        write_str(&mut self.encoded, s);
        self.index.insert(s.into(), i);
        i
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
}

impl Payload {
    pub(crate) fn new(format: Format) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.resize(HEADER_LEN, 0);
        let table = (format == Format::V05).then(StringTable::new);
        Self {
            format,
            buf,
            table,
            traces: 0,
            spans: 0,
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

    /// Appends one chunk as one trace.
    pub(crate) fn push_chunk(&mut self, spans: &[SpanBox], header: ChunkHeader<'_>, ctx: &EncodeContext) {
        let len = u32::try_from(spans.len()).unwrap_or(u32::MAX);
        let _ = rmp::encode::write_array_len(&mut self.buf, len);
        for (i, span) in spans.iter().enumerate() {
            let mut out = Out {
                buf: &mut self.buf,
                table: self.table.as_mut(),
            };
            encode_span(&mut out, span, (i == 0).then_some(&header), ctx);
        }
        self.traces += 1;
        self.spans += spans.len() as u64;
    }

    /// The finished body. v0.4: the header is patched in place, no copy.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let count = self.traces.to_be_bytes();
        if let Some(h) = self.buf.get_mut(..HEADER_LEN) {
            h[0] = 0xdd;
            h[1..].copy_from_slice(&count);
        }
        match self.table {
            None => self.buf,
            Some(table) => {
                let mut out = Vec::with_capacity(16 + table.encoded.len() + self.buf.len());
                let _ = rmp::encode::write_array_len(&mut out, 2);
                let strings = u32::try_from(table.index.len()).unwrap_or(u32::MAX);
                let _ = rmp::encode::write_array_len(&mut out, strings);
                out.extend_from_slice(&table.encoded);
                out.extend_from_slice(&self.buf);
                out
            }
        }
    }
}

/// Where a span is written: the body, plus the string table for v0.5.
struct Out<'a> {
    buf: &'a mut Vec<u8>,
    table: Option<&'a mut StringTable>,
}

impl Out<'_> {
    /// A string: inline (v0.4) or as its string-table index (v0.5).
    fn string(&mut self, s: &str) {
        match self.table.as_deref_mut() {
            None => write_str(self.buf, s),
            Some(t) => {
                let i = t.intern(s);
                let _ = rmp::encode::write_uint(self.buf, u64::from(i));
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
    fn metric(&mut self, key: &str, value: f64) {
        self.string(key);
        let _ = rmp::encode::write_f64(self.buf, value);
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

/// For each entry, whether it is the last one with its key (the value that wins).
fn last_of_key<T>(items: &[(crate::span::Str, T)]) -> SmallVec<[bool; 16]> {
    let mut keep: SmallVec<[bool; 16]> = SmallVec::from_elem(true, items.len());
    for (i, (key, _)) in items.iter().enumerate() {
        if items.iter().skip(i + 1).any(|(later, _)| later == key) {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
        }
    }
    keep
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(buf, s);
}

fn encode_span(out: &mut Out<'_>, span: &SpanData, first: Option<&ChunkHeader<'_>>, ctx: &EncodeContext) {
    let service = span.service.as_deref().unwrap_or(&ctx.service);
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
    let mut tid_buf = [0u8; 16];
    let mut extra: SmallVec<[(&str, &str); 16]> = SmallVec::new();
    let has = |extra: &SmallVec<[(&str, &str); 16]>, k: &str| {
        span.meta.iter().any(|(key, _)| key.as_str() == k) || extra.iter().any(|(key, _)| *key == k)
    };
    if let Some(env) = ctx.env.as_deref() {
        if !has(&extra, "env") {
            extra.push(("env", env));
        }
    }
    if let Some(version) = ctx.version.as_deref() {
        if service == ctx.service && !has(&extra, "version") {
            extra.push(("version", version));
        }
    }
    for (k, v) in &ctx.global_tags {
        if !has(&extra, k) {
            extra.push((k.as_str(), v.as_str()));
        }
    }
    if entry {
        if !has(&extra, "language") {
            extra.push(("language", "rust"));
        }
        if !has(&extra, "runtime-id") {
            extra.push(("runtime-id", ctx.runtime_id.as_str()));
        }
    }
    if let Some(h) = first {
        if h.decision.priority > 0 && !has(&extra, "_dd.p.dm") {
            extra.push(("_dd.p.dm", h.decision.mechanism.as_dm()));
        }
        if span.trace_id.high() != 0 && !has(&extra, "_dd.p.tid") {
            extra.push(("_dd.p.tid", hex16(span.trace_id.high(), &mut tid_buf)));
        }
        if let Some(tags) = h.tags {
            if let Some(origin) = tags.origin.as_deref() {
                if !has(&extra, "_dd.origin") {
                    extra.push(("_dd.origin", origin));
                }
            }
            for (k, v) in &tags.propagated {
                if !has(&extra, k) {
                    extra.push((k.as_str(), v.as_str()));
                }
            }
        }
    }

    if let Some(j) = links_json.as_deref() {
        if !has(&extra, "_dd.span_links") {
            extra.push(("_dd.span_links", j));
        }
    }
    if let Some(j) = events_json.as_deref() {
        if !has(&extra, "events") {
            extra.push(("events", j));
        }
    }
    if has_exception && !has(&extra, "_dd.span_events.has_exception") {
        extra.push(("_dd.span_events.has_exception", "true"));
    }

    // --- metrics the worker adds ---
    let mut extra_metrics: SmallVec<[(&str, f64); 8]> = SmallVec::new();
    let has_metric = |extra: &SmallVec<[(&str, f64); 8]>, k: &str| {
        span.metrics.iter().any(|(key, _)| key.as_str() == k) || extra.iter().any(|(key, _)| *key == k)
    };
    if span.top_level && !has_metric(&extra_metrics, "_dd.top_level") {
        extra_metrics.push(("_dd.top_level", 1.0));
    }
    if span.measured && !has_metric(&extra_metrics, "_dd.measured") {
        extra_metrics.push(("_dd.measured", 1.0));
    }
    if entry && !has_metric(&extra_metrics, "process_id") {
        extra_metrics.push(("process_id", ctx.process_id));
    }
    if let Some(h) = first {
        let d = h.decision;
        if !has_metric(&extra_metrics, "_sampling_priority_v1") {
            extra_metrics.push(("_sampling_priority_v1", f64::from(d.priority)));
        }
        for (k, v) in [
            ("_dd.agent_psr", d.agent_rate),
            ("_dd.rule_psr", d.rule_rate),
            ("_dd.limit_psr", d.limit_rate),
        ] {
            if let Some(v) = v {
                if !has_metric(&extra_metrics, k) {
                    extra_metrics.push((k, v));
                }
            }
        }
    }

    let keep_meta = last_of_key(&span.meta);
    let own_meta = keep_meta.iter().filter(|k| **k).count();
    let meta_len = u32::try_from(own_meta + extra.len()).unwrap_or(u32::MAX);
    let keep_metrics = last_of_key(&span.metrics);
    let own_metrics = keep_metrics.iter().filter(|k| **k).count();
    let metrics_len = u32::try_from(own_metrics + extra_metrics.len()).unwrap_or(u32::MAX);
    let resource = span.resource.as_deref().unwrap_or(&span.name);
    let span_type = span.span_type.as_deref().unwrap_or("");

    if v05 {
        let _ = rmp::encode::write_array_len(out.buf, 12);
        out.string(service);
        out.string(&span.name);
        out.string(resource);
    } else {
        let fields = 12 + u32::from(native_links) + u32::from(native_events);
        let _ = rmp::encode::write_map_len(out.buf, fields);
    }
    out.field("trace_id");
    let _ = rmp::encode::write_uint(out.buf, span.trace_id.low());
    out.field("span_id");
    let _ = rmp::encode::write_uint(out.buf, span.span_id.to_u64());
    out.field("parent_id");
    let _ = rmp::encode::write_uint(out.buf, span.parent_id.to_u64());
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
    let _ = rmp::encode::write_sint(out.buf, span.start);
    out.field("duration");
    let _ = rmp::encode::write_sint(out.buf, span.duration.max(0));
    out.field("error");
    let _ = rmp::encode::write_uint(out.buf, u64::from(span.error));
    out.field("meta");
    let _ = rmp::encode::write_map_len(out.buf, meta_len);
    for ((k, v), _) in span.meta.iter().zip(&keep_meta).filter(|(_, keep)| **keep) {
        out.string(k);
        out.string(v);
    }
    for (k, v) in &extra {
        out.string(k);
        out.string(v);
    }
    out.field("metrics");
    let _ = rmp::encode::write_map_len(out.buf, metrics_len);
    for ((k, v), _) in span.metrics.iter().zip(&keep_metrics).filter(|(_, keep)| **keep) {
        out.metric(k, *v);
    }
    for (k, v) in &extra_metrics {
        out.metric(k, *v);
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

mod links;
#[cfg(test)]
mod tests;
