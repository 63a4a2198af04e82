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
    decode_from(Reader::with_limits(body, limits).with_str_cache())
}

fn decode_from(mut r: Reader<'_>) -> Result<Vec<TraceChunk<'_>>, DecodeError> {
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

/// The span fields of a v0.4 span map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Service,
    Name,
    Resource,
    TraceId,
    SpanId,
    ParentId,
    Start,
    Duration,
    Error,
    Type,
    Meta,
    Metrics,
    MetaStruct,
    SpanLinks,
    SpanEvents,
    Unknown,
}

/// The field a key names: a switch on the key's length, then one fixed-size comparison per
/// candidate of that length (at most three), instead of comparing against every name in turn.
#[inline(always)]
fn field_of(key: &[u8]) -> Field {
    fn is<const N: usize>(key: &[u8], name: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(key).is_ok_and(|k| k == name)
    }
    match key.len() {
        4 if is(key, b"name") => Field::Name,
        4 if is(key, b"meta") => Field::Meta,
        4 if is(key, b"type") => Field::Type,
        5 if is(key, b"start") => Field::Start,
        5 if is(key, b"error") => Field::Error,
        7 if is(key, b"service") => Field::Service,
        7 if is(key, b"span_id") => Field::SpanId,
        7 if is(key, b"metrics") => Field::Metrics,
        8 if is(key, b"resource") => Field::Resource,
        8 if is(key, b"trace_id") => Field::TraceId,
        8 if is(key, b"duration") => Field::Duration,
        9 if is(key, b"parent_id") => Field::ParentId,
        10 if is(key, b"span_links") => Field::SpanLinks,
        11 if is(key, b"meta_struct") => Field::MetaStruct,
        11 if is(key, b"span_events") => Field::SpanEvents,
        _ => Field::Unknown,
    }
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
        match field_of(key) {
            Field::Service => span.service = r.str().map_err(|e| e.at(field("service")))?,
            Field::Name => span.name = r.str().map_err(|e| e.at(field("name")))?,
            Field::Resource => span.resource = r.str().map_err(|e| e.at(field("resource")))?,
            Field::TraceId => span.trace_id = r.u64().map_err(|e| e.at(field("trace_id")))?,
            Field::SpanId => span.span_id = r.u64().map_err(|e| e.at(field("span_id")))?,
            Field::ParentId => span.parent_id = r.u64().map_err(|e| e.at(field("parent_id")))?,
            Field::Start => span.start = r.i64().map_err(|e| e.at(field("start")))?,
            Field::Duration => span.duration = r.i64().map_err(|e| e.at(field("duration")))?,
            Field::Error => span.error = r.i32().map_err(|e| e.at(field("error")))?,
            Field::Type => span.r#type = r.str().map_err(|e| e.at(field("type")))?,
            Field::Meta => {
                let n = r
                    .map_len()
                    .and_then(|n| r.charge(n, size_of::<(Str<'_>, Str<'_>)>()).map(|()| n))
                    .map_err(|e| e.at(field("meta")))?;
                super::reserve_tags(&mut span.meta, n);
                for _ in 0..n {
                    let k = r.str().map_err(|e| e.at(field("meta")))?;
                    let v = r
                        .str()
                        .map_err(|e| e.at(|| format!("trace {t} span {s}: meta '{}'", super::error::clip(&k))))?;
                    span.meta.push((k, v));
                }
            }
            Field::Metrics => {
                let n = r
                    .map_len()
                    .and_then(|n| r.charge(n, size_of::<(Str<'_>, f64)>()).map(|()| n))
                    .map_err(|e| e.at(field("metrics")))?;
                super::reserve_tags(&mut span.metrics, super::metrics_capacity(n));
                for _ in 0..n {
                    let k = r.str().map_err(|e| e.at(field("metrics")))?;
                    let v = r
                        .f64()
                        .map_err(|e| e.at(|| format!("trace {t} span {s}: metric '{}'", super::error::clip(&k))))?;
                    span.metrics.push((k, v));
                }
            }
            Field::MetaStruct => {
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
            f @ (Field::SpanLinks | Field::SpanEvents) => {
                let name = if f == Field::SpanLinks {
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
            Field::Unknown => r.skip().map_err(|e| {
                let k = super::error::clip(&String::from_utf8_lossy(key));
                e.at(move || format!("trace {t} span {s}: unknown field '{k}'"))
            })?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Without the string cache: every string validated on its own.
    fn decode_uncached(body: &[u8]) -> Result<Vec<TraceChunk<'_>>, DecodeError> {
        decode_from(Reader::with_limits(body, DecodeLimits::for_body(body.len())))
    }

    #[test]
    fn every_field_name_and_only_it_is_recognised() {
        let names: [(&[u8], Field); 15] = [
            (b"service", Field::Service),
            (b"name", Field::Name),
            (b"resource", Field::Resource),
            (b"trace_id", Field::TraceId),
            (b"span_id", Field::SpanId),
            (b"parent_id", Field::ParentId),
            (b"start", Field::Start),
            (b"duration", Field::Duration),
            (b"error", Field::Error),
            (b"type", Field::Type),
            (b"meta", Field::Meta),
            (b"metrics", Field::Metrics),
            (b"meta_struct", Field::MetaStruct),
            (b"span_links", Field::SpanLinks),
            (b"span_events", Field::SpanEvents),
        ];
        for (name, field) in names {
            assert_eq!(field_of(name), field, "{}", String::from_utf8_lossy(name));
            // One byte changed anywhere, one byte more or less: not a field.
            for i in 0..name.len() {
                let mut near = name.to_vec();
                near[i] ^= 0x20;
                assert_eq!(field_of(&near), Field::Unknown, "{}", String::from_utf8_lossy(&near));
            }
            assert_eq!(field_of(&name[..name.len() - 1]), Field::Unknown);
            assert_eq!(field_of(&[name, b"s"].concat()), Field::Unknown);
        }
        assert_eq!(field_of(b""), Field::Unknown);
    }

    #[test]
    fn the_string_cache_changes_nothing_on_the_captures() {
        let mut checked = 0;
        for (path, version) in crate::decode::captures::trace_bodies() {
            if version != crate::decode::ApiVersion::V04 {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            assert_eq!(decode(&body), decode_uncached(&body), "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 1, "captures found: {checked}");
    }

    proptest! {
        /// Spans whose strings repeat, nearly repeat (same length, first and last bytes) and
        /// hold invalid UTF-8, as fixstr and str8: the same chunks with and without the cache.
        #[test]
        fn the_string_cache_changes_nothing_on_generated_spans(
            strings in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(prop::sample::select(b"ab\xc3\xa9\xff".to_vec()), 0..70),
                    "[ab]{0,3}".prop_map(String::into_bytes),
                    "_dd\\.[ab]{5,50}\\.line".prop_map(String::into_bytes),
                ],
                1..40,
            ),
        ) {
            let mut body = Vec::new();
            let spans = strings.len().div_ceil(4);
            rmp::encode::write_array_len(&mut body, 1).unwrap();
            rmp::encode::write_array_len(&mut body, spans as u32).unwrap();
            for group in strings.chunks(4) {
                rmp::encode::write_map_len(&mut body, 3).unwrap();
                rmp::encode::write_str(&mut body, "span_id").unwrap();
                rmp::encode::write_uint(&mut body, 1).unwrap();
                rmp::encode::write_str(&mut body, "service").unwrap();
                rmp::encode::write_str_len(&mut body, group[0].len() as u32).unwrap();
                body.extend_from_slice(&group[0]);
                rmp::encode::write_str(&mut body, "meta").unwrap();
                rmp::encode::write_map_len(&mut body, (group.len() / 2) as u32).unwrap();
                for pair in group.chunks_exact(2) {
                    for s in pair {
                        rmp::encode::write_str_len(&mut body, s.len() as u32).unwrap();
                        body.extend_from_slice(s);
                    }
                }
            }
            let cached = decode(&body);
            prop_assert!(cached.is_ok());
            prop_assert_eq!(cached, decode_uncached(&body));
        }
    }
}
