//! Property tests (encode → decode round trips for v0.4 and v0.5, with random integer widths
//! and omitted zero fields) and lenient-decoding cases.

use bytes::Bytes;
use proptest::prelude::*;
use rmp::encode as enc;
use trace_agent::decode::{ApiVersion, Encoding, ReadErrorKind, decode_payload};
use trace_agent::span::{Span, Str};

fn arb_span() -> impl Strategy<Value = Span<'static>> {
    let s = || "\\PC{0,12}";
    (
        (s(), s(), s(), s()),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            0i32..2,
        ),
        proptest::collection::vec((s(), s()), 0..6),
        proptest::collection::vec((s(), -1e12f64..1e12), 0..4),
    )
        .prop_map(
            |((service, name, resource, ty), (tid, sid, pid, start, duration, error), meta, metrics)| Span {
                service: Str::from(service),
                name: Str::from(name),
                resource: Str::from(resource),
                r#type: Str::from(ty),
                trace_id: tid,
                span_id: sid,
                parent_id: pid,
                start,
                duration,
                error,
                meta: dedup(meta.into_iter().map(|(k, v)| (Str::from(k), Str::from(v))).collect()),
                metrics: dedup(metrics.into_iter().map(|(k, v)| (Str::from(k), v)).collect()),
                ..Span::default()
            },
        )
}

fn dedup<V>(mut v: Vec<(Str<'static>, V)>) -> Vec<(Str<'static>, V)> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|(k, _)| seen.insert(k.clone()));
    v
}

/// Writes an unsigned integer in the smallest or the widest encoding.
fn uint(buf: &mut Vec<u8>, v: u64, wide: bool) {
    if wide {
        enc::write_u64(buf, v).unwrap()
    } else {
        enc::write_uint(buf, v).map(|_| ()).unwrap()
    }
}

fn sint(buf: &mut Vec<u8>, v: i64, wide: bool) {
    if wide {
        enc::write_i64(buf, v).unwrap()
    } else {
        enc::write_sint(buf, v).map(|_| ()).unwrap()
    }
}

