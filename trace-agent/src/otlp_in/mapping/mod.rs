//! OTLP → Datadog span mapping, the rules of the Datadog agent's OTLP receiver
//! (`pkg/trace/api/otlp.go` `receiveResourceSpansV2`, `pkg/trace/transform` `OtelSpanToDDSpan`,
//! operation and resource names "v2"): pure functions from an `ExportTraceServiceRequest` to
//! tracer payloads of the agent's own span model, one per `ResourceSpans`, spans grouped into
//! chunks by the low 64 bits of their trace id.
//!
//! Every step is linear in the request (a handful of attribute scans per span).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span as OtlpSpan};

use crate::span::{Span, Str, Tags, TraceChunk, TracerPayload, tag_get};

#[doc(hidden)]
pub mod build;
mod lookup;
mod value;

pub use value::value_string;

use apm_conventions::otel;
use lookup::{Lookup, attr_str};
#[cfg(test)]
use opentelemetry_proto::tonic::common::v1::AnyValue;
use value::{marshal_events, marshal_links};

/// Service of spans whose resource names none (the Datadog agent's fallback).
pub const NO_SERVICE: &str = "otlpresourcenoservicename";
/// Priority the agent gives a trace it keeps (`PriorityAutoKeep`).
const PRIORITY_AUTO_KEEP: i32 = 1;

/// What the mapping needs from the agent's configuration and the request.
#[derive(Debug, Clone, Default)]
pub struct MapOptions<'a> {
    /// Payload env when the resource has none (`env` / `apm_config.env`).
    pub default_env: &'a str,
    /// Payload hostname when the resource names none (`hostname`).
    pub hostname: &'a str,
    /// `apm_config.probabilistic_sampler.enabled`: chunks get no priority, the probabilistic
    /// sampler decides (as in the Datadog agent).
    pub probabilistic_sampler: bool,
    /// `Datadog-Client-Computed-Stats` on the request.
    pub client_computed_stats: bool,
}

/// One `ResourceSpans`, mapped.
#[derive(Debug)]
pub struct MappedPayload {
    /// The tracer payload (strings owned).
    pub payload: TracerPayload<'static>,
    /// The resource says stats were computed already (`_dd.stats_computed`) or the request did.
    pub client_computed_stats: bool,
}

/// A whole request, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    /// One payload per `ResourceSpans` that kept at least one span.
    pub payloads: Vec<MappedPayload>,
    /// Spans in the request.
    pub spans: u64,
    /// Spans refused (invalid ids), with the first reason.
    pub rejected: u64,
    /// Why the first refused span was refused.
    pub first_rejection: Option<String>,
}

/// Maps a whole request.
pub fn map_request(req: &ExportTraceServiceRequest, opts: &MapOptions<'_>) -> Mapped {
    let mut out = Mapped::default();
    for rs in &req.resource_spans {
        map_resource_spans(rs, opts, &mut out);
    }
    out
}

/// OTLP HTTP keys the Datadog agent renames (opentelemetry-mapping-go `HTTPMappings`).
fn mapped_key(k: &str) -> Option<Cow<'_, str>> {
    let renamed = match k {
        "service.name" | "operation.name" | "resource.name" | "span.type" => return None,
        "client.address" => "http.client_ip",
        "http.response.body.size" => "http.response.content_length",
        "http.response.status_code" => "http.status_code",
        "http.request.body.size" => "http.request.content_length",
        "http.request.header.referrer" => "http.referrer",
        "http.request.method" => "http.method",
        "network.protocol.version" => "http.version",
        "server.address" => "http.server_name",
        "url.full" => "http.url",
        "user_agent.original" => "http.useragent",
        other => {
            return Some(match other.strip_prefix("http.request.header.") {
                Some(h) => Cow::Owned(format!("http.request.headers.{h}")),
                None => Cow::Borrowed(other),
            });
        }
    };
    Some(Cow::Borrowed(renamed))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn status_text(code: i64) -> Option<&'static str> {
    http::StatusCode::from_u16(u16::try_from(code).ok()?)
        .ok()?
        .canonical_reason()
}

/// Most tags searched by a linear scan; beyond, a key set keeps "is it there already" O(1),
/// so a span with many attributes costs linear time, not quadratic.
const SCAN_MAX: usize = 32;

