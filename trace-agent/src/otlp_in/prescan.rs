//! What decoding an OTLP export request would cost, found before decoding it: a pass over the
//! protobuf wire format guided by the `ExportTraceServiceRequest` schema (every message is
//! charged the size of the struct prost builds for it, every string or bytes field a `String`
//! plus its length), or over the structural characters of OTLP/JSON. A small body cannot then
//! become a large decoded message: 2-byte empty spans decode to ~250-byte structs (125×), and a
//! gzip body up to `max_payload_size` is only the start. Pure and linear in the body.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// What a request would decode to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Spans (protobuf only; 0 for JSON, counted after decoding).
    pub spans: usize,
    /// Bytes of decoded structures, an upper bound.
    pub bytes: usize,
}

/// Deepest nesting accepted (prost's own recursion limit).
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// A message without message fields we know of (e.g. `EntityRef`): strings only.
    Leaf,
}

impl Msg {
    /// The message type of field `field`, when it is a message.
    fn child(self, field: u64) -> Option<Self> {
        use Msg::*;
        Some(match (self, field) {
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) | (KeyValueList, 1) => KeyValue,
            (Resource, 3) => Leaf, // entity_refs
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (Span, 15) => Status,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => return None,
        })
    }

    /// Bytes of the struct prost builds for one occurrence.
    fn size(self) -> usize {
        match self {
            Self::Request => size_of::<ExportTraceServiceRequest>(),
            Self::ResourceSpans => size_of::<ResourceSpans>(),
            Self::Resource => size_of::<Resource>(),
            Self::ScopeSpans => size_of::<ScopeSpans>(),
            Self::Scope => size_of::<InstrumentationScope>(),
            Self::Span => size_of::<Span>(),
            Self::Event => size_of::<Event>(),
            Self::Link => size_of::<Link>(),
            Self::Status => size_of::<Status>(),
            Self::KeyValue => size_of::<KeyValue>(),
            Self::AnyValue => size_of::<AnyValue>(),
            Self::ArrayValue => size_of::<ArrayValue>(),
            Self::KeyValueList => size_of::<KeyValueList>(),
            Self::Leaf => size_of::<String>() * 4,
        }
    }
}

fn varint(body: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *body.get(*at).ok_or_else(|| format!("truncated varint at byte {at}"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!("varint longer than 10 bytes before byte {at}"))
}

/// Walks a protobuf `ExportTraceServiceRequest`.
///
/// # Errors
/// Malformed wire format (truncated, bad wire type, nesting past [`MAX_DEPTH`]): the body would
/// not decode either.
pub fn protobuf(body: &[u8]) -> Result<Estimate, String> {
    let mut est = Estimate {
        spans: 0,
        bytes: Msg::Request.size(),
    };
    // (message, end of its bytes)
    let mut stack: Vec<(Msg, usize)> = vec![(Msg::Request, body.len())];
    let mut at = 0usize;
    while let Some(&(msg, end)) = stack.last() {
        if at == end {
            stack.pop();
            continue;
        }
        if at > end {
            return Err(format!("a field overruns its message at byte {at}"));
        }
        let key = varint(body, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(body, &mut at)?;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(body, &mut at)?).unwrap_or(usize::MAX);
                let inner_end = at
                    .checked_add(len)
                    .filter(|e| *e <= end)
                    .ok_or_else(|| format!("a length of {len} at byte {at} runs past the end of its message"))?;
                match msg.child(field) {
                    Some(child) => {
                        est.bytes = est.bytes.saturating_add(child.size());
                        if child == Msg::Span {
                            est.spans += 1;
                        }
                        if stack.len() >= MAX_DEPTH {
                            return Err(format!("nesting deeper than {MAX_DEPTH} at byte {at}"));
                        }
                        stack.push((child, inner_end));
                    }
                    None => {
                        // A string, bytes or unknown field: a `String` (repeated ones are
                        // elements) and a copy of the bytes.
                        est.bytes = est.bytes.saturating_add(size_of::<String>() + len);
                        at = inner_end;
                    }
                }
            }
            w => {
                return Err(format!(
                    "wire type {w} (field {field}) at byte {at} is not used by OTLP"
                ));
            }
        }
        if at > end {
            return Err(format!(
                "a fixed-size field runs past the end of its message at byte {at}"
            ));
        }
    }
    Ok(est)
}

/// An upper bound on what decoding OTLP/JSON `body` takes, from its structural characters:
/// every object may be the largest OTLP struct (a span), every member a `KeyValue` with its key,
/// every array element an `AnyValue`, every byte a copy.
pub fn json(body: &[u8]) -> Estimate {
    let crate::decode::json::JsonShape {
        objects,
        members,
        elements,
    } = crate::decode::json::JsonShape::of(body);
    let largest = size_of::<Span>().max(size_of::<ResourceSpans>());
    Estimate {
        spans: 0,
        bytes: objects
            .saturating_mul(largest)
            .saturating_add(members.saturating_mul(size_of::<KeyValue>() + size_of::<String>()))
            .saturating_add(elements.saturating_mul(size_of::<AnyValue>()))
            .saturating_add(body.len()),
    }
}

