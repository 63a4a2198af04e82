//! JSON bodies for v0.3/v0.4 (`Content-Type: application/json`, or none): the same shape as
//! msgpack, read just as leniently (nulls are zero, unknown keys skipped, numbers of any kind).

use std::borrow::Cow;

use serde_json::Value;

use super::DecodeLimits;
use super::error::{DecodeError, ReadErrorKind};
use crate::span::{Span, Str, TraceChunk};

/// Counts of a JSON text's structural characters outside strings, from one pass: what any
/// decoded-size bound of a JSON body is computed from (every object may become a struct, every
/// member a map entry with its key, every element a value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonShape {
    /// `{`: objects.
    pub objects: usize,
    /// `:`: object members.
    pub members: usize,
    /// `,` and `[`: array elements (and members after the first).
    pub elements: usize,
}

impl JsonShape {
    /// The shape of `body` (not validated: a malformed text still gets counts).
    pub fn of(body: &[u8]) -> Self {
        let (mut objects, mut members, mut elements) = (0usize, 0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for &b in body {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' => objects += 1,
                b':' => members += 1,
                b',' | b'[' => elements += 1,
                _ => {}
            }
        }
        Self {
            objects,
            members,
            elements,
        }
    }
}

/// An upper bound on the memory decoding `body` takes (the `serde_json::Value` tree and the
/// spans built from it): every object may become a span, every member a map entry with its
/// key, every element a value, every string byte a copy.
fn estimate(body: &[u8]) -> usize {
    let JsonShape {
        objects,
        members,
        elements,
    } = JsonShape::of(body);
    let value = std::mem::size_of::<Value>();
    let entry = value + std::mem::size_of::<String>() + std::mem::size_of::<(Str<'_>, Str<'_>)>();
    objects
        .saturating_mul(std::mem::size_of::<Span<'_>>() + value)
        .saturating_add(members.saturating_mul(entry))
        .saturating_add(elements.saturating_mul(value))
        .saturating_add(body.len())
}

/// Refuses `body` before parsing when its estimated decoded size exceeds `limits`.
fn check_estimate(body: &[u8], limits: DecodeLimits) -> Result<(), DecodeError> {
    if estimate(body) > limits.max_decoded_bytes {
        return Err(DecodeError {
            location: "payload".to_owned(),
            kind: ReadErrorKind::DecodedTooLarge {
                max: limits.max_decoded_bytes,
            },
            offset: None,
        });
    }
    Ok(())
}

/// Refuses decoded `chunks` holding more spans than `limits` allow.
fn check_spans(chunks: &[TraceChunk<'_>], limits: DecodeLimits) -> Result<(), DecodeError> {
    let spans: usize = chunks.iter().map(|c| c.spans.len()).sum();
    if spans > limits.max_spans {
        return Err(DecodeError {
            location: "payload".to_owned(),
            kind: ReadErrorKind::TooManySpans { max: limits.max_spans },
            offset: None,
        });
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn err(location: String, expected: &'static str, v: &Value) -> DecodeError {
    DecodeError {
        location,
        kind: ReadErrorKind::Type {
            expected,
            got: type_name(v),
        },
        offset: None,
    }
}

/// Parses `body` as JSON whose top level must be an array (`null` reads as empty).
fn top_level_array(body: &[u8], what: &str) -> Result<Vec<Value>, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError {
        location: "payload".to_owned(),
        kind: if e.is_eof() {
            ReadErrorKind::Eof
        } else {
            ReadErrorKind::Json(e.to_string())
        },
        offset: None,
    })?;
    match value {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        v => Err(err(what.to_owned(), "array", &v)),
    }
}

/// Decodes a JSON array of traces.
///
/// # Errors
/// A [`DecodeError`] naming the trace, span and field that could not be read.
pub fn decode(body: &[u8]) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    decode_with(body, DecodeLimits::for_body(body.len()))
}

/// [`decode`] within `limits`.
///
/// # Errors
/// As [`decode`]; a limit error when the payload would exceed `limits`.
pub fn decode_with(body: &[u8], limits: DecodeLimits) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    check_estimate(body, limits)?;
    let chunks = decode_unchecked(body)?;
    check_spans(&chunks, limits)?;
    Ok(chunks)
}

fn decode_unchecked(body: &[u8]) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    let traces = top_level_array(body, "payload: list of traces")?;
    let mut chunks = Vec::with_capacity(traces.len());
    for (t, trace) in traces.into_iter().enumerate() {
        let spans = match trace {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            v => return Err(err(format!("trace {t}"), "array", &v)),
        };
        let mut out = Vec::with_capacity(spans.len());
        for (s, span) in spans.into_iter().enumerate() {
            out.push(decode_span(span, t, s)?);
        }
        chunks.push(TraceChunk::from_spans(out));
    }
    Ok(chunks)
}