/// Tags being built, with a set of their keys once they are many.
struct Keyed<V> {
    tags: Tags<'static, V>,
    keys: Option<HashSet<String>>,
}

impl<V> Keyed<V> {
    fn with_capacity(n: usize) -> Self {
        Self {
            tags: Vec::with_capacity(n),
            keys: None,
        }
    }

    fn push(&mut self, (k, v): (Str<'static>, V)) {
        match &mut self.keys {
            Some(keys) if !keys.contains(k.as_str()) => {
                keys.insert(k.as_str().to_owned());
            }
            Some(_) => {}
            None if self.tags.len() >= SCAN_MAX => {
                let mut keys: HashSet<String> = self.tags.iter().map(|(k, _)| k.as_str().to_owned()).collect();
                keys.insert(k.as_str().to_owned());
                self.keys = Some(keys);
            }
            None => {}
        }
        self.tags.push((k, v));
    }

    fn has(&self, key: &str) -> bool {
        match &self.keys {
            Some(keys) => keys.contains(key),
            None => self.tags.iter().any(|(k, _)| k.as_str() == key),
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        if self.has(key) { tag_get(&self.tags, key) } else { None }
    }
}

fn has_meta(meta: &Keyed<Str<'static>>, key: &str) -> bool {
    meta.has(key)
}

fn set_meta_if_absent(meta: &mut Keyed<Str<'static>>, key: &str, value: &str) {
    if !meta.has(key) {
        meta.push((Str::from(key.to_owned()), Str::from(value.to_owned())));
    }
}

fn set_metric_if_absent(metrics: &mut Keyed<f64>, key: &str, value: f64) {
    if !metrics.has(key) {
        metrics.push((Str::from(key.to_owned()), value));
    }
}

/// Why a span cannot be mapped (it is refused and counted in the partial-success reply).
pub fn check_ids(span: &OtlpSpan) -> Result<(), String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {:?}: trace_id must be 16 bytes, not all zero (got {} bytes)",
            span.name,
            span.trace_id.len()
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {:?}: span_id must be 8 bytes, not all zero (got {} bytes)",
            span.name,
            span.span_id.len()
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!(
            "span {:?}: parent_span_id must be empty or 8 bytes (got {} bytes)",
            span.name,
            span.parent_span_id.len()
        ));
    }
    Ok(())
}

