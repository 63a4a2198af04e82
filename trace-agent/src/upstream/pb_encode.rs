//! Protobuf encoding of `AgentPayload`s, byte for byte what prost writes.
//!
//! * [`EncodedPayload::from_borrowed`]: a processed tracer payload straight from the borrowed
//!   span model ([`crate::span`]) to protobuf bytes, chunk by chunk, with no owned `pb::Span`
//!   in between (that copy, a `String` per field and tag and a hash map per span, was 57 % of
//!   the full path); [`encode_agent_payload_parts`] then writes an `AgentPayload` from chunk
//!   ranges of such payloads by copying bytes (the Datadog writer's batches).
//! * [`encode_agent_payload`]: from owned `pb::TracerPayload`s, computing each span's length
//!   once (prost's nested `message::encode` asks every message for its length before writing
//!   it, so a span's length was computed once per enclosing message); kept for writers and
//!   tests that hold `pb` types.
//!
//! Nested lengths are written without a length pass: two bytes are set aside and the body is
//! moved in the rare case its length needs another number of bytes ([`nested`]).

use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use prost::encoding::{
    WireType, bool as pb_bool, encode_key, encode_varint, encoded_len_varint, hash_map, int32, key_len,
};
use prost::encoding::{message, string};

use super::pb;
use crate::span;
use wire::{estimated_chunk_len, str_field, str_map_field, write_borrowed_chunk};

mod wire;

/// `AgentPayload.tracerPayloads`.
const AGENT_TRACER_PAYLOADS: u32 = 5;
/// `TracerPayload.chunks`.
const PAYLOAD_CHUNKS: u32 = 6;
/// `TraceChunk.spans`.
const CHUNK_SPANS: u32 = 3;

/// Encodes `header` with `payloads` as its `tracerPayloads` (field 5) without copying them:
/// protobuf fields may come in any order, so the header's own fields are written first.
pub fn encode_agent_payload(header: &pb::AgentPayload, payloads: &[Arc<pb::TracerPayload>]) -> Vec<u8> {
    let mut lens = Lengths::default();
    let payload_lens: Vec<usize> = payloads.iter().map(|p| lens.payload(p)).collect();
    let size = header.encoded_len()
        + payload_lens
            .iter()
            .map(|&l| delimited_len(AGENT_TRACER_PAYLOADS, l))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    // Writing into a Vec cannot run out of space.
    let _ = header.encode(&mut buf);
    let mut chunk_lens = lens.chunks.iter().copied();
    let mut span_lens = lens.spans.iter().copied();
    for (p, len) in payloads.iter().zip(payload_lens) {
        delimiter(AGENT_TRACER_PAYLOADS, len, &mut buf);
        write_payload(p, &mut chunk_lens, &mut span_lens, &mut buf);
    }
    buf
}

/// Encoded lengths of every chunk and span, in the order they are written.
#[derive(Default)]
struct Lengths {
    chunks: Vec<usize>,
    spans: Vec<usize>,
}

impl Lengths {
    fn payload(&mut self, p: &pb::TracerPayload) -> usize {
        let chunks: usize = p
            .chunks
            .iter()
            .map(|c| delimited_len(PAYLOAD_CHUNKS, self.chunk(c)))
            .sum();
        let mut len = chunks + string_len(1, &p.container_id) + string_len(2, &p.language_name);
        len += string_len(3, &p.language_version) + string_len(4, &p.tracer_version);
        len += string_len(5, &p.runtime_id) + tags_len(7, &p.tags) + string_len(8, &p.env);
        len += string_len(9, &p.hostname) + string_len(10, &p.app_version);
        len + p.container_debug.as_ref().map_or(0, |d| message::encoded_len(11, d))
    }

    fn chunk(&mut self, c: &pb::TraceChunk) -> usize {
        let slot = self.chunks.len();
        self.chunks.push(0);
        let spans: usize = c
            .spans
            .iter()
            .map(|s| {
                let l = s.encoded_len();
                self.spans.push(l);
                delimited_len(CHUNK_SPANS, l)
            })
            .sum();
        let mut len = spans + string_len(2, &c.origin) + tags_len(4, &c.tags);
        if c.priority != 0 {
            len += int32::encoded_len(1, &c.priority);
        }
        if c.dropped_trace {
            len += pb_bool::encoded_len(5, &c.dropped_trace);
        }
        if let Some(s) = self.chunks.get_mut(slot) {
            *s = len;
        }
        len
    }
}

