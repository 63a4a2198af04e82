use std::collections::HashMap;

use super::*;
use crate::sampling::{AUTO_KEEP, AUTO_REJECT, USER_KEEP};
use crate::{Tracer, TracerConfig};

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
    assert_eq!(
        Style::parse_list("B3, b3multi, b3 single header, baggage"),
        Ok(vec![Style::B3Single, Style::B3Multi, Style::Baggage])
    );
    assert!(Style::parse_list("jaeger,datadog").is_err());
}

fn b3multi() -> Propagator {
    Propagator::new(vec![Style::B3Multi], vec![Style::B3Multi])
}

fn b3single() -> Propagator {
    Propagator::new(vec![Style::B3Single], vec![Style::B3Single])
}

#[test]
fn b3_headers_are_extracted() {
    // 128-bit trace id, sampled.
    let h = headers(&[
        ("x-b3-traceid", "6b01eedd000000000000000000000abc"),
        ("x-b3-spanid", "00000000000000ff"),
        ("x-b3-sampled", "1"),
    ]);
    let ctx = b3multi().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(ctx.trace_id(), TraceId::from_parts(0x6b01_eedd_0000_0000, 0xabc));
    assert_eq!(ctx.span_id(), SpanId::from_u64(255));
    assert_eq!(ctx.sampling_decision().map(|d| d.priority), Some(AUTO_KEEP));
    // 64-bit trace id, not sampled; no decision when x-b3-sampled is absent.
    let h = headers(&[
        ("x-b3-traceid", "0000000000000abc"),
        ("x-b3-spanid", "00000000000000ff"),
        ("x-b3-sampled", "0"),
    ]);
    let ctx = b3multi().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(ctx.trace_id(), TraceId::from_u128(0xabc));
    assert_eq!(ctx.sampling_decision().map(|d| d.priority), Some(AUTO_REJECT));
    let h = headers(&[("x-b3-traceid", "abc"), ("x-b3-spanid", "ff")]);
    let ctx = b3multi().extract(&h).unwrap_or_else(|| unreachable!());
    assert_eq!(
        (ctx.trace_id(), ctx.span_id()),
        (TraceId::from_u128(0xabc), SpanId::from_u64(255))
    );
    assert!(ctx.sampling_decision().is_none());

    for (b3, trace, priority) in [
        (
            "6b01eedd000000000000000000000abc-00000000000000ff-1",
            0x6b01_eedd_0000_0000_0000_0000_0000_0abc,
            Some(AUTO_KEEP),
        ),
        (
            "0000000000000abc-00000000000000ff-d-0000000000000001",
            0xabc,
            Some(AUTO_KEEP),
        ),
        ("0000000000000abc-00000000000000ff-0", 0xabc, Some(AUTO_REJECT)),
        ("0000000000000abc-00000000000000ff", 0xabc, None),
    ] {
        let ctx = b3single()
            .extract(&headers(&[("b3", b3)]))
            .unwrap_or_else(|| panic!("{b3}"));
        assert_eq!(ctx.trace_id(), TraceId::from_u128(trace), "{b3}");
        assert_eq!(ctx.span_id(), SpanId::from_u64(255), "{b3}");
        assert_eq!(ctx.sampling_decision().map(|d| d.priority), priority, "{b3}");
    }
}

#[test]
fn malformed_b3_headers_are_ignored() {
    let multi: &[&[(&str, &str)]] = &[
        &[("x-b3-traceid", "xyz"), ("x-b3-spanid", "00000000000000ff")],
        &[("x-b3-traceid", "0"), ("x-b3-spanid", "00000000000000ff")],
        &[
            ("x-b3-traceid", "6b01eedd000000000000000000000abc0"),
            ("x-b3-spanid", "ff"),
        ],
        &[("x-b3-traceid", "abc"), ("x-b3-spanid", "0")],
        &[("x-b3-traceid", "abc"), ("x-b3-spanid", "00000000000000ff0")],
        &[("x-b3-traceid", "abc")],
        &[("x-b3-spanid", "abc")],
        &[("x-b3-traceid", ""), ("x-b3-spanid", "")],
    ];
    for h in multi {
        assert!(b3multi().extract(&headers(h)).is_none(), "{h:?}");
    }
    for b3 in [
        "0",
        "1",
        "d",
        "",
        "-",
        "---",
        "abc-",
        "abc-ff-2",
        "abc-ff-1-zz",
        "abc-ff-1-1-1",
        "abc-0-1",
        "é-ff",
        "6b01eedd000000000000000000000abc0-ff",
    ] {
        assert!(b3single().extract(&headers(&[("b3", b3)])).is_none(), "{b3:?}");
    }
}