fn encode_v04(traces: &[Vec<Span<'_>>], wide: bool, omit_zero: bool) -> Vec<u8> {
    let mut b = Vec::new();
    enc::write_array_len(&mut b, traces.len() as u32).unwrap();
    for t in traces {
        enc::write_array_len(&mut b, t.len() as u32).unwrap();
        for s in t {
            let omit_parent = omit_zero && s.parent_id == 0;
            let omit_error = omit_zero && s.error == 0;
            let omit_type = omit_zero && s.r#type.is_empty();
            let omit_metrics = omit_zero && s.metrics.is_empty();
            let n = 12
                - [omit_parent, omit_error, omit_type, omit_metrics]
                    .iter()
                    .filter(|x| **x)
                    .count();
            enc::write_map_len(&mut b, n as u32 + 1).unwrap();
            // An unknown key the decoder must skip.
            enc::write_str(&mut b, "unknown_field").unwrap();
            enc::write_array_len(&mut b, 1).unwrap();
            enc::write_map_len(&mut b, 1).unwrap();
            enc::write_str(&mut b, "x").unwrap();
            enc::write_nil(&mut b).unwrap();
            for (k, v) in [("service", &s.service), ("name", &s.name), ("resource", &s.resource)] {
                enc::write_str(&mut b, k).unwrap();
                enc::write_str(&mut b, v).unwrap();
            }
            enc::write_str(&mut b, "trace_id").unwrap();
            uint(&mut b, s.trace_id, wide);
            enc::write_str(&mut b, "span_id").unwrap();
            uint(&mut b, s.span_id, wide);
            if !omit_parent {
                enc::write_str(&mut b, "parent_id").unwrap();
                uint(&mut b, s.parent_id, wide);
            }
            enc::write_str(&mut b, "start").unwrap();
            sint(&mut b, s.start, wide);
            enc::write_str(&mut b, "duration").unwrap();
            sint(&mut b, s.duration, wide);
            if !omit_error {
                enc::write_str(&mut b, "error").unwrap();
                sint(&mut b, i64::from(s.error), wide);
            }
            if !omit_type {
                enc::write_str(&mut b, "type").unwrap();
                enc::write_str(&mut b, &s.r#type).unwrap();
            }
            enc::write_str(&mut b, "meta").unwrap();
            enc::write_map_len(&mut b, s.meta.len() as u32).unwrap();
            for (k, v) in &s.meta {
                enc::write_str(&mut b, k).unwrap();
                enc::write_str(&mut b, v).unwrap();
            }
            if !omit_metrics {
                enc::write_str(&mut b, "metrics").unwrap();
                enc::write_map_len(&mut b, s.metrics.len() as u32).unwrap();
                for (k, v) in &s.metrics {
                    enc::write_str(&mut b, k).unwrap();
                    enc::write_f64(&mut b, *v).unwrap();
                }
            }
        }
    }
    b
}

fn encode_v05(traces: &[Vec<Span<'_>>], wide: bool) -> Vec<u8> {
    let mut table: Vec<String> = vec![String::new()];
    let mut idx = |s: &str| -> u64 {
        match table.iter().position(|t| t == s) {
            Some(i) => i as u64,
            None => {
                table.push(s.to_owned());
                (table.len() - 1) as u64
            }
        }
    };
    let mut body = Vec::new();
    enc::write_array_len(&mut body, traces.len() as u32).unwrap();
    for t in traces {
        enc::write_array_len(&mut body, t.len() as u32).unwrap();
        for s in t {
            enc::write_array_len(&mut body, 12).unwrap();
            for v in [&s.service, &s.name, &s.resource] {
                uint(&mut body, idx(v), wide);
            }
            uint(&mut body, s.trace_id, wide);
            uint(&mut body, s.span_id, wide);
            uint(&mut body, s.parent_id, wide);
            sint(&mut body, s.start, wide);
            sint(&mut body, s.duration, wide);
            sint(&mut body, i64::from(s.error), wide);
            enc::write_map_len(&mut body, s.meta.len() as u32).unwrap();
            for (k, v) in &s.meta {
                uint(&mut body, idx(k), wide);
                uint(&mut body, idx(v), wide);
            }
            enc::write_map_len(&mut body, s.metrics.len() as u32).unwrap();
            for (k, v) in &s.metrics {
                uint(&mut body, idx(k), wide);
                enc::write_f64(&mut body, *v).unwrap();
            }
            uint(&mut body, idx(&s.r#type), wide);
        }
    }
    let mut b = Vec::new();
    enc::write_array_len(&mut b, 2).unwrap();
    enc::write_array_len(&mut b, table.len() as u32).unwrap();
    for s in &table {
        enc::write_str(&mut b, s).unwrap();
    }
    b.extend_from_slice(&body);
    b
}

fn traces_strategy() -> impl Strategy<Value = Vec<Vec<Span<'static>>>> {
    proptest::collection::vec(proptest::collection::vec(arb_span(), 0..5), 0..4)
}

proptest! {
    #[test]
    fn v04_round_trip(traces in traces_strategy(), wide in any::<bool>(), omit in any::<bool>()) {
        let body = Bytes::from(encode_v04(&traces, wide, omit));
        let p = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body).unwrap();
        let got: Vec<Vec<Span<'_>>> = p.chunks.into_iter().map(|c| c.spans).collect();
        prop_assert_eq!(got, traces);
    }

    #[test]
    fn v05_round_trip(traces in traces_strategy(), wide in any::<bool>()) {
        let body = Bytes::from(encode_v05(&traces, wide));
        let p = decode_payload(ApiVersion::V05, Encoding::Msgpack, &body).unwrap();
        let got: Vec<Vec<Span<'_>>> = p.chunks.into_iter().map(|c| c.spans).collect();
        prop_assert_eq!(got, traces);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for version in [ApiVersion::V03, ApiVersion::V04, ApiVersion::V05, ApiVersion::V07] {
            for encoding in [Encoding::Msgpack, Encoding::Json, Encoding::Unknown] {
                let _ = decode_payload(version, encoding, &body);
            }
        }
        let _ = trace_agent::decode::validate_client_stats(&body);
    }

    #[test]
    fn mutated_real_payloads_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/ddtrace-captures/C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin");
        let mut body = std::fs::read(path).unwrap();
        for (i, b) in flips {
            let i = i.index(body.len());
            body[i] = b;
        }
        if let Ok(mut p) = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body) {
            // Whatever decodes must also go through every processing stage without panicking.
            let facts = trace_agent::process::RequestFacts { lang: "python", client_computed_top_level: false };
            let config = trace_agent::process::ProcessConfig::default();
            trace_agent::process::process_payload(&mut p, &facts, &config, 1_800_000_000_000_000_000);
        }
        let _ = decode_payload(ApiVersion::V05, Encoding::Msgpack, &body);
    }

    #[test]
    fn truncated_payloads_never_panic(traces in traces_strategy(), cut in any::<prop::sample::Index>()) {
        let full = encode_v04(&traces, false, true);
        let body = Bytes::from(full[..cut.index(full.len() + 1)].to_vec());
        let _ = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body);
        let full = encode_v05(&traces, false);
        let body = Bytes::from(full[..cut.index(full.len() + 1)].to_vec());
        let _ = decode_payload(ApiVersion::V05, Encoding::Msgpack, &body);
    }
}