fn write_payload(
    p: &pb::TracerPayload,
    chunk_lens: &mut impl Iterator<Item = usize>,
    span_lens: &mut impl Iterator<Item = usize>,
    buf: &mut Vec<u8>,
) {
    write_string(1, &p.container_id, buf);
    write_string(2, &p.language_name, buf);
    write_string(3, &p.language_version, buf);
    write_string(4, &p.tracer_version, buf);
    write_string(5, &p.runtime_id, buf);
    for c in &p.chunks {
        delimiter(PAYLOAD_CHUNKS, chunk_lens.next().unwrap_or_default(), buf);
        write_chunk(c, span_lens, buf);
    }
    write_tags(7, &p.tags, buf);
    write_string(8, &p.env, buf);
    write_string(9, &p.hostname, buf);
    write_string(10, &p.app_version, buf);
    if let Some(d) = &p.container_debug {
        message::encode(11, d, buf);
    }
}

fn write_chunk(c: &pb::TraceChunk, span_lens: &mut impl Iterator<Item = usize>, buf: &mut Vec<u8>) {
    if c.priority != 0 {
        int32::encode(1, &c.priority, buf);
    }
    write_string(2, &c.origin, buf);
    for s in &c.spans {
        delimiter(CHUNK_SPANS, span_lens.next().unwrap_or_default(), buf);
        s.encode_raw(buf);
    }
    write_tags(4, &c.tags, buf);
    if c.dropped_trace {
        pb_bool::encode(5, &c.dropped_trace, buf);
    }
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn delimiter(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// proto3: an empty string is not written.
fn string_len(tag: u32, s: &String) -> usize {
    if s.is_empty() { 0 } else { string::encoded_len(tag, s) }
}

fn write_string(tag: u32, s: &String, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        string::encode(tag, s, buf);
    }
}

fn tags_len(tag: u32, tags: &std::collections::HashMap<String, String>) -> usize {
    hash_map::encoded_len(string::encoded_len, string::encoded_len, tag, tags)
}

fn write_tags(tag: u32, tags: &std::collections::HashMap<String, String>, buf: &mut Vec<u8>) {
    hash_map::encode(
        string::encode,
        string::encoded_len,
        string::encode,
        string::encoded_len,
        tag,
        tags,
        buf,
    );
}

// ---------------------------------------------------------------------------------------------
// Straight from the borrowed span model.
// ---------------------------------------------------------------------------------------------

/// One tracer payload encoded as protobuf `TracerPayload` fields, chunk by chunk, straight from
/// the borrowed span model (no owned `pb::Span` in between): the Datadog writer cuts batches
/// out of it at chunk boundaries and writes `AgentPayload`s by copying bytes.
///
/// Layout of `buf`: the payload's fields 1–5, then each chunk's `TraceChunk` message body (no
/// key, no length: those depend on nothing but the body's length and are written when the
/// chunk is put into a payload), then fields 7–11. Written in field order with proto3's rules
/// (defaults left out, map entries skipping an empty key or value), this is what prost writes
/// for the converted `pb::TracerPayload` (`upstream::convert`); maps are written in the order
/// of the span model's tag list, keeping only the last entry of a repeated key (where
/// `convert` builds a `HashMap`, whose order is random).
#[derive(Debug, Clone, Default)]
pub struct EncodedPayload {
    buf: Vec<u8>,
    /// End of fields 1–5 (start of the first chunk).
    pre_end: usize,
    /// End offset of each chunk's body; the last one is where fields 7–11 start.
    chunk_ends: Vec<usize>,
    /// Metadata the writers read without decoding (extend here, not by decoding `buf`).
    pub meta: PayloadMeta,
}

/// What a writer needs to know about an [`EncodedPayload`] without decoding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadMeta {
    /// `TracerPayload.languageName` (`X-Datadog-Reported-Languages`).
    pub language_name: String,
    /// Spans in each chunk, in order.
    pub chunk_spans: Vec<u32>,
    /// Service of each chunk's root span (the span ledger's per-service counts), as an index
    /// into `services`.
    pub chunk_service: Vec<u32>,
    /// Distinct root services, in first-seen order.
    pub services: Vec<String>,
}