/// Converts one span (agent `OtelSpanToDDSpan` with top-level by span kind).
pub fn convert_span(span: &OtlpSpan, res: &[KeyValue], scope: Option<&InstrumentationScope>) -> Span<'static> {
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let a = Lookup {
        span: &span.attributes,
        res,
    };
    let mut meta: Keyed<Str<'static>> = Keyed::with_capacity(span.attributes.len() + res.len() + 8);
    let mut metrics: Keyed<f64> = Keyed::with_capacity(4);
    let service = a
        .get(&["datadog.service", "service.name"])
        .map_or_else(|| NO_SERVICE.to_owned(), Cow::into_owned);
    let status = span.status.as_ref();
    let status_code = status.map_or(StatusCode::Unset, |s| {
        StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset)
    });
    let mut error = i32::from(status_code == StatusCode::Error);
    // The names from the shared rules (`apm_conventions::otel`), unless `datadog.*` sets them.
    let otel_kind = otel::Kind::from_otlp(span.kind);
    let name = a
        .get(&["datadog.name"])
        .map_or_else(|| otel::operation_name(otel_kind, &a).into_string(), Cow::into_owned);
    let resource = a.get(&["datadog.resource"]).map_or_else(
        || otel::resource(otel_kind, &a).map_or_else(|| span.name.clone(), otel::Name::into_string),
        Cow::into_owned,
    );
    let typ = a
        .get(&["datadog.type"])
        .map_or_else(|| otel::span_type(otel_kind, &a).into_string(), Cow::into_owned);
    meta.push((Str::from_static("span.kind"), Str::from_static(otel_kind.name())));
    if let Some(code) = a.int(&["http.response.status_code", "http.status_code"])
        && code >= 0
    {
        metrics.push((Str::from_static("http.status_code"), code as f64));
    }
    if let Some(code) = a.get(&["rpc.grpc.status_code"]) {
        meta.push((Str::from_static("rpc.grpc.status_code"), Str::from(code.into_owned())));
    }
    let parent_id = be_u64(&span.parent_span_id);
    // Top level by span kind (the Datadog agent's `enable_otlp_compute_top_level_by_span_kind`):
    // roots, server and consumer spans; client and producer spans are measured.
    if parent_id == 0 || matches!(kind, SpanKind::Server | SpanKind::Consumer) {
        metrics.push((Str::from_static("_dd.top_level"), 1.0));
    }
    if a.int(&["_dd.measured"]) == Some(1) || matches!(kind, SpanKind::Client | SpanKind::Producer) {
        metrics.push((Str::from_static("_dd.measured"), 1.0));
    }
    if !span.trace_state.is_empty() {
        meta.push((Str::from_static("w3c.tracestate"), Str::from(span.trace_state.clone())));
    }
    for kv in &span.attributes {
        let Some(key) = mapped_key(&kv.key) else {
            continue;
        };
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::IntValue(i)) => numeric(&mut metrics, &key, *i as f64),
            Some(any_value::Value::DoubleValue(d)) => numeric(&mut metrics, &key, *d),
            _ => {
                let v = value_string(kv.value.as_ref());
                set_meta_if_absent(&mut meta, &key, &v);
            }
        }
    }
    meta.push((Str::from_static("otel.trace_id"), Str::from(hex(&span.trace_id))));
    if !has_meta(&meta, "version")
        && let Some(v) = a.get(&["datadog.version", "service.version"])
    {
        meta.push((Str::from_static("version"), Str::from(v.into_owned())));
    }
    if !span.events.is_empty() {
        meta.push((Str::from_static("events"), Str::from(marshal_events(span))));
        if span.events.iter().any(|e| e.name == "exception") {
            meta.push((
                Str::from_static("_dd.span_events.has_exception"),
                Str::from_static("true"),
            ));
        }
    }
    if !span.links.is_empty() {
        meta.push((Str::from_static("_dd.span_links"), Str::from(marshal_links(span))));
    }
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            meta.push((Str::from_static("otel.scope.name"), Str::from(scope.name.clone())));
            meta.push((Str::from_static("otel.library.name"), Str::from(scope.name.clone())));
        }
        if !scope.version.is_empty() {
            meta.push((Str::from_static("otel.scope.version"), Str::from(scope.version.clone())));
            meta.push((
                Str::from_static("otel.library.version"),
                Str::from(scope.version.clone()),
            ));
        }
    }
    let code_name = match status_code {
        StatusCode::Unset => "Unset",
        StatusCode::Ok => "Ok",
        StatusCode::Error => "Error",
    };
    meta.push((Str::from_static("otel.status_code"), Str::from_static(code_name)));
    let status_message = status.map_or("", |s| s.message.as_str());
    if !status_message.is_empty() {
        meta.push((
            Str::from_static("otel.status_description"),
            Str::from(status_message.to_owned()),
        ));
    }
    if let Some(e) = a.get(&["datadog.error"]) {
        error = i32::from(matches!(&*e, "true" | "1"));
    }
    if error == 1 {
        error_tags(span, status_message, &mut meta, &metrics);
    }
    if !has_meta(&meta, "env")
        && let Some(env) = a.get(&["datadog.env", "deployment.environment.name", "deployment.environment"])
    {
        meta.push((Str::from_static("env"), Str::from(env.into_owned())));
    }
    for kv in res {
        if let Some(key) = mapped_key(&kv.key) {
            set_meta_if_absent(&mut meta, &key, &value_string(kv.value.as_ref()));
        }
    }
    if let Some(scope) = scope {
        for kv in &scope.attributes {
            set_meta_if_absent(&mut meta, &kv.key, &value_string(kv.value.as_ref()));
        }
    }
    if !has_meta(&meta, "db.name")
        && let Some(ns) = attr_str(res, &["db.namespace"]).or_else(|| attr_str(&span.attributes, &["db.namespace"]))
    {
        meta.push((Str::from_static("db.name"), Str::from(ns.into_owned())));
    }
    Span {
        service: Str::from(service),
        name: Str::from(name),
        resource: Str::from(resource),
        trace_id: be_u64(span.trace_id.get(8..).unwrap_or_default()),
        span_id: be_u64(&span.span_id),
        parent_id,
        start: i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX),
        duration: (span.end_time_unix_nano as i128 - span.start_time_unix_nano as i128)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        error,
        meta: meta.tags,
        metrics: metrics.tags,
        r#type: Str::from(typ),
        meta_struct: Vec::new(),
        raw_fields: Vec::new(),
    }
}

