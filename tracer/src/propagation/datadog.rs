//! Datadog headers: decimal 64-bit ids, the upper 64 trace-id bits in `_dd.p.tid`.

use super::{Extracted, Extractor, Injector};
use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::{SpanContext, SpanId, TraceId};

const TRACE_ID: &str = "x-datadog-trace-id";
const PARENT_ID: &str = "x-datadog-parent-id";
const PRIORITY: &str = "x-datadog-sampling-priority";
const ORIGIN: &str = "x-datadog-origin";
const TAGS: &str = "x-datadog-tags";
/// `DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH`'s default.
const MAX_TAGS_LEN: usize = 512;

fn parse_hex16(v: &str) -> Option<u64> {
    (v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(v, 16).ok())
        .flatten()
}

pub(super) fn extract(c: &dyn Extractor) -> Option<Extracted> {
    let low: u64 = c.get(TRACE_ID)?.trim().parse().ok().filter(|v| *v != 0)?;
    let origin = c
        .get(ORIGIN)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let parent: u64 = match c.get(PARENT_ID) {
        Some(v) => v.trim().parse().ok()?,
        None => 0,
    };
    if parent == 0 && origin.as_deref() != Some("synthetics") {
        return None;
    }
    let priority = c.get(PRIORITY).and_then(|v| v.trim().parse::<i8>().ok());
    let (mut high, mut mechanism, mut tags) = (0u64, None, Vec::new());
    if let Some(raw) = c.get(TAGS).filter(|raw| raw.len() <= MAX_TAGS_LEN) {
        for pair in raw.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                // Malformed: none of the tags can be trusted.
                tags.clear();
                mechanism = None;
                high = 0;
                break;
            };
            let (k, v) = (k.trim(), v.trim());
            if !k.starts_with("_dd.p.") || v.is_empty() {
                continue;
            }
            match k {
                "_dd.p.tid" => high = parse_hex16(v).unwrap_or(0),
                "_dd.p.dm" => mechanism = Mechanism::from_dm(v),
                _ => tags.push((k.to_owned(), v.to_owned())),
            }
        }
    }
    Some(Extracted {
        trace_id: TraceId::from_parts(high, low),
        parent_id: SpanId::from_u64(parent),
        priority,
        mechanism,
        origin,
        tags,
        last_parent: None,
    })
}

pub(super) fn inject(ctx: &SpanContext, decision: SamplingDecision, c: &mut dyn Injector) {
    c.set(TRACE_ID, ctx.trace_id().low().to_string());
    c.set(PARENT_ID, ctx.span_id().to_u64().to_string());
    c.set(PRIORITY, decision.priority.to_string());
    if let Some(origin) = ctx.origin() {
        c.set(ORIGIN, origin.to_owned());
    }
    let mut tags: Vec<String> = Vec::new();
    if decision.is_keep() {
        tags.push(format!("_dd.p.dm={}", decision.mechanism.as_dm()));
    }
    if ctx.trace_id().high() != 0 {
        tags.push(format!("_dd.p.tid={:016x}", ctx.trace_id().high()));
    }
    tags.extend(ctx.propagated_tags().map(|(k, v)| format!("{k}={v}")));
    let joined = tags.join(",");
    if !joined.is_empty() && joined.len() <= MAX_TAGS_LEN {
        c.set(TAGS, joined);
    }
}