impl PayloadMeta {
    /// Records one chunk: its span count and root service.
    fn push_chunk(&mut self, spans: usize, root_service: &str) {
        self.chunk_spans.push(u32::try_from(spans).unwrap_or(u32::MAX));
        // Payloads hold few services, mostly one: the last one first, then a short scan.
        let i = match self.services.iter().rposition(|s| s == root_service) {
            Some(i) => i,
            None => {
                self.services.push(root_service.to_owned());
                self.services.len() - 1
            }
        };
        self.chunk_service.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
}

/// The encoded bytes per span of the last payload a writer encoded (plus an eighth), so the
/// next payload's buffer is sized without a pass over its tags: an encoder that runs on a
/// stream of payloads ([`EncodedPayload::from_borrowed_sized`], the forwarding stage) keeps one.
/// A payload with bigger spans than the last one grows its buffer (amortized doubling).
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeHint {
    per_span: usize,
}

impl SizeHint {
    /// Buffer capacity for `tp`: from the last payload, else an upper estimate from its spans.
    fn capacity(&self, tp: &span::TracerPayload<'_>) -> usize {
        256 + if self.per_span == 0 {
            tp.chunks.iter().map(estimated_chunk_len).sum()
        } else {
            tp.span_count().saturating_mul(self.per_span)
        }
    }

    fn learn(&mut self, len: usize, spans: usize) {
        if let Some(per_span) = len.checked_div(spans) {
            self.per_span = per_span + per_span / 8 + 1;
        }
    }
}

impl EncodedPayload {
    /// Encodes a processed payload (typically: the kept chunks).
    pub fn from_borrowed(tp: &span::TracerPayload<'_>) -> Self {
        Self::from_borrowed_sized(tp, &mut SizeHint::default())
    }

    /// [`Self::from_borrowed`], sizing the buffer from `hint` (and updating it).
    pub fn from_borrowed_sized(tp: &span::TracerPayload<'_>, hint: &mut SizeHint) -> Self {
        let mut buf = Vec::with_capacity(hint.capacity(tp));
        let mut scratch = Vec::new();
        str_field(1, &tp.container_id, &mut buf);
        str_field(2, &tp.language_name, &mut buf);
        str_field(3, &tp.language_version, &mut buf);
        str_field(4, &tp.tracer_version, &mut buf);
        str_field(5, &tp.runtime_id, &mut buf);
        let pre_end = buf.len();
        let mut chunk_ends = Vec::with_capacity(tp.chunks.len());
        let mut meta = PayloadMeta {
            language_name: tp.language_name.as_str().to_owned(),
            chunk_spans: Vec::with_capacity(tp.chunks.len()),
            chunk_service: Vec::with_capacity(tp.chunks.len()),
            services: Vec::new(),
        };
        for c in &tp.chunks {
            write_borrowed_chunk(c, &mut buf, &mut scratch);
            chunk_ends.push(buf.len());
            let root = crate::process::toplevel::root_index(&c.spans).and_then(|i| c.spans.get(i));
            meta.push_chunk(c.spans.len(), root.map_or("", |s| s.service.as_str()));
        }
        str_map_field(7, &tp.tags, &mut buf, &mut scratch);
        str_field(8, &tp.env, &mut buf);
        str_field(9, &tp.hostname, &mut buf);
        str_field(10, &tp.app_version, &mut buf);
        hint.learn(buf.len(), tp.span_count());
        Self {
            buf,
            pre_end,
            chunk_ends,
            meta,
        }
    }

