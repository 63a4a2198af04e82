//! W3C trace context: `traceparent` and the `dd=` member of `tracestate`.

use super::{Extracted, Extractor, Injector};
use crate::sampling::{Mechanism, SamplingDecision};
use crate::span::{SpanContext, SpanId, TraceId};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// Longest `dd=` member we write.
const MAX_DD_MEMBER: usize = 256;

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses `version-traceid-parentid-flags`.
fn parse_traceparent(v: &str) -> Option<(TraceId, SpanId, bool)> {
    let v = v.trim();
    let mut parts = v.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || !lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((TraceId::from_u128(trace), SpanId::from_u64(parent), flags & 1 == 1))
}

pub(super) fn extract(c: &dyn Extractor) -> Option<Extracted> {
    let (trace_id, parent_id, sampled) = parse_traceparent(c.get(TRACEPARENT)?)?;
    let (mut priority, mut mechanism, mut origin, mut tags) = (None, None, None, Vec::new());
    let mut last_parent = None;
    let dd = c
        .get(TRACESTATE)
        .and_then(|ts| ts.split(',').map(str::trim).find_map(|m| m.strip_prefix("dd=")));
    if let Some(dd) = dd {
        for field in dd.split(';') {
            let Some((k, v)) = field.split_once(':') else { continue };
            match k {
                "s" => priority = v.parse::<i8>().ok(),
                "o" => origin = Some(v.replace('~', "=")),
                "p" if v.len() == 16 && lower_hex(v) => last_parent = Some(v.to_owned()),
                "t.dm" => mechanism = Mechanism::from_dm(v),
                "t.tid" => {}
                _ => {
                    if let Some(name) = k.strip_prefix("t.") {
                        tags.push((format!("_dd.p.{name}"), v.replace('~', "=")));
                    }
                }
            }
        }
    }
    // The sampled flag wins over a contradicting `s`.
    let priority = match (sampled, priority) {
        (true, Some(p)) if p > 0 => p,
        (true, _) => 1,
        (false, Some(p)) if p <= 0 => p,
        (false, _) => 0,
    };
    Some(Extracted {
        trace_id,
        parent_id,
        priority: Some(priority),
        mechanism,
        origin,
        tags,
        last_parent,
    })
}

/// tracestate values may not hold `,` `;` `~` (replaced by `_`) and encode `=` as `~`.
fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            ',' | ';' | '~' => '_',
            '=' => '~',
            c if (' '..='~').contains(&c) => c,
            _ => '_',
        })
        .collect()
}

pub(super) fn inject(ctx: &SpanContext, decision: SamplingDecision, c: &mut dyn Injector) {
    let flags = u8::from(decision.is_keep());
    c.set(
        TRACEPARENT,
        format!(
            "00-{:032x}-{:016x}-{flags:02x}",
            ctx.trace_id().to_u128(),
            ctx.span_id().to_u64()
        ),
    );
    let mut dd = format!("dd=s:{};p:{:016x}", decision.priority, ctx.span_id().to_u64());
    if let Some(origin) = ctx.origin() {
        dd.push_str(";o:");
        dd.push_str(&sanitize(origin));
    }
    if decision.is_keep() {
        dd.push_str(";t.dm:");
        dd.push_str(decision.mechanism.as_dm());
    }
    for (k, v) in ctx.propagated_tags() {
        let Some(name) = k.strip_prefix("_dd.p.") else { continue };
        let field = format!(";t.{}:{}", sanitize(name), sanitize(v));
        if dd.len() + field.len() > MAX_DD_MEMBER {
            break;
        }
        dd.push_str(&field);
    }
    c.set(TRACESTATE, dd);
}