#[test]
fn b3_round_trips() {
    let tracer = Tracer::without_worker(TracerConfig::default().with_service("web"));
    let span = tracer.span("request").start();
    let ctx = span.context().unwrap_or_else(|| unreachable!());
    for p in [b3multi(), b3single()] {
        let mut h: HashMap<String, String> = HashMap::new();
        p.inject(&tracer, &ctx, &mut h);
        let back = p.extract(&h).unwrap_or_else(|| panic!("{h:?}"));
        assert_eq!(
            (back.trace_id(), back.span_id()),
            (span.trace_id(), span.span_id()),
            "{h:?}"
        );
        assert_eq!(back.sampling_decision().map(|d| d.priority), Some(AUTO_KEEP));
    }
    let mut h: HashMap<String, String> = HashMap::new();
    Propagator::new(vec![], vec![Style::B3Multi, Style::B3Single]).inject(&tracer, &ctx, &mut h);
    assert_eq!(h["x-b3-traceid"], span.trace_id().to_hex());
    assert_eq!(h["x-b3-spanid"], span.span_id().to_hex());
    assert_eq!(h["x-b3-sampled"], "1");
    assert_eq!(
        h["b3"],
        format!("{}-{}-1", span.trace_id().to_hex(), span.span_id().to_hex())
    );
    // A 64-bit upstream trace id stays 16 hex digits.
    let remote = SpanContext::remote(TraceId::from_u128(0xabc), SpanId::from_u64(7), None, None, vec![]);
    let mut h: HashMap<String, String> = HashMap::new();
    b3multi().inject(&tracer, &remote, &mut h);
    assert_eq!(h["x-b3-traceid"], "0000000000000abc");
}

#[test]
fn baggage_is_extracted_and_injected() {
    let all = Propagator::default();
    let h = headers(&[(
        "baggage",
        " user.id = alice%40example.com ;prop=1, session.id=s%2C1,account.id=%E2%9C%93,empty=",
    )]);
    let incoming = all.extract_incoming(&h);
    assert!(incoming.context.is_none(), "baggage alone is no trace context");
    let b = incoming.baggage.unwrap_or_else(|| unreachable!());
    assert_eq!(
        b.iter().collect::<Vec<_>>(),
        [
            ("user.id", "alice@example.com"),
            ("session.id", "s,1"),
            ("account.id", "✓"),
            ("empty", "")
        ]
    );
    let mut out: HashMap<String, String> = HashMap::new();
    all.inject_baggage(&b, &mut out);
    assert_eq!(
        out["baggage"],
        "user.id=alice@example.com,session.id=s%2C1,account.id=%E2%9C%93,empty="
    );
    assert_eq!(all.extract_incoming(&out).baggage.as_ref(), Some(&b), "round trip");
    // Not enabled: neither read nor written.
    let no_baggage = Propagator::new(vec![Style::Datadog], vec![Style::Datadog]);
    assert!(no_baggage.extract_incoming(&h).baggage.is_none());
    let mut out: HashMap<String, String> = HashMap::new();
    no_baggage.inject_baggage(&b, &mut out);
    assert!(out.is_empty());
}

#[test]
fn baggage_limits_and_malformed_headers() {
    let all = Propagator::default();
    for bad in ["novalue", "=v", "k=v\"k2", "k=%zz", "k=%E2%9C", "k=a\"b", ",;,k"] {
        assert!(
            all.extract_incoming(&headers(&[("baggage", bad)])).baggage.is_none(),
            "{bad:?}"
        );
    }
    let long = format!("k={}", "v".repeat(BAGGAGE_MAX_BYTES));
    assert!(all.extract_incoming(&headers(&[("baggage", &long)])).baggage.is_none());
    let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
    let b = all
        .extract_incoming(&headers(&[("baggage", &many.join(","))]))
        .baggage
        .unwrap_or_default();
    assert_eq!(b.len(), BAGGAGE_MAX_ITEMS);
    // Injection stays within the byte limit.
    let mut big = Baggage::new();
    for i in 0..10 {
        big.insert(format!("k{i}"), "x".repeat(1000));
    }
    let mut out: HashMap<String, String> = HashMap::new();
    all.inject_baggage(&big, &mut out);
    assert!(out["baggage"].len() <= BAGGAGE_MAX_BYTES);
    assert_eq!(out["baggage"].split(',').count(), 8);
}

