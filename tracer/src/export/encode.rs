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

/// The tags and metrics the worker adds to most spans with the same key and value in many
/// spans (`env`, `version`, `language`, `runtime-id`, `_dd.p.dm`; `_dd.top_level`,
/// `process_id`, `_sampling_priority_v1`), encoded once per payload at their first use
/// (v0.5: as string-table indices, which hold for that payload only), and so is each
/// combination of them a span gets: a span copies one run of bytes for its meta and one
/// for its metrics instead of looking up two strings per entry.
#[derive(Debug)]
struct Standard {
    bytes: Vec<u8>,
    /// Where each entry's key and value are in `bytes`, once made.
    at: [Option<(usize, usize)>; Standard::COUNT],
    /// Where each combination of entries (a bit each) is in `bytes`, once made: meta
    /// combinations first, then metrics ones (see [`Standard::combo`]).
    combos: [Option<(usize, usize)>; Standard::COMBOS],
    /// The decision and trace id high bits whose `_dd.p.dm`, priority and `_dd.p.tid`
    /// the entries hold.
    decision: (usize, i8, u64),
}

/// What the chunk-level entries of [`Standard`] say: the decision and `_dd.p.tid`.
#[derive(Clone, Copy)]
struct Decided<'a> {
    decision: SamplingDecision,
    tid: Option<&'a (u64, std::sync::Arc<str>)>,
}

impl Default for Standard {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            at: [None; Self::COUNT],
            combos: [None; Self::COMBOS],
            decision: (0, 0, 0),
        }
    }
}

impl Standard {
    // Meta entries (bits 0 to 5), then metrics entries.
    const ENV: usize = 0;
    const VERSION: usize = 1;
    const LANGUAGE: usize = 2;
    const RUNTIME_ID: usize = 3;
    const DM: usize = 4;
    const TID: usize = 5;
    const TOP_LEVEL: usize = 6;
    const PROCESS_ID: usize = 7;
    const PRIORITY: usize = 8;
    const COUNT: usize = 9;
    const META: usize = 6;
    /// Meta combinations, then metrics ones.
    const COMBOS: usize = (1 << Self::META) + (1 << (Self::COUNT - Self::META));
    /// The entries that depend on the chunk's decision and trace id.
    const DECIDED: u16 = (1 << Self::DM) | (1 << Self::TID) | (1 << Self::PRIORITY);

    /// Where combination `mask` (of meta entries only, or of metrics entries only) is.
    fn combo(mask: u16) -> usize {
        let mask = usize::from(mask);
        if mask < 1 << Self::META {
            mask
        } else {
            (1 << Self::META) + (mask >> Self::META)
        }
    }
    /// Bytes made before the entries are made afresh (a payload whose decisions keep
    /// changing).
    const MAX_BYTES: usize = 4096;

    /// Appends the entries whose bits are set in `mask` to `out`; `decision` gives the
    /// values of `_dd.p.dm` and `_sampling_priority_v1`.
    #[inline]
    fn write(&mut self, out: &mut Out<'_>, mask: u16, ctx: &EncodeContext, decided: Decided<'_>) {
        if mask == 0 {
            return;
        }
        if mask & Self::DECIDED != 0 {
            let d = decided.decision;
            let key = (
                d.mechanism.as_dm().as_ptr() as usize,
                d.priority,
                decided.tid.map_or(0, |t| t.0),
            );
            if key != self.decision {
                self.forget_decision(key);
            }
        }
        let range = match self.combos.get(Self::combo(mask)).copied().flatten() {
            Some(r) => r,
            None => self.make_combo(mask, out.table.as_deref_mut(), ctx, decided),
        };
        if let Some(bytes) = self.bytes.get(range.0..range.1) {
            out.buf.extend_from_slice(bytes);
        }
    }

    /// Forgets the entries (and combinations) that depend on the decision.
    #[cold]
    fn forget_decision(&mut self, key: (usize, i8, u64)) {
        self.decision = key;
        if self.bytes.len() > Self::MAX_BYTES {
            *self = Self {
                decision: key,
                ..Self::default()
            };
            return;
        }
        let metrics = (1..1 << (Self::COUNT - Self::META)).map(|m| m << Self::META);
        for mask in (0..1 << Self::META).chain(metrics) {
            if mask & Self::DECIDED != 0 {
                if let Some(combo) = self.combos.get_mut(Self::combo(mask)) {
                    *combo = None;
                }
            }
        }
        for i in [Self::DM, Self::TID, Self::PRIORITY] {
            if let Some(at) = self.at.get_mut(i) {
                *at = None;
            }
        }
    }