fn one_span_v04(fields: impl FnOnce(&mut Vec<u8>) -> u32) -> Bytes {
    let mut inner = Vec::new();
    let n = fields(&mut inner);
    let mut b = vec![0x91, 0x91];
    enc::write_map_len(&mut b, n).unwrap();
    b.extend_from_slice(&inner);
    Bytes::from(b)
}

#[test]
fn nil_fields_read_as_zero_and_floats_as_ints() {
    let body = one_span_v04(|b| {
        for k in ["service", "meta", "metrics", "parent_id"] {
            enc::write_str(b, k).unwrap();
            enc::write_nil(b).unwrap();
        }
        enc::write_str(b, "trace_id").unwrap();
        enc::write_f64(b, 42.0).unwrap();
        enc::write_str(b, "span_id").unwrap();
        enc::write_sint(b, -1).unwrap();
        6
    });
    let p = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body).unwrap();
    let s = &p.chunks[0].spans[0];
    assert_eq!(&*s.service, "");
    assert_eq!(s.trace_id, 42);
    assert_eq!(s.span_id, u64::MAX, "negative ints are reinterpreted for uint64 fields");
    assert_eq!(s.parent_id, 0);
}

#[test]
fn invalid_utf8_is_repaired_and_bin_accepted_for_strings() {
    let body = one_span_v04(|b| {
        enc::write_str(b, "service").unwrap();
        enc::write_str_len(b, 3).unwrap();
        b.extend_from_slice(&[b'a', 0xff, b'b']);
        enc::write_str(b, "name").unwrap();
        enc::write_bin(b, b"op").unwrap();
        2
    });
    let p = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body).unwrap();
    assert_eq!(&*p.chunks[0].spans[0].service, "a\u{fffd}b");
    assert_eq!(&*p.chunks[0].spans[0].name, "op");
}

#[test]
fn wrong_type_error_names_trace_span_and_field() {
    let mut b = vec![0x91, 0x94];
    for i in 0..4u8 {
        b.push(0x81);
        enc::write_str(&mut b, "trace_id").unwrap();
        if i == 3 {
            enc::write_str(&mut b, "abc").unwrap()
        } else {
            enc::write_uint(&mut b, 1).map(|_| ()).unwrap()
        }
    }
    let e = decode_payload(ApiVersion::V04, Encoding::Msgpack, &Bytes::from(b)).unwrap_err();
    assert_eq!(e.location, "trace 0 span 3: field 'trace_id'");
    assert_eq!(
        e.kind,
        ReadErrorKind::Type {
            expected: "integer",
            got: "string"
        }
    );
    assert!(
        e.to_string()
            .starts_with("trace 0 span 3: field 'trace_id': expected integer, got string"),
        "{e}"
    );
}

