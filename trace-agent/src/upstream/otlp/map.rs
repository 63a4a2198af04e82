//! Datadog spans ([`pb`]) → OTLP (`opentelemetry-proto` types). See the table in
//! [`super`]'s docs.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::upstream::pb;

/// Instrumentation scope name of every exported span.
pub const SCOPE_NAME: &str = "datadog";
/// Span attributes that carry the Datadog fields with no OTLP counterpart (the keys Datadog's
/// own OTLP ingest reads back).
pub const RESOURCE_NAME: &str = "resource.name";
/// See [`RESOURCE_NAME`].
pub const OPERATION_NAME: &str = "operation.name";
/// See [`RESOURCE_NAME`].
pub const SPAN_TYPE: &str = "span.type";

/// The export request for a batch of tracer payloads: one `ResourceSpans` per (tracer
/// payload, service), in order of first appearance.
pub fn export_request(payloads: &[Arc<pb::TracerPayload>]) -> ExportTraceServiceRequest {
    let mut resource_spans = Vec::new();
    for tp in payloads {
        resource_spans.extend(resource_spans_of(tp));
    }
    ExportTraceServiceRequest { resource_spans }
}

fn resource_spans_of(tp: &pb::TracerPayload) -> Vec<ResourceSpans> {
    // service → (first span of it, its spans)
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, (&pb::Span, Vec<Span>)> = HashMap::new();
    for chunk in &tp.chunks {
        let high = trace_id_high(chunk);
        for s in &chunk.spans {
            let span = span(s, high.get(&s.trace_id).copied().unwrap_or(0), !chunk.dropped_trace);
            groups
                .entry(s.service.as_str())
                .or_insert_with(|| {
                    order.push(s.service.as_str());
                    (s, Vec::new())
                })
                .1
                .push(span);
        }
    }
    order
        .into_iter()
        .filter_map(|service| groups.remove(service).map(|g| (service, g)))
        .map(|(service, (first, spans))| ResourceSpans {
            resource: Some(resource(tp, service, first)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: tp.tracer_version.clone(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect()
}

/// The high 64 bits of each trace id of a chunk, from `_dd.p.tid` (set on the chunk's first
/// span only by most tracers).
fn trace_id_high(chunk: &pb::TraceChunk) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for s in &chunk.spans {
        if let Some(high) = s.meta.get("_dd.p.tid").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            out.entry(s.trace_id).or_insert(high);
        }
    }
    out
}

fn resource(tp: &pb::TracerPayload, service: &str, first: &pb::Span) -> Resource {
    let mut attrs = Vec::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            attrs.push(kv_str(k, v));
        }
    };
    put("service.name", service);
    let meta = |k: &str| first.meta.get(k).map_or("", String::as_str);
    put(
        "deployment.environment.name",
        if tp.env.is_empty() { meta("env") } else { &tp.env },
    );
    put(
        "service.version",
        if tp.app_version.is_empty() {
            meta("version")
        } else {
            &tp.app_version
        },
    );
    put("telemetry.sdk.name", "datadog");
    put(
        "telemetry.sdk.language",
        if tp.language_name == ".NET" {
            "dotnet"
        } else {
            &tp.language_name
        },
    );
    put("telemetry.sdk.version", &tp.tracer_version);
    put("process.runtime.version", &tp.language_version);
    put("host.name", &tp.hostname);
    put("container.id", &tp.container_id);
    put("service.instance.id", &tp.runtime_id);
    let mut tags: Vec<_> = tp.tags.iter().collect();
    tags.sort();
    for (k, v) in tags {
        put(k, v);
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

/// The OTLP span kind of a Datadog span: `span.kind` meta, else `web` → server, `http` →
/// client (as the OpenTelemetry Collector's Datadog receiver does), else unspecified.
pub fn kind(s: &pb::Span) -> SpanKind {
    match s.meta.get("span.kind").map(String::as_str) {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        Some("internal") => SpanKind::Internal,
        _ => match s.r#type.as_str() {
            "web" => SpanKind::Server,
            "http" => SpanKind::Client,
            _ => SpanKind::Unspecified,
        },
    }
}

fn id128(high: u64, low: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&high.to_be_bytes());
    v.extend_from_slice(&low.to_be_bytes());
    v
}

fn id64(id: u64) -> Vec<u8> {
    if id == 0 { Vec::new() } else { id.to_be_bytes().to_vec() }
}