    /// Encodes the entries of `mask` one after the other.
    #[cold]
    fn make_combo(
        &mut self,
        mask: u16,
        mut table: Option<&mut StringTable>,
        ctx: &EncodeContext,
        decided: Decided<'_>,
    ) -> (usize, usize) {
        let entries = || (0..Self::COUNT).filter(move |i| mask & (1 << i) != 0);
        let ranges: SmallVec<[(usize, usize); Self::COUNT]> = entries()
            .map(|i| match self.at.get(i).copied().flatten() {
                Some(r) => r,
                None => self.make(i, table.as_deref_mut(), ctx, decided),
            })
            .collect();
        let from = self.bytes.len();
        for (a, b) in ranges {
            self.bytes.extend_from_within(a..b);
        }
        let range = (from, self.bytes.len());
        if let Some(combo) = self.combos.get_mut(Self::combo(mask)) {
            *combo = Some(range);
        }
        range
    }

    /// Encodes entry `i` (nothing if the context lacks its value, which callers do not
    /// ask for).
    fn make(
        &mut self,
        i: usize,
        table: Option<&mut StringTable>,
        ctx: &EncodeContext,
        decided: Decided<'_>,
    ) -> (usize, usize) {
        let decision = decided.decision;
        let from = self.bytes.len();
        let mut out = Out {
            buf: &mut self.bytes,
            table,
        };
        let mut pair = |key: &'static str, value: Option<Text<'_>>| {
            if let Some(value) = value {
                out.string(Text::Static(key));
                out.string(value);
            }
        };
        match i {
            Self::ENV => pair("env", ctx.env.as_ref().map(Text::from)),
            Self::VERSION => pair("version", ctx.version.as_ref().map(Text::from)),
            Self::LANGUAGE => pair("language", Some(Text::Static("rust"))),
            Self::RUNTIME_ID => pair("runtime-id", Some(Text::from(&ctx.runtime_id))),
            Self::DM => pair("_dd.p.dm", Some(Text::Static(decision.mechanism.as_dm()))),
            Self::TID => pair("_dd.p.tid", decided.tid.map(|t| Text::Shared(&t.1))),
            Self::TOP_LEVEL => out.metric(Text::Static("_dd.top_level"), 1.0),
            Self::PROCESS_ID => out.metric(Text::Static("process_id"), ctx.process_id),
            Self::PRIORITY => out.metric(Text::Static("_sampling_priority_v1"), f64::from(decision.priority)),
            _ => {}
        }
        let range = (from, self.bytes.len());
        if let Some(slot) = self.at.get_mut(i) {
            *slot = Some(range);
        }
        range
    }
}

/// The v0.5 head of the last span encoded with a given operation name and resource: its service, name
/// and resource, when each is a literal (or the tracer's service, or the name as the
/// resource), and their string-table indices.
#[derive(Debug, Default, Clone, Copy)]
struct HeadMemo {
    /// Address and length of the service (zero: the tracer's), name and resource (zero:
    /// the name).
    literals: [(usize, usize); 3],
    bytes: [u8; 16],
    len: usize,
}

impl HeadMemo {
    /// (Direct-mapped by name: room for a few names without collisions.)
    const SLOTS: usize = 16;

    /// The literals of `span`'s head, if they all are.
    #[inline]
    fn literals(span: &SpanData) -> Option<[(usize, usize); 3]> {
        let lit = |s: &Str| s.as_static().map(|t| (t.as_ptr() as usize, t.len()));
        let service = match &span.service {
            None => (0, 0),
            Some(s) => lit(s)?,
        };
        let resource = match &span.resource {
            None => (0, 0),
            Some(s) => lit(s)?,
        };
        Some([service, lit(&span.name)?, resource])
    }

    #[inline]
    /// By name and resource: spans of one operation name with several resources (the
    /// OpenTelemetry bridge names every internal span `internal`) each keep theirs.
    fn slot(literals: &[(usize, usize); 3]) -> usize {
        let [_, name, resource] = literals;
        let key = name.0 ^ resource.0.rotate_left(29);
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 40) % Self::SLOTS
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

/// Tag keys the worker may add to a span, a bit each: one pass over the span's own tags
/// tells which of them it set (the span's value wins).
mod reserved {
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
}

/// The meta the worker adds to a span, skipping keys the span (or an earlier addition)
/// already has.
struct ExtraMeta<'a> {
    items: SmallVec<[(Text<'a>, Text<'a>); 16]>,
    /// Reserved keys present, in the span or added.
    bits: u16,
    /// The [`Standard`] entries added (a bit each).
    standard: u16,
}

impl<'a> ExtraMeta<'a> {
    /// `bits`: the reserved keys the span's own meta has.
    fn with_bits(bits: u16) -> Self {
        Self {
            items: SmallVec::new(),
            bits,
            standard: 0,
        }
    }

