//! v0.7: one msgpack `TracerPayload` map with explicit chunks (spec 2.4).

use std::mem::size_of;

use super::DecodeLimits;
use super::error::DecodeError;
use super::reader::Reader;
use super::v04::decode_span_into;
use crate::span::{Str, Tags, TraceChunk, TracerPayload};

/// Decodes a v0.7 body.
///
/// # Errors
/// A [`DecodeError`] naming the chunk, span and field that could not be read.
pub fn decode(body: &[u8]) -> Result<TracerPayload<'_>, DecodeError> {
    decode_with(body, DecodeLimits::for_body(body.len()))
}

/// [`decode`] within `limits`.
///
/// # Errors
/// As [`decode`]; a limit error when the payload would exceed `limits`.
pub fn decode_with(body: &[u8], limits: DecodeLimits) -> Result<TracerPayload<'_>, DecodeError> {
    let mut r = Reader::with_limits(body, limits).with_str_cache();
    let mut p = TracerPayload::default();
    let n = r.map_len().map_err(|e| e.at(|| "tracer payload".to_owned()))?;
    for _ in 0..n {
        let key = r.key().map_err(|e| e.at(|| "tracer payload: field name".to_owned()))?;
        let field = |name: &'static str| move || format!("tracer payload: field '{name}'");
        match key {
            b"container_id" => p.container_id = r.str().map_err(|e| e.at(field("container_id")))?,
            b"language_name" => p.language_name = r.str().map_err(|e| e.at(field("language_name")))?,
            b"language_version" => p.language_version = r.str().map_err(|e| e.at(field("language_version")))?,
            b"tracer_version" => p.tracer_version = r.str().map_err(|e| e.at(field("tracer_version")))?,
            b"runtime_id" => p.runtime_id = r.str().map_err(|e| e.at(field("runtime_id")))?,
            b"env" => p.env = r.str().map_err(|e| e.at(field("env")))?,
            b"hostname" => p.hostname = r.str().map_err(|e| e.at(field("hostname")))?,
            b"app_version" => p.app_version = r.str().map_err(|e| e.at(field("app_version")))?,
            b"tags" => p.tags = str_map(&mut r).map_err(|e| e.at(field("tags")))?,
            b"chunks" => {
                let n = r
                    .array_len()
                    .and_then(|n| r.charge(n, size_of::<TraceChunk<'_>>()).map(|()| n))
                    .map_err(|e| e.at(field("chunks")))?;
                p.chunks.reserve_exact(n);
                for c in 0..n {
                    p.chunks.push(decode_chunk(&mut r, c)?);
                }
            }
            _ => r
                .skip()
                .map_err(|e| e.at(|| "tracer payload: unknown field".to_owned()))?,
        }
    }
    Ok(p)
}

fn str_map<'b>(r: &mut Reader<'b>) -> Result<Tags<'b, Str<'b>>, Box<super::error::ReadError>> {
    let n = r.map_len()?;
    r.charge(n, size_of::<(Str<'_>, Str<'_>)>())?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.str()?;
        let v = r.str()?;
        tags.push((k, v));
    }
    Ok(tags)
}

fn decode_chunk<'b>(r: &mut Reader<'b>, c: usize) -> Result<TraceChunk<'b>, DecodeError> {
    let mut chunk = TraceChunk::from_spans(Vec::new());
    let n = r.map_len().map_err(|e| e.at(|| format!("chunk {c}")))?;
    for _ in 0..n {
        let key = r.key().map_err(|e| e.at(|| format!("chunk {c}: field name")))?;
        let field = |name: &'static str| move || format!("chunk {c}: field '{name}'");
        match key {
            b"priority" => chunk.priority = r.i32().map_err(|e| e.at(field("priority")))?,
            b"origin" => chunk.origin = r.str().map_err(|e| e.at(field("origin")))?,
            b"tags" => chunk.tags = str_map(r).map_err(|e| e.at(field("tags")))?,
            b"dropped_trace" => chunk.dropped_trace = r.bool().map_err(|e| e.at(field("dropped_trace")))?,
            b"spans" => {
                let n = r
                    .array_len()
                    .and_then(|n| r.charge_spans(n).map(|()| n))
                    .map_err(|e| e.at(field("spans")))?;
                chunk.spans.reserve_exact(n);
                for s in 0..n {
                    decode_span_into(r, c, s, &mut chunk.spans)?;
                }
            }
            _ => r.skip().map_err(|e| e.at(|| format!("chunk {c}: unknown field")))?,
        }
    }
    Ok(chunk)
}
