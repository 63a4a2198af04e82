use std::collections::HashMap;

use super::*;
use crate::TracerConfig;
use crate::sampling::{AUTO_KEEP, AUTO_REJECT, USER_KEEP};

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn datadog_only() -> Propagator {
    Propagator::new(vec![Style::Datadog], vec![Style::Datadog])
}

fn w3c_only() -> Propagator {
    Propagator::new(vec![Style::TraceContext], vec![Style::TraceContext])
}

#[test]
fn datadog_headers_are_extracted() {
    let h = headers(&[
        ("x-datadog-trace-id", "1234567890123456789"),
        ("x-datadog-parent-id", "987654321"),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-origin", "rum"),
        (
            "x-datadog-tags",
            "_dd.p.dm=-4,_dd.p.tid=6b01eedd00000000,_dd.p.usr.id=u1,other=x",
        ),
    ]);
    let ctx = datadog_only().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(
        ctx.trace_id(),
        TraceId::from_parts(0x6b01_eedd_0000_0000, 1_234_567_890_123_456_789)
    );
    assert_eq!(ctx.span_id(), SpanId::from_u64(987_654_321));
    assert!(ctx.is_remote());
    let d = ctx.sampling_decision().unwrap_or_else(|| unreachable!());
    assert_eq!((d.priority, d.mechanism.as_dm()), (USER_KEEP, "-4"));
    assert_eq!(ctx.origin(), Some("rum"));
    assert_eq!(ctx.propagated_tags().collect::<Vec<_>>(), [("_dd.p.usr.id", "u1")]);
}

#[test]
fn traceparent_and_tracestate_are_extracted() {
    let h = headers(&[
        ("traceparent", "00-6b01eedd0000000000000000000004d2-00000000000000ff-01"),
        (
            "tracestate",
            "other=1,dd=s:2;o:synthetics;p:0000000000000abc;t.dm:-3;t.usr.id:a~b",
        ),
    ]);
    let ctx = w3c_only().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(ctx.trace_id(), TraceId::from_parts(0x6b01_eedd_0000_0000, 1234));
    assert_eq!(ctx.span_id(), SpanId::from_u64(255));
    let d = ctx.sampling_decision().unwrap_or_else(|| unreachable!());
    assert_eq!((d.priority, d.mechanism.as_dm()), (2, "-3"));
    assert_eq!(ctx.origin(), Some("synthetics"));
    assert_eq!(ctx.propagated_tags().collect::<Vec<_>>(), [("_dd.p.usr.id", "a=b")]);
}

#[test]
fn sampled_flag_reconciles_priority() {
    let cases = [
        ("01", None, AUTO_KEEP),
        ("00", None, AUTO_REJECT),
        ("01", Some("dd=s:-1"), AUTO_KEEP),
        ("00", Some("dd=s:2"), AUTO_REJECT),
        ("01", Some("dd=s:2"), USER_KEEP),
        ("00", Some("dd=s:-1"), -1),
    ];
    for (flags, state, want) in cases {
        let tp = format!("00-0000000000000000000000000000002a-000000000000000b-{flags}");
        let mut h = headers(&[("traceparent", tp.as_str())]);
        if let Some(s) = state {
            h.insert("tracestate".into(), s.into());
        }
        let got = w3c_only()
            .extract(&h)
            .and_then(|c| c.sampling_decision())
            .map(|d| d.priority);
        assert_eq!(got, Some(want), "{flags} {state:?}");
    }
}

#[test]
fn malformed_headers_are_ignored() {
    let bad: &[&[(&str, &str)]] = &[
        &[("x-datadog-trace-id", "abc"), ("x-datadog-parent-id", "1")],
        &[("x-datadog-trace-id", "0"), ("x-datadog-parent-id", "1")],
        &[("x-datadog-trace-id", "-5"), ("x-datadog-parent-id", "1")],
        &[
            ("x-datadog-trace-id", "18446744073709551616"),
            ("x-datadog-parent-id", "1"),
        ],
        &[("x-datadog-trace-id", "12"), ("x-datadog-parent-id", "x")],
        &[("x-datadog-trace-id", "12")], // no parent and not synthetics
        &[("traceparent", "00-0000000000000000000000000000002a-000000000000000b")],
        &[("traceparent", "00-00000000000000000000000000000000-000000000000000b-01")],
        &[("traceparent", "00-0000000000000000000000000000002a-0000000000000000-01")],
        &[("traceparent", "ff-0000000000000000000000000000002a-000000000000000b-01")],
        &[("traceparent", "00-0000000000000000000000000000002A-000000000000000b-01")],
        &[(
            "traceparent",
            "00-0000000000000000000000000000002a-000000000000000b-01-extra",
        )],
        &[("traceparent", "00-zz00000000000000000000000000002a-000000000000000b-01")],
        &[("traceparent", "")],
        &[("traceparent", "--------")],
    ];
    for h in bad {
        assert!(Propagator::default().extract(&headers(h)).is_none(), "{h:?}");
    }
    // Malformed x-datadog-tags: the context survives, its tags do not.
    let h = headers(&[
        ("x-datadog-trace-id", "12"),
        ("x-datadog-parent-id", "3"),
        ("x-datadog-tags", "_dd.p.tid=6b01eedd00000000,garbage"),
    ]);
    let ctx = datadog_only().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(ctx.trace_id(), TraceId::from_u128(12));
    assert_eq!(ctx.propagated_tags().count(), 0);
    // Synthetics may omit the parent.
    let h = headers(&[("x-datadog-trace-id", "12"), ("x-datadog-origin", "synthetics")]);
    assert!(datadog_only().extract(&h).is_some());
}