/// Decodes a v0.1 body: one flat JSON array of spans, grouped into chunks by `trace_id` (in
/// order of first appearance).
///
/// # Errors
/// A [`DecodeError`] naming the span and field that could not be read.
pub fn decode_flat_spans(body: &[u8]) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    decode_flat_spans_with(body, DecodeLimits::for_body(body.len()))
}

/// [`decode_flat_spans`] within `limits`.
///
/// # Errors
/// As [`decode_flat_spans`]; a limit error when the payload would exceed `limits`.
pub fn decode_flat_spans_with(body: &[u8], limits: DecodeLimits) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    check_estimate(body, limits)?;
    let chunks = decode_flat_unchecked(body)?;
    check_spans(&chunks, limits)?;
    Ok(chunks)
}

fn decode_flat_unchecked(body: &[u8]) -> Result<Vec<TraceChunk<'static>>, DecodeError> {
    let spans = top_level_array(body, "payload: list of spans")?;
    let mut chunks: Vec<TraceChunk<'static>> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (s, span) in spans.into_iter().enumerate() {
        let span = decode_span(span, 0, s)?;
        match index.get(&span.trace_id).and_then(|&i| chunks.get_mut(i)) {
            Some(chunk) => chunk.spans.push(span),
            None => {
                index.insert(span.trace_id, chunks.len());
                chunks.push(TraceChunk::from_spans(vec![span]));
            }
        }
    }
    Ok(chunks)
}

fn string(v: Value, loc: impl FnOnce() -> String) -> Result<Str<'static>, DecodeError> {
    match v {
        Value::String(s) => Ok(Str::from(s)),
        Value::Null => Ok(Str::new()),
        v => Err(err(loc(), "string", &v)),
    }
}

/// A JSON number read every way it can be: as u64, as i64, as f64.
type JsonNum = (Option<u64>, Option<i64>, f64);

fn number(v: &Value, loc: impl FnOnce() -> String) -> Result<Option<JsonNum>, DecodeError> {
    match v {
        Value::Number(n) => Ok(Some((n.as_u64(), n.as_i64(), n.as_f64().unwrap_or(0.0)))),
        Value::Null => Ok(None),
        v => Err(err(loc(), "integer", v)),
    }
}

fn u64_of(v: &Value, loc: impl FnOnce() -> String) -> Result<u64, DecodeError> {
    Ok(match number(v, loc)? {
        Some((Some(u), _, _)) => u,
        Some((None, Some(i), _)) => i as u64,
        Some((None, None, f)) => f as u64,
        None => 0,
    })
}

fn i64_of(v: &Value, loc: impl FnOnce() -> String) -> Result<i64, DecodeError> {
    Ok(match number(v, loc)? {
        Some((_, Some(i), _)) => i,
        Some((Some(u), None, _)) => i64::try_from(u).unwrap_or(i64::MAX),
        Some((None, None, f)) => f as i64,
        None => 0,
    })
}

fn decode_span(v: Value, t: usize, s: usize) -> Result<Span<'static>, DecodeError> {
    let obj = match v {
        Value::Object(o) => o,
        Value::Null => return Ok(Span::default()),
        v => return Err(err(format!("trace {t} span {s}"), "object", &v)),
    };
    let mut span = Span::default();
    for (key, value) in obj {
        let loc = || format!("trace {t} span {s}: field '{key}'");
        match key.as_str() {
            "service" => span.service = string(value, loc)?,
            "name" => span.name = string(value, loc)?,
            "resource" => span.resource = string(value, loc)?,
            "type" => span.r#type = string(value, loc)?,
            "trace_id" => span.trace_id = u64_of(&value, loc)?,
            "span_id" => span.span_id = u64_of(&value, loc)?,
            "parent_id" => span.parent_id = u64_of(&value, loc)?,
            "start" => span.start = i64_of(&value, loc)?,
            "duration" => span.duration = i64_of(&value, loc)?,
            "error" => span.error = i32::try_from(i64_of(&value, loc)?).unwrap_or(1),
            "meta" => match value {
                Value::Object(m) => {
                    for (k, v) in m {
                        let v = string(v, || format!("trace {t} span {s}: meta '{}'", super::error::clip(&k)))?;
                        span.meta.push((Str::from(k), v));
                    }
                }
                Value::Null => {}
                v => return Err(err(loc(), "object", &v)),
            },
            "metrics" => match value {
                Value::Object(m) => {
                    for (k, v) in m {
                        let f = match number(&v, || {
                            format!("trace {t} span {s}: metric '{}'", super::error::clip(&k))
                        })? {
                            Some((_, _, f)) => f,
                            None => 0.0,
                        };
                        span.metrics.push((Str::from(k), f));
                    }
                }
                Value::Null => {}
                v => return Err(err(loc(), "object", &v)),
            },
            "span_links" | "span_events" => {
                let raw = serde_json::to_vec(&value).unwrap_or_default();
                span.raw_fields.push((Str::from(key), Cow::Owned(raw)));
            }
            _ => {}
        }
    }
    Ok(span)
}