/// A numeric attribute: `sampling.priority` is the Datadog sampling priority.
fn numeric(metrics: &mut Keyed<f64>, key: &str, v: f64) {
    let key = if key == "sampling.priority" {
        "_sampling_priority_v1"
    } else {
        key
    };
    set_metric_if_absent(metrics, key, v);
}

/// `error.msg`, `error.type`, `error.stack` of an error span: from its last `exception` event,
/// else the status message, else the HTTP status (`404 Not Found`).
fn error_tags(span: &OtlpSpan, status_message: &str, meta: &mut Keyed<Str<'static>>, metrics: &Keyed<f64>) {
    if let Some(e) = span.events.iter().rev().find(|e| e.name == "exception") {
        for (from, to) in [
            ("exception.message", "error.msg"),
            ("exception.type", "error.type"),
            ("exception.stacktrace", "error.stack"),
        ] {
            if let Some(v) = attr_str(&e.attributes, &[from]) {
                set_meta_if_absent(meta, to, &v);
            }
        }
    }
    if has_meta(meta, "error.msg") {
        return;
    }
    if !status_message.is_empty() {
        meta.push((Str::from_static("error.msg"), Str::from(status_message.to_owned())));
    } else if let Some(code) = metrics.get("http.status_code") {
        let code = *code as i64;
        let msg = match status_text(code) {
            Some(text) => format!("{code} {text}"),
            None => code.to_string(),
        };
        meta.push((Str::from_static("error.msg"), Str::from(msg)));
    }
}