    /// Encodes an owned payload (writers fed `pb` types, tests): the same bytes prost writes.
    pub fn from_pb(tp: &pb::TracerPayload) -> Self {
        let mut buf = Vec::new();
        write_string(1, &tp.container_id, &mut buf);
        write_string(2, &tp.language_name, &mut buf);
        write_string(3, &tp.language_version, &mut buf);
        write_string(4, &tp.tracer_version, &mut buf);
        write_string(5, &tp.runtime_id, &mut buf);
        let pre_end = buf.len();
        let mut chunk_ends = Vec::with_capacity(tp.chunks.len());
        let mut meta = PayloadMeta {
            language_name: tp.language_name.clone(),
            ..PayloadMeta::default()
        };
        for c in &tp.chunks {
            c.encode_raw(&mut buf);
            chunk_ends.push(buf.len());
            let root = crate::ledger::pb_root(&c.spans);
            meta.push_chunk(c.spans.len(), root.map_or("", |s| s.service.as_str()));
        }
        write_tags(7, &tp.tags, &mut buf);
        write_string(8, &tp.env, &mut buf);
        write_string(9, &tp.hostname, &mut buf);
        write_string(10, &tp.app_version, &mut buf);
        if let Some(d) = &tp.container_debug {
            message::encode(11, d, &mut buf);
        }
        Self {
            buf,
            pre_end,
            chunk_ends,
            meta,
        }
    }

    /// Trace chunks inside.
    pub fn chunks(&self) -> usize {
        self.chunk_ends.len()
    }

    /// Spans per root service inside chunks `range` (the span ledger's ticket).
    pub fn service_spans(&self, range: Range<usize>) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let (Some(spans), Some(services)) = (
            self.meta.chunk_spans.get(range.clone()),
            self.meta.chunk_service.get(range),
        ) else {
            return out;
        };
        for (&n, &s) in spans.iter().zip(services) {
            let Some(name) = self.meta.services.get(s as usize) else {
                continue;
            };
            match out.iter_mut().find(|(k, _)| k == name) {
                Some(e) => e.1 += u64::from(n),
                None => out.push((name.clone(), u64::from(n))),
            }
        }
        out
    }

    /// Spans inside chunks `range`.
    pub fn spans(&self, range: Range<usize>) -> u64 {
        self.meta
            .chunk_spans
            .get(range)
            .map_or(0, |s| s.iter().map(|&n| u64::from(n)).sum())
    }

    fn chunk(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(prev) => self.chunk_ends.get(prev).copied().unwrap_or(self.pre_end),
            None => self.pre_end,
        };
        let end = self.chunk_ends.get(i).copied().unwrap_or(start);
        self.buf.get(start..end).unwrap_or_default()
    }

    fn post(&self) -> &[u8] {
        let start = self.chunk_ends.last().copied().unwrap_or(self.pre_end);
        self.buf.get(start..).unwrap_or_default()
    }

    /// Encoded length of chunk `i` as a `chunks` field (key, length, body).
    pub fn chunk_field_len(&self, i: usize) -> usize {
        delimited_len(PAYLOAD_CHUNKS, self.chunk(i).len())
    }

    /// Length of a `TracerPayload` message holding this payload's fields and no chunk.
    pub fn header_len(&self) -> usize {
        self.pre_end + self.post().len()
    }

    /// Length of the `TracerPayload` message made of chunks `range` (with every other field).
    pub fn message_len(&self, range: Range<usize>) -> usize {
        self.header_len() + range.map(|i| self.chunk_field_len(i)).sum::<usize>()
    }

    /// Writes the `TracerPayload` message body made of chunks `range`.
    fn write(&self, range: Range<usize>, out: &mut Vec<u8>) {
        out.extend_from_slice(self.buf.get(..self.pre_end).unwrap_or_default());
        for i in range {
            let c = self.chunk(i);
            delimiter(PAYLOAD_CHUNKS, c.len(), out);
            out.extend_from_slice(c);
        }
        out.extend_from_slice(self.post());
    }

    /// The `pb` form (decoded back with prost), for writers that take owned types.
    pub fn to_pb(&self) -> pb::TracerPayload {
        let mut out = Vec::with_capacity(self.message_len(0..self.chunks()));
        self.write(0..self.chunks(), &mut out);
        pb::TracerPayload::decode(out.as_slice()).unwrap_or_default()
    }
}

/// Chunks `range` of one encoded payload: a part of an `AgentPayload`.
#[derive(Debug, Clone)]
pub struct Part {
    /// The payload.
    pub payload: Arc<EncodedPayload>,
    /// Which of its chunks.
    pub chunks: Range<usize>,
}