    /// A reserved key whose key and value are [`Standard`] entry `i`.
    fn standard(&mut self, bit: u16, i: usize) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.standard |= 1 << i;
        }
    }

    /// A reserved key.
    fn fixed(&mut self, bit: u16, key: &'static str, value: Text<'a>) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.items.push((Text::Static(key), value));
        }
    }

    /// A key from configuration or upstream (global tags, propagated tags).
    fn dynamic(&mut self, span: &SpanData, key: Text<'a>, value: Text<'a>) {
        let k = key.as_str();
        match reserved::meta_bit(k) {
            0 => {
                if span.meta.iter().any(|(m, _)| m.as_str() == k) || self.items.iter().any(|(e, _)| e.as_str() == k) {
                    return;
                }
            }
            bit => {
                if self.bits & bit != 0 {
                    return;
                }
                self.bits |= bit;
            }
        }
        self.items.push((key, value));
    }
}

/// The metrics the worker adds, skipping keys the span has.
struct ExtraMetrics {
    items: SmallVec<[(&'static str, f64); 8]>,
    bits: u8,
    /// The [`Standard`] entries added (a bit each).
    standard: u16,
}

impl ExtraMetrics {
    fn new(span: &SpanData) -> Self {
        let bits = span.metrics.iter().fold(0, |b, (k, _)| b | reserved::metric_bit(k));
        Self {
            items: SmallVec::new(),
            bits,
            standard: 0,
        }
    }

    /// A reserved key whose key and value are [`Standard`] entry `i`.
    fn standard(&mut self, bit: u8, i: usize) {
        debug_assert!(i >= Standard::META, "a metrics entry");
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.standard |= 1 << i;
        }
    }

    fn add(&mut self, bit: u8, key: &'static str, value: f64) {
        if self.bits & bit == 0 {
            self.bits |= bit;
            self.items.push((key, value));
        }
    }
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

/// The caches of one payload's encoder.
#[derive(Debug, Default)]
struct Caches {
    standard: Standard,
    meta: [MetaMemo; MetaMemo::SLOTS],
    head: [HeadMemo; HeadMemo::SLOTS],
}

/// The own meta of the last span encoded with a given list of literal tags (keys and
/// values all `&'static str`, whose addresses never hold other text): the next span with
/// the same literals, in the same order, copies its encoded bytes (string-table indices
/// in v0.5, which hold for the payload the memo lives in) instead of looking up each
/// string and checking for repeated and reserved keys again.
#[derive(Debug, Default)]
struct MetaMemo {
    /// Address and length of each key and value.
    literals: Vec<[usize; 4]>,
    /// The encoded entries.
    bytes: Vec<u8>,
    /// Entries in `bytes` (a repeated key counts once).
    own: usize,
    /// The reserved keys among them.
    bits: u16,
}

impl MetaMemo {
    /// Memos per payload, a few shapes of spans interleaving (a tree's spans).
    const SLOTS: usize = 4;

    /// Where the memo of `meta`'s shape lives: by its length and first key.
    #[inline]
    fn slot(meta: &[(Str, Str)]) -> usize {
        let first = meta.first().map_or(0, |(k, _)| k.as_str().as_ptr() as usize);
        (first.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 40).wrapping_add(meta.len()) % Self::SLOTS
    }

    fn literal(s: &Str) -> Option<(usize, usize)> {
        s.as_static().map(|t| (t.as_ptr() as usize, t.len()))
    }

    /// Where `s`'s text is. Equal to a remembered literal's only if `s` is that literal:
    /// no other string can be at a `&'static str`'s address.
    #[inline]
    fn at(s: &Str) -> (usize, usize) {
        (s.as_str().as_ptr() as usize, s.len())
    }

    /// Whether `meta` is the list this memo remembers (never an empty one).
    #[inline]
    fn matches(&self, meta: &[(Str, Str)]) -> bool {
        !meta.is_empty()
            && self.literals.len() == meta.len()
            && meta
                .iter()
                .zip(&self.literals)
                .all(|((k, v), m)| Self::at(k) == (m[0], m[1]) && Self::at(v) == (m[2], m[3]))
    }

    /// Remembers `meta`, encoded as `bytes`, when it is all literals.
    fn remember(&mut self, meta: &[(Str, Str)], bytes: &[u8], own: usize, bits: u16) {
        self.literals.clear();
        for (k, v) in meta {
            match (Self::literal(k), Self::literal(v)) {
                (Some(k), Some(v)) => self.literals.push([k.0, k.1, v.0, v.1]),
                _ => {
                    self.literals.clear();
                    return;
                }
            }
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.own = own;
        self.bits = bits;
    }
}

/// Whether `t` is the text of `s` (by address first: the service is usually the
/// tracer's own string).
#[inline]
fn same_text(t: Text<'_>, s: &Str) -> bool {
    let (a, b) = (t.as_str(), s.as_str());
    std::ptr::eq(a, b) || a == b
}

mod links;
mod mp;
mod table;
#[cfg(test)]
mod tests;