fn map_resource_spans(rs: &ResourceSpans, opts: &MapOptions<'_>, out: &mut Mapped) {
    let res: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| r.attributes.as_slice());
    // Chunks in order of first appearance, found by the low 64 bits of the trace id.
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut chunks: Vec<(Vec<Span<'static>>, Option<f64>, u64)> = Vec::new();
    for ss in &rs.scope_spans {
        for span in &ss.spans {
            out.spans += 1;
            if let Err(e) = check_ids(span) {
                out.rejected += 1;
                out.first_rejection.get_or_insert(e);
                continue;
            }
            let dd = convert_span(span, res, ss.scope.as_ref());
            let high = be_u64(span.trace_id.get(..8).unwrap_or_default());
            let priority = dd.metric("_sampling_priority_v1");
            let i = *index.entry(dd.trace_id).or_insert_with(|| {
                chunks.push((Vec::new(), None, high));
                chunks.len() - 1
            });
            if let Some(chunk) = chunks.get_mut(i) {
                if priority.is_some() {
                    chunk.1 = priority;
                }
                chunk.0.push(dd);
            }
        }
    }
    if chunks.is_empty() {
        return;
    }
    let chunks = chunks
        .into_iter()
        .map(|(mut spans, priority, high)| {
            if high != 0
                && let Some(first) = spans.first_mut()
                && tag_get(&first.meta, "_dd.p.tid").is_none()
            {
                first
                    .meta
                    .push((Str::from_static("_dd.p.tid"), Str::from(format!("{high:016x}"))));
            }
            let priority = if opts.probabilistic_sampler {
                crate::span::PRIORITY_NONE
            } else {
                // A user decision (`sampling.priority`) wins; else the receiver's own sampler
                // keeps everything (`otlp_config.traces.probabilistic_sampler` at 100 %).
                let (p, dm) = match priority {
                    Some(p) => (p as i32, "-4"),
                    None => (PRIORITY_AUTO_KEEP, "-9"),
                };
                if p > 0
                    && let Some(first) = spans.first_mut()
                    && tag_get(&first.meta, "_dd.p.dm").is_none()
                {
                    first.meta.push((Str::from_static("_dd.p.dm"), Str::from_static(dm)));
                }
                p
            };
            TraceChunk {
                priority,
                origin: Str::new(),
                spans,
                tags: vec![(Str::from_static("_dd.otlp_sr"), Str::from_static("1.00"))],
                dropped_trace: false,
            }
        })
        .collect();
    let hostname = attr_str(res, &["datadog.host.name", "host.name", "_dd.hostname"])
        .map_or_else(|| opts.hostname.to_owned(), Cow::into_owned);
    let env = attr_str(
        res,
        &["datadog.env", "deployment.environment.name", "deployment.environment"],
    )
    .map_or_else(|| opts.default_env.to_owned(), Cow::into_owned);
    let container_id = attr_str(res, &["datadog.container.id", "container.id", "k8s.pod.uid"]).unwrap_or_default();
    let lang = attr_str(res, &["telemetry.sdk.language"]).unwrap_or_default();
    let sdk_version = attr_str(res, &["telemetry.sdk.version"]).unwrap_or_default();
    let app_version = attr_str(res, &["datadog.version", "service.version"]).unwrap_or_default();
    let runtime_id = attr_str(res, &["service.instance.id"]).unwrap_or_default();
    let stats_computed = attr_str(res, &["_dd.stats_computed"]).is_some();
    out.payloads.push(MappedPayload {
        payload: TracerPayload {
            container_id: Str::from(container_id.into_owned()),
            language_name: Str::from(lang.into_owned()),
            language_version: Str::new(),
            tracer_version: Str::from(format!("otlp-{sdk_version}")),
            runtime_id: Str::from(runtime_id.into_owned()),
            chunks,
            tags: Vec::new(),
            env: Str::from(env),
            hostname: Str::from(hostname),
            app_version: Str::from(app_version.into_owned()),
        },
        client_computed_stats: stats_computed || opts.client_computed_stats,
    });
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::{Status, span::Event};

    use super::*;

    use super::build::{kv, s};

    fn span(kind: SpanKind, attrs: Vec<KeyValue>) -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 42],
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
            name: "otel-name".to_owned(),
            kind: kind as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn request(spans: Vec<OtlpSpan>, res: Vec<KeyValue>) -> ExportTraceServiceRequest {
        super::build::request(res, ("my.lib", "1.2"), spans)
    }

    #[test]
    fn server_span_maps_like_the_datadog_agent() {
        let sp = span(
            SpanKind::Server,
            vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s("/items/{id}")),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("client.address", s("10.0.0.1")),
            ],
        );
        let res = vec![
            kv("service.name", s("shop")),
            kv("deployment.environment.name", s("prod")),
            kv("service.version", s("1.4")),
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.version", s("1.45.2")),
            kv("host.name", s("box")),
        ];
        let m = map_request(&request(vec![sp], res), &MapOptions::default());
        assert_eq!((m.spans, m.rejected), (1, 0));
        let p = &m.payloads[0].payload;
        assert_eq!(
            (
                &*p.env,
                &*p.hostname,
                &*p.language_name,
                &*p.tracer_version,
                &*p.app_version
            ),
            ("prod", "box", "python", "otlp-1.45.2", "1.4")
        );
        let c = &p.chunks[0];
        assert_eq!(c.priority, 1);
        assert_eq!(tag_get(&c.tags, "_dd.otlp_sr").map(|v| v.as_str()), Some("1.00"));
        let d = &c.spans[0];
        assert_eq!(
            (&*d.service, &*d.name, &*d.resource, &*d.r#type),
            ("shop", "http.server.request", "GET /items/{id}", "web")
        );
        assert_eq!(
            (d.trace_id, d.span_id, d.parent_id, d.start, d.duration),
            (42, 1, 0, 1_000, 2_500)
        );
        assert_eq!(d.meta("span.kind"), Some("server"));
        assert_eq!(d.meta("http.method"), Some("GET"));
        assert_eq!(d.meta("http.client_ip"), Some("10.0.0.1"));
        assert_eq!(d.meta("env"), Some("prod"));
        assert_eq!(d.meta("version"), Some("1.4"));
        assert_eq!(d.meta("_dd.p.tid"), Some("0000000000000007"));
        assert_eq!(d.meta("_dd.p.dm"), Some("-9"));
        assert_eq!(d.meta("otel.trace_id"), Some("0000000000000007000000000000002a"));
        assert_eq!(d.meta("otel.scope.name"), Some("my.lib"));
        assert_eq!(d.meta("otel.status_code"), Some("Unset"));
        assert_eq!(d.meta("service.name"), None, "convention keys are fields, not tags");
        assert_eq!(d.metric("http.status_code"), Some(200.0));
        assert_eq!(d.metric("_dd.top_level"), Some(1.0));
        assert_eq!(d.error, 0);
    }

    #[test]
    fn client_spans_are_measured_and_named_from_conventions() {
        let mut db = span(
            SpanKind::Client,
            vec![kv("db.system", s("PostgreSQL")), kv("db.statement", s("SELECT 1"))],
        );
        db.parent_span_id = vec![0, 0, 0, 0, 0, 0, 0, 9];
        let d = convert_span(&db, &[], None);
        assert_eq!(
            (&*d.name, &*d.resource, &*d.r#type, &*d.service),
            ("postgresql.query", "SELECT 1", "sql", NO_SERVICE),
            "the system is lower-cased before its type is looked up, as Datadog normalizes it"
        );
        assert_eq!(d.metric("_dd.measured"), Some(1.0));
        assert_eq!(d.metric("_dd.top_level"), None, "a client child is not top level");
        // Key by key, span before resource: a new key on the resource beats an old one on
        // the span (Datadog's semantics lookup).
        let mixed = span(SpanKind::Client, vec![kv("db.system", s("mysql"))]);
        let m = convert_span(&mixed, &[kv("db.system.name", s("redis"))], None);
        assert_eq!((&*m.name, &*m.r#type), ("redis.query", "redis"));
        let mut rpc = span(
            SpanKind::Client,
            vec![
                kv("rpc.system", s("grpc")),
                kv("rpc.service", s("Greeter")),
                kv("rpc.method", s("Hello")),
            ],
        );
        rpc.parent_span_id = vec![0, 0, 0, 0, 0, 0, 0, 9];
        let d = convert_span(&rpc, &[], None);
        assert_eq!((&*d.name, &*d.resource), ("grpc.client.request", "Hello Greeter"));
        let msg = span(
            SpanKind::Producer,
            vec![
                kv("messaging.system", s("Kafka")),
                kv("messaging.operation.type", s("publish")),
                kv("messaging.destination.name", s("orders")),
            ],
        );
        let d = convert_span(&msg, &[], None);
        assert_eq!(
            (&*d.name, &*d.resource, &*d.r#type),
            ("kafka.publish", "publish orders", "custom")
        );
        let internal = span(SpanKind::Internal, vec![]);
        let d = convert_span(&internal, &[], None);
        assert_eq!((&*d.name, &*d.resource), ("internal", "otel-name"));
    }

    #[test]
    fn explicit_names_and_priority_win() {
        let sp = span(
            SpanKind::Server,
            vec![
                kv("operation.name", s("custom.op")),
                kv("resource.name", s("custom res")),
                kv("span.type", s("worker")),
                kv("sampling.priority", Value::IntValue(2)),
                kv("service.name", s("span-level")),
            ],
        );
        let m = map_request(
            &request(vec![sp], vec![kv("service.name", s("res-level"))]),
            &MapOptions::default(),
        );
        let c = &m.payloads[0].payload.chunks[0];
        let d = &c.spans[0];
        assert_eq!(
            (&*d.name, &*d.resource, &*d.r#type, &*d.service),
            ("custom.op", "custom res", "worker", "span-level")
        );
        assert_eq!(c.priority, 2);
        assert_eq!(d.meta("_dd.p.dm"), Some("-4"));
        let m = map_request(
            &request(vec![span(SpanKind::Server, vec![])], vec![]),
            &MapOptions {
                probabilistic_sampler: true,
                ..MapOptions::default()
            },
        );
        assert_eq!(m.payloads[0].payload.chunks[0].priority, crate::span::PRIORITY_NONE);
    }

    #[test]
    fn error_status_takes_the_exception_event_then_the_message() {
        let mut sp = span(
            SpanKind::Server,
            vec![kv("http.response.status_code", Value::IntValue(503))],
        );
        sp.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".to_owned(),
        });
        sp.events = vec![Event {
            name: "exception".to_owned(),
            time_unix_nano: 5,
            attributes: vec![
                kv("exception.type", s("ValueError")),
                kv("exception.message", s("bad \"value\"")),
                kv("exception.stacktrace", s("line 1")),
            ],
            ..Default::default()
        }];
        let d = convert_span(&sp, &[], None);
        assert_eq!(d.error, 1);
        assert_eq!(d.meta("error.msg"), Some("bad \"value\""));
        assert_eq!(d.meta("error.type"), Some("ValueError"));
        assert_eq!(d.meta("error.stack"), Some("line 1"));
        assert_eq!(d.meta("otel.status_code"), Some("Error"));
        assert_eq!(d.meta("otel.status_description"), Some("boom"));
        assert_eq!(d.meta("_dd.span_events.has_exception"), Some("true"));
        let events: serde_json::Value = serde_json::from_str(d.meta("events").unwrap()).unwrap();
        assert_eq!(events[0]["attributes"]["exception.message"], "bad \"value\"");
        sp.events.clear();
        assert_eq!(convert_span(&sp, &[], None).meta("error.msg"), Some("boom"));
        sp.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        assert_eq!(
            convert_span(&sp, &[], None).meta("error.msg"),
            Some("503 Service Unavailable")
        );
    }

    #[test]
    fn spans_group_by_trace_and_bad_ids_are_refused() {
        let a = span(SpanKind::Server, vec![]);
        let mut b = span(SpanKind::Internal, vec![]);
        b.parent_span_id = a.span_id.clone();
        b.span_id = vec![0, 0, 0, 0, 0, 0, 0, 2];
        let mut other = span(SpanKind::Server, vec![]);
        other.trace_id[15] = 43;
        let mut bad = span(SpanKind::Server, vec![]);
        bad.trace_id = vec![1, 2, 3];
        let mut zero = span(SpanKind::Server, vec![]);
        zero.span_id = vec![0; 8];
        let m = map_request(&request(vec![a, b, other, bad, zero], vec![]), &MapOptions::default());
        assert_eq!((m.spans, m.rejected), (5, 2));
        assert!(m.first_rejection.unwrap().contains("trace_id must be 16 bytes"));
        let chunks = &m.payloads[0].payload.chunks;
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].spans.len(), 2);
        assert_eq!(chunks[1].spans[0].trace_id, 43);
        let all_bad = {
            let mut x = span(SpanKind::Server, vec![]);
            x.span_id.clear();
            x
        };
        let m = map_request(&request(vec![all_bad], vec![]), &MapOptions::default());
        assert!(m.payloads.is_empty(), "a resource with no valid span yields no payload");
    }

    #[test]
    fn values_stringify_like_pdata() {
        let arr = AnyValue {
            value: Some(Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![
                    AnyValue { value: Some(s("a")) },
                    AnyValue {
                        value: Some(Value::IntValue(3)),
                    },
                ],
            })),
        };
        assert_eq!(value_string(Some(&arr)), "[\"a\",3]");
        assert_eq!(
            value_string(Some(&AnyValue {
                value: Some(Value::BoolValue(true))
            })),
            "true"
        );
        assert_eq!(
            value_string(Some(&AnyValue {
                value: Some(Value::DoubleValue(2.5))
            })),
            "2.5"
        );
        assert_eq!(
            value_string(Some(&AnyValue {
                value: Some(Value::BytesValue(b"hi!?".to_vec()))
            })),
            "aGkhPw=="
        );
    }
}

#[cfg(test)]
mod scale_tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;

    /// 50 000 attributes on one span map in linear time (a quadratic "already set?" scan
    /// would take seconds); every attribute is kept once.
    #[test]
    fn many_attributes_map_in_linear_time() {
        let attrs: Vec<KeyValue> = (0..50_000)
            .map(|i| KeyValue {
                key: format!("attr.{i}"),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("v".to_owned())),
                }),
                ..Default::default()
            })
            .collect();
        let span = OtlpSpan {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            kind: SpanKind::Server as i32,
            attributes: attrs.clone(),
            ..Default::default()
        };
        let d = convert_span(&span, &attrs, None);
        assert_eq!(d.meta.iter().filter(|(k, _)| k.starts_with("attr.")).count(), 50_000);
    }
}