impl Part {
    /// Encoded length of this part as an `AgentPayload.tracerPayloads` field.
    pub fn field_len(&self) -> usize {
        delimited_len(AGENT_TRACER_PAYLOADS, self.payload.message_len(self.chunks.clone()))
    }
}

/// Writes `header` with `parts` as its `tracerPayloads` into `out` (cleared first): the bytes
/// [`encode_agent_payload`] writes for the same payloads.
pub fn encode_agent_payload_parts(header: &pb::AgentPayload, parts: &[Part], out: &mut Vec<u8>) {
    out.clear();
    let lens: Vec<usize> = parts.iter().map(|p| p.payload.message_len(p.chunks.clone())).collect();
    let size = header.encoded_len()
        + lens
            .iter()
            .map(|&l| delimited_len(AGENT_TRACER_PAYLOADS, l))
            .sum::<usize>();
    out.reserve(size);
    // Writing into a Vec cannot run out of space.
    let _ = header.encode(out);
    for (p, len) in parts.iter().zip(lens) {
        delimiter(AGENT_TRACER_PAYLOADS, len, out);
        p.payload.write(p.chunks.clone(), out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::span::Str;
    use crate::upstream::convert;

    fn span(i: u64, tags: usize) -> pb::Span {
        pb::Span {
            service: "web".into(),
            name: "flask.request".into(),
            resource: format!("GET /{i}"),
            trace_id: i,
            span_id: i + 1,
            parent_id: 0,
            start: 1_700_000_000_000_000_000,
            duration: 1_000 * i as i64,
            error: (i % 2) as i32,
            meta: (0..tags).map(|t| (format!("k{t}"), "v".repeat(t * 40))).collect(),
            metrics: HashMap::from([("_dd.top_level".to_owned(), 1.0)]),
            r#type: "web".into(),
            meta_struct: HashMap::new(),
            span_links: vec![pb::SpanLink {
                trace_id: 7,
                span_id: 8,
                ..Default::default()
            }],
            span_events: Vec::new(),
        }
    }

    fn payload(chunks: u64, spans: u64) -> pb::TracerPayload {
        pb::TracerPayload {
            container_id: "cid".into(),
            language_name: "python".into(),
            language_version: String::new(),
            tracer_version: "4.16".into(),
            runtime_id: "rid".into(),
            chunks: (0..chunks)
                .map(|c| pb::TraceChunk {
                    priority: (c as i32) - 1,
                    origin: if c == 0 { String::new() } else { "rum".into() },
                    spans: (0..spans).map(|s| span(c * 100 + s, s as usize)).collect(),
                    tags: HashMap::from([("_dd.p.dm".to_owned(), "-0".to_owned())]),
                    dropped_trace: c == 2,
                })
                .collect(),
            tags: HashMap::from([("_dd.apm.mode".to_owned(), "edge".to_owned())]),
            env: "prod".into(),
            hostname: String::new(),
            app_version: "1.0".into(),
            container_debug: Some(pb::ContainerDebug {
                error: "none".into(),
                ..Default::default()
            }),
        }
    }

    fn header() -> pb::AgentPayload {
        pb::AgentPayload {
            host_name: "h".into(),
            env: "prod".into(),
            agent_version: "7.99".into(),
            target_tps: 10.0,
            ..Default::default()
        }
    }

    #[test]
    fn tracer_payloads_are_prost_bytes() {
        // Spans long enough that lengths need multi-byte varints at every level.
        let p = Arc::new(payload(3, 6));
        let h = pb::AgentPayload::default();
        let ours = encode_agent_payload(&h, std::slice::from_ref(&p));
        let mut expected = Vec::new();
        message::encode(AGENT_TRACER_PAYLOADS, p.as_ref(), &mut expected);
        assert_eq!(ours, expected);
    }

    #[test]
    fn decodes_to_the_header_with_the_payloads() {
        let payloads = vec![
            Arc::new(payload(3, 4)),
            Arc::new(payload(0, 0)),
            Arc::new(payload(1, 1)),
        ];
        let bytes = encode_agent_payload(&header(), &payloads);
        let decoded = pb::AgentPayload::decode(bytes.as_slice()).unwrap_or_default();
        let expected = pb::AgentPayload {
            tracer_payloads: payloads.iter().map(|p| p.as_ref().clone()).collect(),
            ..header()
        };
        assert_eq!(decoded, expected);
        assert_eq!(bytes.len(), expected.encoded_len());
    }

    // --- straight from the borrowed model ---

    use std::borrow::Cow;

    use crate::decode::{Encoding, decode_payload};
    use crate::process::{ProcessConfig, RequestFacts, process_payload};

    fn agent_bytes(p: &span::TracerPayload<'_>) -> Vec<u8> {
        let e = Arc::new(EncodedPayload::from_borrowed(p));
        let parts = [Part {
            chunks: 0..e.chunks(),
            payload: e,
        }];
        let mut out = vec![0xff; 3]; // cleared first
        encode_agent_payload_parts(&header(), &parts, &mut out);
        out
    }

    /// The previous path: owned `pb` copy, then `encode_agent_payload`.
    fn previous_bytes(p: &span::TracerPayload<'_>) -> Vec<u8> {
        encode_agent_payload(&header(), &[Arc::new(convert::tracer_payload(p))])
    }

    fn decoded(bytes: &[u8]) -> pb::AgentPayload {
        pb::AgentPayload::decode(bytes).expect("valid protobuf")
    }

    fn s(v: &'static str) -> Str<'static> {
        Str::from_static(v)
    }

    /// Every field set, including what proto3 leaves out (zero, empty) and what needs care
    /// (negative int32/int64, repeated keys, empty keys and values, -0.0, raw links/events).
    fn edge_span(i: u64, meta: usize) -> span::Span<'static> {
        let link = pb::SpanLink {
            trace_id: 10 + i,
            span_id: 12,
            attributes: HashMap::from([("a".to_owned(), "b".to_owned())]),
            ..Default::default()
        };
        let event = pb::SpanEvent {
            time_unix_nano: 99,
            name: "exception".to_owned(),
            attributes: HashMap::new(),
        };
        let mut m = vec![
            (s("dup"), s("first")),
            (s(""), s("empty key")),
            (s("empty value"), s("")),
            (s("dup"), s("last")),
        ];
        m.extend((0..meta).map(|t| (Str::from(format!("k{}", t % (meta / 2 + 1))), Str::from("v".repeat(t)))));
        span::Span {
            service: s("web"),
            name: s("flask.request"),
            resource: Str::from(format!("GET /{i}")),
            trace_id: u64::MAX - i,
            span_id: i,
            parent_id: 0,
            start: 1_700_000_000_000_000_000,
            duration: -5,
            error: -1,
            meta: m,
            metrics: vec![
                (s("zero"), 0.0),
                (s("negzero"), -0.0),
                (s("x"), 1.5),
                (s("x"), -2.5),
                (s(""), 3.0),
            ],
            r#type: s(""),
            meta_struct: vec![
                (s("appsec"), Cow::Borrowed(&[0x80u8][..])),
                (s("e"), Cow::Borrowed(&[][..])),
            ],
            raw_fields: vec![
                (s("span_links"), Cow::Owned(vec![0x90])),
                (
                    s("span_links"),
                    Cow::Owned(rmp_serde::to_vec_named(&vec![link]).unwrap_or_default()),
                ),
                (
                    s("span_events"),
                    Cow::Owned(serde_json::to_vec(&vec![event]).unwrap_or_default()),
                ),
            ],
        }
    }

    fn edge_payload() -> span::TracerPayload<'static> {
        let mut chunks = Vec::new();
        // A tiny span (< 128 B), web-sized ones, one over 16 KiB, one with more tags than the
        // scanning de-duplication handles.
        for (n, meta) in [(1, 0), (3, 6), (1, 300), (2, 40)] {
            let mut c = span::TraceChunk::from_spans((0..n).map(|i| edge_span(i, meta)).collect());
            c.priority = -1;
            c.origin = s("rum");
            c.tags = vec![(s("_dd.p.dm"), s("-4")), (s("_dd.p.dm"), s("-3"))];
            c.dropped_trace = meta == 6;
            chunks.push(c);
        }
        chunks[0].spans[0] = span::Span {
            service: s("a"),
            ..Default::default()
        };
        span::TracerPayload {
            container_id: s("cid"),
            language_name: s("python"),
            language_version: s(""),
            tracer_version: s("4.16"),
            runtime_id: s("rid"),
            chunks,
            tags: vec![(s("_dd.apm.mode"), s("edge"))],
            env: s("prod"),
            hostname: s(""),
            app_version: s("1.0"),
        }
    }

    #[test]
    fn borrowed_encoding_decodes_as_the_previous_path_on_edge_cases() {
        let p = edge_payload();
        assert!(
            p.chunks[2].spans[0]
                .meta
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                > 16_384
        );
        let ours = agent_bytes(&p);
        let previous = previous_bytes(&p);
        assert_eq!(decoded(&ours), decoded(&previous));
        assert_eq!(ours.len(), previous.len(), "same fields, same lengths");
        let d = decoded(&ours);
        let span = &d.tracer_payloads[0].chunks[1].spans[0];
        assert_eq!(span.meta.get("dup").map(String::as_str), Some("last"));
        assert_eq!(span.metrics.get("x"), Some(&-2.5));
        assert_eq!(span.span_links.len(), 1, "the last span_links field wins");
        assert_eq!(span.span_events[0].name, "exception");
        assert_eq!(span.duration, -5);
        assert_eq!(d.tracer_payloads[0].chunks[1].priority, -1);
    }

    #[test]
    fn borrowed_encoding_is_prost_bytes_when_maps_have_one_entry() {
        // With at most one entry per map there is no order to differ: byte-identical.
        let mut p = edge_payload();
        for c in &mut p.chunks {
            c.tags.truncate(1);
            for sp in &mut c.spans {
                sp.meta.truncate(1);
                sp.metrics.truncate(1);
                sp.meta_struct.truncate(1);
            }
        }
        assert_eq!(agent_bytes(&p), previous_bytes(&p));
    }

    #[test]
    fn borrowed_encoding_decodes_as_the_previous_path_on_real_captures() {
        let mut checked = 0;
        for (path, version) in crate::decode::captures::trace_bodies() {
            let name = path.to_string_lossy().into_owned();
            let body = std::fs::read(&path).unwrap_or_default();
            let Ok(mut p) = decode_payload(version, Encoding::Msgpack, &body) else {
                continue;
            };
            let facts = RequestFacts {
                lang: "python",
                client_computed_top_level: true,
            };
            process_payload(&mut p, &facts, &ProcessConfig::default(), 1_800_000_000_000_000_000);
            let ours = agent_bytes(&p);
            let previous = previous_bytes(&p);
            assert_eq!(decoded(&ours), decoded(&previous), "{name}");
            assert_eq!(ours.len(), previous.len(), "{name}");
            checked += 1;
        }
        assert!(checked >= 5, "captures found: {checked}");
    }

    #[test]
    fn parts_cut_payloads_at_chunk_boundaries() {
        let p = edge_payload();
        let e = Arc::new(EncodedPayload::from_borrowed(&p));
        assert_eq!((e.chunks(), e.spans(0..4), e.spans(1..3)), (4, 7, 4));
        let parts = vec![
            Part {
                payload: Arc::clone(&e),
                chunks: 1..3,
            },
            Part {
                payload: Arc::clone(&e),
                chunks: 3..4,
            },
            Part {
                payload: Arc::clone(&e),
                chunks: 0..0,
            },
        ];
        let mut out = Vec::new();
        encode_agent_payload_parts(&header(), &parts, &mut out);
        assert_eq!(
            out.len(),
            header().encoded_len() + parts.iter().map(Part::field_len).sum::<usize>()
        );
        let d = decoded(&out);
        let full = convert::tracer_payload(&p);
        let with = |chunks: &[pb::TraceChunk]| pb::TracerPayload {
            chunks: chunks.to_vec(),
            ..full.clone()
        };
        assert_eq!(
            d.tracer_payloads,
            vec![with(&full.chunks[1..3]), with(&full.chunks[3..4]), with(&[])]
        );
        assert_eq!(e.to_pb(), full);
        // The owned form encodes to the same parts.
        let from_pb = EncodedPayload::from_pb(&full);
        assert_eq!(from_pb.meta, e.meta);
        assert_eq!(from_pb.to_pb(), full);
    }
}
