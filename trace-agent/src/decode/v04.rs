//! v0.3/v0.4 msgpack: an array of traces, each an array of span maps (spec 2.1).

use std::mem::size_of;

use super::DecodeLimits;
use super::error::DecodeError;
use super::reader::Reader;
use crate::span::{RawBytes, Span, Str, TraceChunk};

/// Decodes a v0.4 (or v0.3) msgpack body into chunks (default [`DecodeLimits`]).
///
/// # Errors
/// A [`DecodeError`] naming the trace, span and field that could not be read.
pub fn decode(body: &[u8]) -> Result<Vec<TraceChunk<'_>>, DecodeError> {
    decode_with(body, DecodeLimits::for_body(body.len()))
}

/// [`decode`] within `limits`.
///
/// # Errors
/// As [`decode`]; a limit error when the payload would exceed `limits`.
pub fn decode_with(body: &[u8], limits: DecodeLimits) -> Result<Vec<TraceChunk<'_>>, DecodeError> {
    let mut r = Reader::with_limits(body, limits).with_str_cache();
    let n = r
        .array_len()
        .and_then(|n| r.charge(n, size_of::<TraceChunk<'_>>()).map(|()| n))
        .map_err(|e| e.at(|| "payload: list of traces".to_owned()))?;
    let mut chunks = Vec::with_capacity(n);
    for t in 0..n {
        let spans = decode_trace(&mut r, t)?;
        chunks.push(TraceChunk::from_spans(spans));
    }
    Ok(chunks)
}

/// Decodes one trace (array of span maps); `t` is its index for error messages.
pub(crate) fn decode_trace<'b>(r: &mut Reader<'b>, t: usize) -> Result<Vec<Span<'b>>, DecodeError> {
    let n = r
        .array_len()
        .and_then(|n| r.charge_spans(n).map(|()| n))
        .map_err(|e| e.at(|| format!("trace {t}")))?;
    let mut spans = Vec::with_capacity(n);
    for s in 0..n {
        decode_span_into(r, t, s, &mut spans)?;
    }
    Ok(spans)
}

/// Decodes one span map, skipping unknown keys, and appends it to `spans` (decoded in place:
/// no copy of the span afterwards).
pub(crate) fn decode_span_into<'b>(
    r: &mut Reader<'b>,
    t: usize,
    s: usize,
    spans: &mut Vec<Span<'b>>,
) -> Result<(), DecodeError> {
    let fields = r.map_len().map_err(|e| e.at(|| format!("trace {t} span {s}")))?;
    spans.push(Span::default());
    let Some(span) = spans.last_mut() else {
        return Ok(());
    };
    for _ in 0..fields {
        let key = r
            .key()
            .map_err(|e| e.at(|| format!("trace {t} span {s}: field name")))?;
        let field = |name: &'static str| move || format!("trace {t} span {s}: field '{name}'");
        match key {
            b"service" => span.service = r.str().map_err(|e| e.at(field("service")))?,
            b"name" => span.name = r.str().map_err(|e| e.at(field("name")))?,
            b"resource" => span.resource = r.str().map_err(|e| e.at(field("resource")))?,
            b"trace_id" => span.trace_id = r.u64().map_err(|e| e.at(field("trace_id")))?,
            b"span_id" => span.span_id = r.u64().map_err(|e| e.at(field("span_id")))?,
            b"parent_id" => span.parent_id = r.u64().map_err(|e| e.at(field("parent_id")))?,
            b"start" => span.start = r.i64().map_err(|e| e.at(field("start")))?,
            b"duration" => span.duration = r.i64().map_err(|e| e.at(field("duration")))?,
            b"error" => span.error = r.i32().map_err(|e| e.at(field("error")))?,
            b"type" => span.r#type = r.str().map_err(|e| e.at(field("type")))?,
            b"meta" => {
                let n = r
                    .map_len()
                    .and_then(|n| r.charge(n, size_of::<(Str<'_>, Str<'_>)>()).map(|()| n))
                    .map_err(|e| e.at(field("meta")))?;
                span.meta.reserve_exact(n);
                for _ in 0..n {
                    let k = r.str().map_err(|e| e.at(field("meta")))?;
                    let v = r
                        .str()
                        .map_err(|e| e.at(|| format!("trace {t} span {s}: meta '{}'", super::error::clip(&k))))?;
                    span.meta.push((k, v));
                }
            }
            b"metrics" => {
                let n = r
                    .map_len()
                    .and_then(|n| r.charge(n, size_of::<(Str<'_>, f64)>()).map(|()| n))
                    .map_err(|e| e.at(field("metrics")))?;
                span.metrics.reserve_exact(n);
                for _ in 0..n {
                    let k = r.str().map_err(|e| e.at(field("metrics")))?;
                    let v = r
                        .f64()
                        .map_err(|e| e.at(|| format!("trace {t} span {s}: metric '{}'", super::error::clip(&k))))?;
                    span.metrics.push((k, v));
                }
            }
            b"meta_struct" => {
                let n = r
                    .map_len()
                    .and_then(|n| r.charge(n, size_of::<(Str<'_>, RawBytes<'_>)>()).map(|()| n))
                    .map_err(|e| e.at(field("meta_struct")))?;
                for _ in 0..n {
                    let k = r.str().map_err(|e| e.at(field("meta_struct")))?;
                    let v = r.bytes().map_err(|e| e.at(field("meta_struct")))?;
                    span.meta_struct.push((k, v));
                }
            }
            b"span_links" | b"span_events" => {
                let name = if key == b"span_links" {
                    "span_links"
                } else {
                    "span_events"
                };
                let raw = r
                    .charge(1, size_of::<(Str<'_>, RawBytes<'_>)>())
                    .and_then(|()| r.raw_value())
                    .map_err(|e| e.at(field(name)))?;
                span.raw_fields.push((crate::span::Str::from_static(name), raw));
            }
            _ => r.skip().map_err(|e| {
                let k = super::error::clip(&String::from_utf8_lossy(key));
                e.at(move || format!("trace {t} span {s}: unknown field '{k}'"))
            })?,
        }
    }
    Ok(())
}