/// Converts one span; `high` is the high half of its trace id, `sampled` sets the W3C sampled
/// flag.
pub fn span(s: &pb::Span, high: u64, sampled: bool) -> Span {
    let start = u64::try_from(s.start).unwrap_or(0);
    let end = start.saturating_add(u64::try_from(s.duration).unwrap_or(0));
    let mut attributes = Vec::with_capacity(3 + s.meta.len() + s.metrics.len());
    attributes.push(kv_str(RESOURCE_NAME, &s.resource));
    attributes.push(kv_str(OPERATION_NAME, &s.name));
    if !s.r#type.is_empty() {
        attributes.push(kv_str(SPAN_TYPE, &s.r#type));
    }
    let reserved = |k: &str| k == RESOURCE_NAME || k == OPERATION_NAME || k == SPAN_TYPE;
    let mut meta: Vec<_> = s.meta.iter().filter(|(k, _)| !reserved(k)).collect();
    meta.sort();
    attributes.extend(meta.into_iter().map(|(k, v)| kv_str(k, v)));
    let mut metrics: Vec<_> = s
        .metrics
        .iter()
        .filter(|(k, _)| !reserved(k) && !s.meta.contains_key(*k))
        .collect();
    metrics.sort_by(|a, b| a.0.cmp(b.0));
    attributes.extend(
        metrics
            .into_iter()
            .map(|(k, v)| kv(k, any_value::Value::DoubleValue(*v))),
    );
    let status = (s.error != 0).then(|| Status {
        message: s
            .meta
            .get("error.message")
            .or_else(|| s.meta.get("error.msg"))
            .cloned()
            .unwrap_or_default(),
        code: StatusCode::Error as i32,
    });
    Span {
        trace_id: id128(high, s.trace_id),
        span_id: s.span_id.to_be_bytes().to_vec(),
        trace_state: String::new(),
        parent_span_id: id64(s.parent_id),
        flags: u32::from(sampled),
        name: s.name.clone(),
        kind: kind(s) as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        dropped_attributes_count: 0,
        events: s.span_events.iter().map(event).collect(),
        dropped_events_count: 0,
        links: s.span_links.iter().map(link).collect(),
        dropped_links_count: 0,
        status,
    }
}

fn event(e: &pb::SpanEvent) -> Event {
    let mut attrs: Vec<_> = e.attributes.iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    Event {
        time_unix_nano: e.time_unix_nano,
        name: e.name.clone(),
        attributes: attrs
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(any_value(v)),
                ..Default::default()
            })
            .collect(),
        dropped_attributes_count: 0,
    }
}

/// Datadog attribute value types: 0 string, 1 bool, 2 int, 3 double, 4 array.
fn any_value(v: &pb::AttributeAnyValue) -> AnyValue {
    let value = match v.r#type {
        1 => any_value::Value::BoolValue(v.bool_value),
        2 => any_value::Value::IntValue(v.int_value),
        3 => any_value::Value::DoubleValue(v.double_value),
        4 => any_value::Value::ArrayValue(ArrayValue {
            values: v
                .array_value
                .iter()
                .flat_map(|a| &a.values)
                .map(|x| AnyValue {
                    value: Some(match x.r#type {
                        1 => any_value::Value::BoolValue(x.bool_value),
                        2 => any_value::Value::IntValue(x.int_value),
                        3 => any_value::Value::DoubleValue(x.double_value),
                        _ => any_value::Value::StringValue(x.string_value.clone()),
                    }),
                })
                .collect(),
        }),
        _ => any_value::Value::StringValue(v.string_value.clone()),
    };
    AnyValue { value: Some(value) }
}

fn link(l: &pb::SpanLink) -> Link {
    let mut attrs: Vec<_> = l.attributes.iter().collect();
    attrs.sort();
    Link {
        trace_id: id128(l.trace_id_high, l.trace_id),
        span_id: l.span_id.to_be_bytes().to_vec(),
        trace_state: l.tracestate.clone(),
        attributes: attrs.into_iter().map(|(k, v)| kv_str(k, v)).collect(),
        dropped_attributes_count: 0,
        // Datadog sets bit 31 to say "flags present"; OTLP carries the W3C flags in bits 0–7.
        flags: if l.flags & 0x8000_0000 != 0 { l.flags & 0xff } else { 0 },
    }
}