#[test]
fn the_current_baggage_follows_the_guard() {
    assert!(Baggage::current().is_none());
    let mut b = Baggage::new();
    b.insert("user.id", "u1");
    {
        let _g = Baggage::enter(std::sync::Arc::new(b));
        assert_eq!(
            Baggage::current()
                .and_then(|b| b.get("user.id").map(str::to_owned))
                .as_deref(),
            Some("u1")
        );
    }
    assert!(Baggage::current().is_none());
}

#[test]
fn w3c_parent_wins_and_the_datadog_parent_is_kept_for_reparenting() {
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("traceparent", "00-0000000000000000000000000000002a-0000000000000009-01"),
        ("tracestate", "dd=s:1;p:0000000000000005"),
    ]);
    let inc = Propagator::default().extract_incoming(&h);
    assert_eq!(inc.context.map(|c| c.span_id()), Some(SpanId::from_u64(9)));
    assert_eq!(
        inc.reparent_id.as_deref(),
        Some("0000000000000005"),
        "the dd member's p"
    );
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("traceparent", "00-0000000000000000000000000000002a-0000000000000009-01"),
    ]);
    let inc = Propagator::default().extract_incoming(&h);
    assert_eq!(
        inc.reparent_id.as_deref(),
        Some("0000000000000007"),
        "else the Datadog parent"
    );
    // Same parent: nothing to re-parent. Extract-first: W3C is not consulted.
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "9"),
        ("traceparent", "00-0000000000000000000000000000002a-0000000000000009-01"),
    ]);
    assert!(Propagator::default().extract_incoming(&h).reparent_id.is_none());
    let h = headers(&[
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "7"),
        ("traceparent", "00-0000000000000000000000000000002a-0000000000000009-01"),
    ]);
    let inc = Propagator::default().with_extract_first(true).extract_incoming(&h);
    assert_eq!(inc.context.map(|c| c.span_id()), Some(SpanId::from_u64(7)));
    assert!(inc.reparent_id.is_none());
}

#[test]
fn the_config_chooses_the_styles() {
    let config = TracerConfig::from_source(&[
        ("DD_TRACE_PROPAGATION_STYLE_EXTRACT", "b3multi"),
        ("DD_TRACE_PROPAGATION_STYLE_INJECT", "tracecontext"),
    ])
    .unwrap_or_default();
    let p = Propagator::from_config(&config);
    assert_eq!(p.extract_styles(), [Style::B3Multi]);
    assert_eq!(p.inject_styles(), [Style::TraceContext]);
    let h = headers(&[("x-datadog-trace-id", "42"), ("x-datadog-parent-id", "7")]);
    assert!(p.extract(&h).is_none(), "datadog headers are not read");
}

#[test]
fn no_header_content_panics() {
    // Arbitrary bytes in every header, every style: never a panic.
    let styles = Style::ALL.to_vec();
    let p = Propagator::new(styles.clone(), styles);
    let names = [
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-sampling-priority",
        "x-datadog-tags",
        "traceparent",
        "tracestate",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "b3",
        "baggage",
    ];
    let samples = [
        "",
        "-",
        "%",
        "%%",
        "=",
        ",",
        ";",
        "0",
        "-1",
        "ffffffffffffffffffffffffffffffffff",
        "é%C3",
        "a=b=c;d",
        "00-",
        "1-2-3-4-5",
    ];
    for a in samples {
        for b in samples {
            let h: HashMap<String, String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).to_owned(), if i % 2 == 0 { a } else { b }.to_owned()))
                .collect();
            let _ = p.extract_incoming(&h);
        }
    }
}

#[test]
fn style_all_lists_every_style_once_in_order() {
    // The exhaustive match fails to compile when a style is added and not listed.
    for (i, s) in Style::ALL.iter().enumerate() {
        let position = match s {
            Style::Datadog => 0,
            Style::TraceContext => 1,
            Style::B3Multi => 2,
            Style::B3Single => 3,
            Style::Baggage => 4,
        };
        assert_eq!(position, i, "{s:?}");
    }
}
