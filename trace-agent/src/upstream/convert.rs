//! The borrowed span model ([`crate::span`]) → the protobuf types of `libdd-trace-protobuf`
//! ([`pb`]), which every writer sends (protobuf to Datadog, mapped to OTLP, stored locally).
//!
//! Field for field (spec 2.1, 2.4); tag lists become maps where a later duplicate key wins
//! (as lookups in the span model do). `span_links` / `span_events`, kept raw by the decoders
//! (msgpack, or JSON from the JSON decoder), are decoded into [`pb::SpanLink`] /
//! [`pb::SpanEvent`]; a raw field of the wrong shape is left out, counted
//! ([`undecodable_raw_fields`]) and logged once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use super::pb;
use crate::span::{self, Str};

static UNDECODABLE: AtomicU64 = AtomicU64::new(0);

/// `span_links`/`span_events` fields left out because they did not have the expected shape,
/// since the process started.
pub fn undecodable_raw_fields() -> u64 {
    UNDECODABLE.load(Ordering::Relaxed)
}

/// Converts a processed tracer payload (typically: only the kept chunks) to its protobuf form.
pub fn tracer_payload(tp: &span::TracerPayload<'_>) -> pb::TracerPayload {
    pb::TracerPayload {
        container_id: owned(&tp.container_id),
        language_name: owned(&tp.language_name),
        language_version: owned(&tp.language_version),
        tracer_version: owned(&tp.tracer_version),
        runtime_id: owned(&tp.runtime_id),
        chunks: tp.chunks.iter().map(chunk).collect(),
        tags: str_map(&tp.tags),
        env: owned(&tp.env),
        hostname: owned(&tp.hostname),
        app_version: owned(&tp.app_version),
        container_debug: None,
    }
}

/// Converts one trace chunk.
pub fn chunk(c: &span::TraceChunk<'_>) -> pb::TraceChunk {
    pb::TraceChunk {
        priority: c.priority,
        origin: owned(&c.origin),
        spans: c.spans.iter().map(span).collect(),
        tags: str_map(&c.tags),
        dropped_trace: c.dropped_trace,
    }
}

/// Converts one span.
pub fn span(s: &span::Span<'_>) -> pb::Span {
    let mut out = pb::Span {
        service: owned(&s.service),
        name: owned(&s.name),
        resource: owned(&s.resource),
        trace_id: s.trace_id,
        span_id: s.span_id,
        parent_id: s.parent_id,
        start: s.start,
        duration: s.duration,
        error: s.error,
        meta: str_map(&s.meta),
        metrics: s.metrics.iter().map(|(k, v)| (owned(k), *v)).collect(),
        r#type: owned(&s.r#type),
        meta_struct: s.meta_struct.iter().map(|(k, v)| (owned(k), v.to_vec())).collect(),
        span_links: Vec::new(),
        span_events: Vec::new(),
    };
    for (key, raw) in &s.raw_fields {
        match key.as_str() {
            "span_links" => out.span_links = raw_list(key, raw),
            "span_events" => out.span_events = raw_list(key, raw),
            _ => {}
        }
    }
    out
}

/// An owned copy, without `ToString`, which on a `Display` type goes through the formatter
/// (measurably slower over a web span's dozen strings: `stage/convert` in the bench).
fn owned(s: &Str<'_>) -> String {
    s.as_str().to_owned()
}

fn str_map(tags: &[(Str<'_>, Str<'_>)]) -> HashMap<String, String> {
    let mut map = HashMap::with_capacity(tags.len());
    for (k, v) in tags {
        map.insert(owned(k), owned(v));
    }
    map
}