#[test]
fn a_later_w3c_context_of_the_same_trace_supplies_the_parent() {
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("x-datadog-sampling-priority", "1"),
        ("traceparent", "00-6b01eedd00000000000000000000002a-0000000000000009-01"),
    ]);
    let ctx = Propagator::default().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(ctx.span_id(), SpanId::from_u64(9));
    assert_eq!(ctx.trace_id(), TraceId::from_parts(0x6b01_eedd_0000_0000, 42));
    // A different trace in traceparent does not override the first style.
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("traceparent", "00-00000000000000000000000000000099-0000000000000009-01"),
    ]);
    let ctx = Propagator::default().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!((ctx.trace_id().low(), ctx.span_id()), (42, SpanId::from_u64(7)));
}

#[test]
fn inject_then_extract_round_trips_in_both_styles() {
    let tracer = Tracer::without_worker(TracerConfig::default().with_service("web"));
    let span = tracer.span("request").start();
    let ctx = span.context().unwrap_or_else(|| unreachable!());
    for p in [datadog_only(), w3c_only(), Propagator::default()] {
        let mut h: HashMap<String, String> = HashMap::new();
        p.inject(&tracer, &ctx, &mut h);
        let back = p.extract(&h).unwrap_or_else(|| panic!("{h:?}"));
        assert_eq!(back.trace_id(), span.trace_id(), "{h:?}");
        assert_eq!(back.span_id(), span.span_id(), "{h:?}");
        let d = back.sampling_decision().unwrap_or_else(|| unreachable!());
        assert_eq!(d.priority, AUTO_KEEP);
        assert_eq!(d.mechanism.as_dm(), "-0", "{h:?}");
    }
    let mut h: HashMap<String, String> = HashMap::new();
    Propagator::default().inject(&tracer, &ctx, &mut h);
    assert_eq!(h["x-datadog-trace-id"], span.trace_id().low().to_string());
    assert_eq!(
        h["x-datadog-tags"],
        format!("_dd.p.dm=-0,_dd.p.tid={:016x}", span.trace_id().high())
    );
    assert_eq!(
        h["traceparent"],
        format!("00-{}-{}-01", span.trace_id().to_hex(), span.span_id().to_hex())
    );
    assert_eq!(h["tracestate"], format!("dd=s:1;p:{};t.dm:-0", span.span_id().to_hex()));
}

#[test]
fn upstream_decision_and_tags_travel_downstream() {
    let tracer = Tracer::without_worker(TracerConfig::default());
    let incoming = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("x-datadog-sampling-priority", "-1"),
        ("x-datadog-origin", "synthetics;x=y"),
        ("x-datadog-tags", "_dd.p.usr.id=u1"),
    ]);
    let remote = Propagator::default()
        .extract(&incoming)
        .unwrap_or_else(|| unreachable!());
    let child = tracer.span("handler").child_of(&remote).start();
    let ctx = child.context().unwrap_or_else(|| unreachable!());
    let mut out: HashMap<String, String> = HashMap::new();
    Propagator::default().inject(&tracer, &ctx, &mut out);
    assert_eq!(out["x-datadog-trace-id"], "42");
    assert_eq!(out["x-datadog-parent-id"], child.span_id().to_u64().to_string());
    assert_eq!(out["x-datadog-sampling-priority"], "-1");
    assert_eq!(out["x-datadog-tags"], "_dd.p.usr.id=u1", "no decision maker on a drop");
    assert!(out["traceparent"].ends_with("-00"));
    assert_eq!(
        out["tracestate"],
        format!("dd=s:-1;p:{};o:synthetics_x~y;t.usr.id:u1", child.span_id().to_hex())
    );
}

#[test]
fn style_lists_parse() {
    assert_eq!(
        Style::parse_list("datadog, tracecontext,datadog"),
        Ok(vec![Style::Datadog, Style::TraceContext])
    );
    assert_eq!(Style::parse_list("none"), Ok(vec![]));
    assert!(Style::parse_list("b3,datadog").is_err());
}