/// The same bound for a request already decoded (OTLP/gRPC: tonic decodes before the handler;
/// the mapping would multiply it again): its structs and the bytes of its strings.
pub fn decoded(req: &ExportTraceServiceRequest) -> Estimate {
    fn any(v: &AnyValue, depth: usize) -> usize {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let own = size_of::<AnyValue>();
        if depth > MAX_DEPTH {
            return own;
        }
        own + match &v.value {
            Some(Value::StringValue(s)) => s.len(),
            Some(Value::BytesValue(b)) => b.len(),
            Some(Value::ArrayValue(a)) => {
                size_of::<ArrayValue>() + a.values.iter().map(|v| any(v, depth + 1)).sum::<usize>()
            }
            Some(Value::KvlistValue(l)) => size_of::<KeyValueList>() + kvs(&l.values, depth + 1),
            _ => 0,
        }
    }
    fn kvs(list: &[KeyValue], depth: usize) -> usize {
        list.iter()
            .map(|kv| size_of::<KeyValue>() + kv.key.len() + kv.value.as_ref().map_or(0, |v| any(v, depth)))
            .sum()
    }
    let mut est = Estimate {
        spans: 0,
        bytes: size_of::<ExportTraceServiceRequest>(),
    };
    for rs in &req.resource_spans {
        est.bytes += size_of::<ResourceSpans>() + rs.schema_url.len();
        if let Some(r) = &rs.resource {
            est.bytes += size_of::<Resource>() + kvs(&r.attributes, 0);
        }
        for ss in &rs.scope_spans {
            est.bytes += size_of::<ScopeSpans>() + ss.schema_url.len();
            if let Some(scope) = &ss.scope {
                est.bytes += size_of::<InstrumentationScope>()
                    + scope.name.len()
                    + scope.version.len()
                    + kvs(&scope.attributes, 0);
            }
            est.spans += ss.spans.len();
            for span in &ss.spans {
                est.bytes += size_of::<Span>()
                    + span.name.len()
                    + span.trace_state.len()
                    + span.trace_id.len()
                    + span.span_id.len()
                    + span.parent_span_id.len()
                    + kvs(&span.attributes, 0);
                for e in &span.events {
                    est.bytes += size_of::<Event>() + e.name.len() + kvs(&e.attributes, 0);
                }
                for l in &span.links {
                    est.bytes += size_of::<Link>()
                        + l.trace_state.len()
                        + l.trace_id.len()
                        + l.span_id.len()
                        + kvs(&l.attributes, 0);
                }
                if let Some(st) = &span.status {
                    est.bytes += size_of::<Status>() + st.message.len();
                }
            }
        }
    }
    est
}

/// Spans in a decoded request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn request(spans: usize, attrs: usize) -> ExportTraceServiceRequest {
        let kv = |i: usize| KeyValue {
            key: format!("k{i}"),
            value: Some(AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                    "v".repeat(10),
                )),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(0)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: format!("span {i}"),
                            attributes: (0..attrs).map(kv).collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_protobuf_estimate_counts_spans_and_bounds_the_decoded_size() {
        let req = request(50, 3);
        let body = req.encode_to_vec();
        let est = protobuf(&body).unwrap();
        assert_eq!(est.spans, 50);
        // At least the structs the decoder builds.
        let floor = 50 * (size_of::<Span>() + 3 * (size_of::<KeyValue>() + size_of::<AnyValue>()));
        assert!(est.bytes >= floor, "{} < {floor}", est.bytes);
        assert_eq!(ExportTraceServiceRequest::decode(body.as_slice()).unwrap(), req);
        let after = decoded(&req);
        assert_eq!(after.spans, 50);
        assert!(
            after.bytes >= floor && after.bytes <= est.bytes,
            "{} vs {}",
            after.bytes,
            est.bytes
        );
    }

    #[test]
    fn empty_spans_are_charged_their_struct_not_their_two_bytes() {
        // 100 000 empty spans: 2 bytes each on the wire.
        let req = crate::otlp_in::mapping::build::request(Vec::new(), ("", ""), vec![Span::default(); 100_000]);
        let body = req.encode_to_vec();
        assert!(body.len() < 250_000, "{}", body.len());
        let est = protobuf(&body).unwrap();
        assert_eq!(est.spans, 100_000);
        assert!(est.bytes >= 100_000 * size_of::<Span>());
        assert!(est.bytes / body.len() > 50, "ratio {}", est.bytes / body.len());
    }

    #[test]
    fn malformed_wire_format_is_an_error_with_its_place() {
        assert!(protobuf(&[0x0a, 0x05, 0x0a]).unwrap_err().contains("runs past"));
        assert!(protobuf(&[0x0b]).unwrap_err().contains("wire type 3"));
        // Nesting: AnyValue → ArrayValue → AnyValue … 200 deep.
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..200 {
            let mut array = vec![0x0a];
            push_len(&mut array, inner.len());
            array.extend_from_slice(&inner);
            let mut any = vec![0x2a];
            push_len(&mut any, array.len());
            any.extend_from_slice(&array);
            inner = any;
        }
        let mut kv = vec![0x12];
        push_len(&mut kv, inner.len());
        kv.extend_from_slice(&inner);
        let mut resource = vec![0x0a];
        push_len(&mut resource, kv.len());
        resource.extend_from_slice(&kv);
        let mut rs = vec![0x0a];
        push_len(&mut rs, resource.len());
        rs.extend_from_slice(&resource);
        let mut body = vec![0x0a];
        push_len(&mut body, rs.len());
        body.extend_from_slice(&rs);
        assert!(protobuf(&body).unwrap_err().contains("nesting deeper"));
        assert_eq!(protobuf(&[]).unwrap().spans, 0);
    }

    fn push_len(buf: &mut Vec<u8>, mut n: usize) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                buf.push(b);
                return;
            }
            buf.push(b | 0x80);
        }
    }

    #[test]
    fn the_json_estimate_charges_every_object_as_a_span() {
        let body = format!(
            "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}]}}]}}]}}",
            vec!["{}"; 10_000].join(",")
        );
        let est = json(body.as_bytes());
        assert!(est.bytes >= 10_000 * size_of::<Span>());
    }
}