/// Decodes a raw list field: JSON when it starts with `[` (the JSON decoder), msgpack otherwise.
pub(crate) fn raw_list<T: DeserializeOwned>(field: &str, raw: &[u8]) -> Vec<T> {
    let decoded = if raw.first() == Some(&b'[') {
        serde_json::from_slice::<Vec<T>>(raw).map_err(|e| e.to_string())
    } else {
        rmp_serde::from_slice::<Vec<T>>(raw).map_err(|e| e.to_string())
    };
    decoded.unwrap_or_else(|error| {
        if UNDECODABLE.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(field, %error, "a span's {field} could not be converted for upstream; left out (logged once)");
        }
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::span::{Span, TraceChunk, TracerPayload};

    fn sample_span() -> Span<'static> {
        Span {
            service: Str::from_static("web"),
            name: Str::from_static("http.request"),
            resource: Str::from_static("GET /"),
            trace_id: 1,
            span_id: 2,
            parent_id: 3,
            start: 4,
            duration: 5,
            error: 1,
            meta: vec![
                (Str::from_static("k"), Str::from_static("old")),
                (Str::from_static("k"), Str::from_static("new")),
                (Str::from_static("_dd.p.tid"), Str::from_static("00000000000000ff")),
            ],
            metrics: vec![(Str::from_static("_sampling_priority_v1"), 2.0)],
            r#type: Str::from_static("web"),
            meta_struct: vec![(Str::from_static("appsec"), Cow::Borrowed(&[0x80u8][..]))],
            raw_fields: Vec::new(),
        }
    }

    #[test]
    fn converts_every_field() {
        let mut chunk = TraceChunk::from_spans(vec![sample_span()]);
        chunk.priority = 2;
        chunk.origin = Str::from_static("synthetics");
        chunk.tags = vec![(Str::from_static("_dd.p.dm"), Str::from_static("-4"))];
        chunk.dropped_trace = true;
        let tp = TracerPayload {
            container_id: Str::from_static("cid"),
            language_name: Str::from_static("python"),
            language_version: Str::from_static("3.12"),
            tracer_version: Str::from_static("4.16"),
            runtime_id: Str::from_static("rid"),
            chunks: vec![chunk],
            tags: vec![(Str::from_static("_dd.apm.mode"), Str::from_static("edge"))],
            env: Str::from_static("prod"),
            hostname: Str::from_static("h"),
            app_version: Str::from_static("1.2"),
        };
        let pb = tracer_payload(&tp);
        assert_eq!(
            (
                pb.container_id.as_str(),
                pb.language_name.as_str(),
                pb.language_version.as_str(),
                pb.tracer_version.as_str(),
                pb.runtime_id.as_str(),
                pb.env.as_str(),
                pb.hostname.as_str(),
                pb.app_version.as_str()
            ),
            ("cid", "python", "3.12", "4.16", "rid", "prod", "h", "1.2")
        );
        assert_eq!(pb.tags.get("_dd.apm.mode").map(String::as_str), Some("edge"));
        let c = &pb.chunks[0];
        assert_eq!(
            (c.priority, c.origin.as_str(), c.dropped_trace),
            (2, "synthetics", true)
        );
        assert_eq!(c.tags.get("_dd.p.dm").map(String::as_str), Some("-4"));
        let s = &c.spans[0];
        assert_eq!(
            (
                s.service.as_str(),
                s.name.as_str(),
                s.resource.as_str(),
                s.r#type.as_str()
            ),
            ("web", "http.request", "GET /", "web")
        );
        assert_eq!(
            (s.trace_id, s.span_id, s.parent_id, s.start, s.duration, s.error),
            (1, 2, 3, 4, 5, 1)
        );
        assert_eq!(s.meta.get("k").map(String::as_str), Some("new"), "later duplicate wins");
        assert_eq!(s.meta.len(), 2);
        assert_eq!(s.metrics.get("_sampling_priority_v1"), Some(&2.0));
        assert_eq!(s.meta_struct.get("appsec"), Some(&vec![0x80u8]));
    }

    #[test]
    fn decodes_msgpack_and_json_links_and_events() {
        let link = pb::SpanLink {
            trace_id: 10,
            trace_id_high: 11,
            span_id: 12,
            attributes: HashMap::from([("link.name".to_owned(), "x".to_owned())]),
            tracestate: "dd=s:1".to_owned(),
            flags: 0x8000_0001,
        };
        let event = pb::SpanEvent {
            time_unix_nano: 99,
            name: "exception".to_owned(),
            attributes: HashMap::from([(
                "exception.message".to_owned(),
                pb::AttributeAnyValue {
                    r#type: 0,
                    string_value: "boom".to_owned(),
                    ..Default::default()
                },
            )]),
        };
        let mut s = sample_span();
        let links = rmp_serde::to_vec_named(&vec![link.clone()]).unwrap_or_default();
        let events = serde_json::to_vec(&vec![event.clone()]).unwrap_or_default();
        s.raw_fields = vec![
            (Str::from_static("span_links"), Cow::Owned(links)),
            (Str::from_static("span_events"), Cow::Owned(events)),
        ];
        let out = span(&s);
        assert_eq!(out.span_links, vec![link]);
        assert_eq!(out.span_events, vec![event]);
    }

    #[test]
    fn malformed_raw_field_is_left_out_and_counted() {
        let before = undecodable_raw_fields();
        let mut s = sample_span();
        s.raw_fields = vec![(Str::from_static("span_links"), Cow::Owned(vec![0x91, 0x05]))];
        assert!(span(&s).span_links.is_empty());
        assert!(undecodable_raw_fields() > before);
    }
}
