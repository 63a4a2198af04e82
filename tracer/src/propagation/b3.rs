//! Zipkin B3: the multi-header form (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`) and the
//! single `b3: {trace}-{span}[-{sampled}[-{parent}]]` header.

use super::{Extracted, Extractor, Injector};
use crate::sampling::{AUTO_KEEP, AUTO_REJECT, SamplingDecision};
use crate::span::{SpanContext, SpanId, TraceId};

const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const SINGLE: &str = "b3";

fn hex_u64(v: &str) -> Option<u64> {
    (!v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(v, 16).ok())
        .flatten()
}

/// A 16- or 32-hex-digit trace id (shorter ones are left-padded, as B3 allows).
fn trace_id(v: &str) -> Option<TraceId> {
    let v = v.trim();
    if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(v, 16)
        .ok()
        .filter(|t| *t != 0)
        .map(TraceId::from_u128)
}

fn span_id(v: &str) -> Option<SpanId> {
    hex_u64(v.trim()).filter(|s| *s != 0).map(SpanId::from_u64)
}

/// `1`/`d`/`true` keep, `0`/`false` drop; anything else is no decision.
fn sampled(v: &str) -> Option<i8> {
    match v.trim() {
        "1" | "d" | "true" => Some(AUTO_KEEP),
        "0" | "false" => Some(AUTO_REJECT),
        _ => None,
    }
}

fn extracted(trace_id: TraceId, parent_id: SpanId, priority: Option<i8>) -> Extracted {
    Extracted {
        trace_id,
        parent_id,
        priority,
        mechanism: None,
        origin: None,
        tags: Vec::new(),
        last_parent: None,
    }
}

pub(super) fn extract_multi(c: &dyn Extractor) -> Option<Extracted> {
    let trace = trace_id(c.get(TRACE_ID)?)?;
    let span = span_id(c.get(SPAN_ID)?)?;
    let priority = c.get(SAMPLED).and_then(sampled);
    Some(extracted(trace, span, priority))
}

pub(super) fn extract_single(c: &dyn Extractor) -> Option<Extracted> {
    let mut parts = c.get(SINGLE)?.trim().split('-');
    // A lone sampling state (`b3: 0`) carries no context.
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let priority = match parts.next() {
        Some(s) => Some(sampled(s)?),
        None => None,
    };
    if let Some(parent) = parts.next() {
        span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(extracted(trace, span, priority))
}

fn trace_hex(ctx: &SpanContext) -> String {
    let t = ctx.trace_id();
    if t.high() == 0 {
        format!("{:016x}", t.low())
    } else {
        format!("{:032x}", t.to_u128())
    }
}

pub(super) fn inject_multi(ctx: &SpanContext, decision: SamplingDecision, c: &mut dyn Injector) {
    c.set(TRACE_ID, trace_hex(ctx));
    c.set(SPAN_ID, format!("{:016x}", ctx.span_id().to_u64()));
    c.set(SAMPLED, if decision.is_keep() { "1" } else { "0" }.to_owned());
}

pub(super) fn inject_single(ctx: &SpanContext, decision: SamplingDecision, c: &mut dyn Injector) {
    let sampled = if decision.is_keep() { '1' } else { '0' };
    c.set(
        SINGLE,
        format!("{}-{:016x}-{sampled}", trace_hex(ctx), ctx.span_id().to_u64()),
    );
}