#[test]
fn absurd_lengths_fail_without_allocating() {
    // array32 claiming 4 billion traces in a 5-byte body
    let e = decode_payload(
        ApiVersion::V04,
        Encoding::Msgpack,
        &Bytes::from_static(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
    )
    .unwrap_err();
    assert!(matches!(e.kind, ReadErrorKind::Length { .. }), "{e}");
    let e = decode_payload(
        ApiVersion::V05,
        Encoding::Msgpack,
        &Bytes::from_static(&[0x92, 0xdd, 0xff, 0xff, 0xff, 0xff]),
    )
    .unwrap_err();
    assert!(matches!(e.kind, ReadErrorKind::Length { .. }), "{e}");
}

#[test]
fn deep_nesting_in_unknown_fields_is_bounded() {
    let body = one_span_v04(|b| {
        enc::write_str(b, "deep").unwrap();
        b.extend(std::iter::repeat_n(0x91, 10_000));
        b.push(0xc0);
        1
    });
    let e = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body).unwrap_err();
    assert!(matches!(e.kind, ReadErrorKind::TooDeep { .. }), "{e}");
}

#[test]
fn v05_string_index_out_of_range_is_reported() {
    let mut b = vec![0x92, 0x91, 0xa0, 0x91, 0x91, 0x9c, 0x05];
    b.extend(std::iter::repeat_n(0x00, 11));
    let e = decode_payload(ApiVersion::V05, Encoding::Msgpack, &Bytes::from(b)).unwrap_err();
    assert_eq!(e.location, "trace 0 span 0: field 'service'");
    assert_eq!(e.kind, ReadErrorKind::StringIndex { index: 5, len: 1 });
}

#[test]
fn json_v04_is_decoded_leniently() {
    let body = Bytes::from_static(br#"[[{"service":"web","name":"req","trace_id":1,"span_id":2,"start":5,"duration":1.0,"meta":{"a":"b","n":null},"metrics":{"m":2},"extra":{"x":[1]}}]]"#);
    let p = decode_payload(ApiVersion::V04, Encoding::Json, &body).unwrap();
    let s = &p.chunks[0].spans[0];
    assert_eq!((&*s.service, s.trace_id, s.duration), ("web", 1, 1));
    assert_eq!(s.meta("n"), Some(""));
    assert_eq!(s.metric("m"), Some(2.0));
}

#[test]
fn v07_payload_decodes_chunks_and_metadata() {
    let mut b = Vec::new();
    enc::write_map_len(&mut b, 3).unwrap();
    enc::write_str(&mut b, "language_name").unwrap();
    enc::write_str(&mut b, "go").unwrap();
    enc::write_str(&mut b, "env").unwrap();
    enc::write_str(&mut b, "prod").unwrap();
    enc::write_str(&mut b, "chunks").unwrap();
    enc::write_array_len(&mut b, 1).unwrap();
    enc::write_map_len(&mut b, 3).unwrap();
    enc::write_str(&mut b, "priority").unwrap();
    enc::write_sint(&mut b, 2).unwrap();
    enc::write_str(&mut b, "origin").unwrap();
    enc::write_str(&mut b, "rum").unwrap();
    enc::write_str(&mut b, "spans").unwrap();
    b.extend_from_slice(
        &encode_v04(
            &[vec![Span {
                trace_id: 1,
                span_id: 2,
                ..Span::default()
            }]],
            false,
            true,
        )[1..],
    );
    let p = decode_payload(ApiVersion::V07, Encoding::Msgpack, &b).unwrap();
    assert_eq!((&*p.language_name, &*p.env), ("go", "prod"));
    assert_eq!((p.chunks[0].priority, &*p.chunks[0].origin), (2, "rum"));
    assert_eq!(p.chunks[0].spans[0].span_id, 2);
}
