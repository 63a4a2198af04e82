//! v0.5: `[string_table, traces]`, each span a 12-element array whose strings are indices into
//! the table (spec 2.3). Table entries are decoded once and shared by every span using them.

use std::mem::size_of;

use super::DecodeLimits;
use super::error::{DecodeError, ReadError, ReadErrorKind};
use super::reader::Reader;
use crate::span::{Span, Str, TraceChunk};

/// Elements in a v0.5 span array.
const SPAN_FIELDS: usize = 12;

/// Decodes a v0.5 body into chunks.
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
    let mut r = Reader::with_limits(body, limits);
    let at = r.pos();
    let top = r.array_len().map_err(|e| e.at(|| "payload".to_owned()))?;
    if top != 2 {
        return Err(Box::new(ReadError {
            kind: ReadErrorKind::ArrayLen { expected: 2, got: top },
            offset: at,
        })
        .at(|| "payload: [string_table, traces]".to_owned()));
    }
    let n = r
        .array_len()
        .and_then(|n| r.charge(n, size_of::<Str<'_>>()).map(|()| n))
        .map_err(|e| e.at(|| "string table".to_owned()))?;
    let mut table = Vec::with_capacity(n);
    for i in 0..n {
        table.push(r.str().map_err(|e| e.at(|| format!("string table entry {i}")))?);
    }
    let n = r
        .array_len()
        .and_then(|n| r.charge(n, size_of::<TraceChunk<'_>>()).map(|()| n))
        .map_err(|e| e.at(|| "list of traces".to_owned()))?;
    let mut chunks = Vec::with_capacity(n);
    for t in 0..n {
        let count = r
            .array_len()
            .and_then(|n| r.charge_spans(n).map(|()| n))
            .map_err(|e| e.at(|| format!("trace {t}")))?;
        let mut spans = Vec::with_capacity(count);
        for s in 0..count {
            spans.push(decode_span(&mut r, &table, t, s)?);
        }
        chunks.push(TraceChunk::from_spans(spans));
    }
    Ok(chunks)
}

fn string<'b>(r: &mut Reader<'b>, table: &[Str<'b>]) -> Result<Str<'b>, Box<ReadError>> {
    let at = r.pos();
    let index = r.u64()?;
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .ok_or_else(|| {
            Box::new(ReadError {
                kind: ReadErrorKind::StringIndex {
                    index,
                    len: table.len(),
                },
                offset: at,
            })
        })
}

fn decode_span<'b>(r: &mut Reader<'b>, table: &[Str<'b>], t: usize, s: usize) -> Result<Span<'b>, DecodeError> {
    let at = r.pos();
    let n = r.array_len().map_err(|e| e.at(|| format!("trace {t} span {s}")))?;
    if n != SPAN_FIELDS {
        return Err(Box::new(ReadError {
            kind: ReadErrorKind::ArrayLen {
                expected: SPAN_FIELDS,
                got: n,
            },
            offset: at,
        })
        .at(|| format!("trace {t} span {s}")));
    }
    let field = |name: &'static str| move || format!("trace {t} span {s}: field '{name}'");
    let service = string(r, table).map_err(|e| e.at(field("service")))?;
    let name = string(r, table).map_err(|e| e.at(field("name")))?;
    let resource = string(r, table).map_err(|e| e.at(field("resource")))?;
    let trace_id = r.u64().map_err(|e| e.at(field("trace_id")))?;
    let span_id = r.u64().map_err(|e| e.at(field("span_id")))?;
    let parent_id = r.u64().map_err(|e| e.at(field("parent_id")))?;
    let start = r.i64().map_err(|e| e.at(field("start")))?;
    let duration = r.i64().map_err(|e| e.at(field("duration")))?;
    let error = r.i32().map_err(|e| e.at(field("error")))?;
    let n = r
        .map_len()
        .and_then(|n| r.charge(n, size_of::<(Str<'_>, Str<'_>)>()).map(|()| n))
        .map_err(|e| e.at(field("meta")))?;
    let mut meta = Vec::with_capacity(n);
    for _ in 0..n {
        let k = string(r, table).map_err(|e| e.at(field("meta")))?;
        let v =
            string(r, table).map_err(|e| e.at(|| format!("trace {t} span {s}: meta '{}'", super::error::clip(&k))))?;
        meta.push((k, v));
    }
    let n = r
        .map_len()
        .and_then(|n| r.charge(n, size_of::<(Str<'_>, f64)>()).map(|()| n))
        .map_err(|e| e.at(field("metrics")))?;
    let mut metrics = Vec::with_capacity(super::metrics_capacity(n));
    for _ in 0..n {
        let k = string(r, table).map_err(|e| e.at(field("metrics")))?;
        let v = r
            .f64()
            .map_err(|e| e.at(|| format!("trace {t} span {s}: metric '{}'", super::error::clip(&k))))?;
        metrics.push((k, v));
    }
    let r#type = string(r, table).map_err(|e| e.at(field("type")))?;
    Ok(Span {
        service,
        name,
        resource,
        trace_id,
        span_id,
        parent_id,
        start,
        duration,
        error,
        meta,
        metrics,
        r#type,
        meta_struct: Vec::new(),
        raw_fields: Vec::new(),
    })
}
