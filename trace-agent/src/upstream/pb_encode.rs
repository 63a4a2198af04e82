//! Protobuf encoding of an `AgentPayload` whose tracer payloads are shared (`Arc`), byte for
//! byte what prost writes, but computing each span's length once.
//!
//! prost's nested `message::encode` asks every message for its length before writing it, so a
//! span's length is computed once per enclosing message (payload, chunk, span: three times, four
//! with the buffer's capacity) before it is written; on web spans with a dozen tags that was
//! half the encoding time. Here the lengths of spans and chunks are computed once, kept in two
//! vectors, and written from there; the spans themselves are still written by prost
//! (`encode_raw`), as are the header and every other field.

use std::sync::Arc;

use prost::Message;
use prost::encoding::{
    WireType, bool as pb_bool, encode_key, encode_varint, encoded_len_varint, hash_map, int32, key_len,
};
use prost::encoding::{message, string};

use super::pb;

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

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
}
