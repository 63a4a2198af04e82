use super::*;

fn pb_payload(chunks: &[(&str, usize)]) -> pb::TracerPayload {
    pb::TracerPayload {
        chunks: chunks
            .iter()
            .map(|(service, n)| pb::TraceChunk {
                spans: (0..*n as u64)
                    .map(|i| pb::Span {
                        service: (*service).to_owned(),
                        span_id: i + 1,
                        parent_id: i,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn parses_what_the_tracer_renders() {
    let h = b"v1 rid=abc-1 seq=7 g=10,9,1 s=web:6,3,2,1 s=a%20b%3Ac:3,0,0,0,0,0,0,2,1 s=*:1 r=413:1 future=x";
    let r = parse_header(h).unwrap();
    assert_eq!(r.runtime_id, "abc-1");
    assert_eq!((r.seq, r.totals), (7, [10, 9, 1]));
    assert_eq!(r.services.len(), 3);
    assert_eq!(r.services[0].0, "web");
    assert_eq!(
        r.services[0].1,
        TracerCounts {
            finished: 6,
            acked: 3,
            in_flight: 2,
            queue_full: 1,
            ..Default::default()
        }
    );
    assert_eq!(r.services[1].0, "a b:c");
    assert_eq!(
        (r.services[1].1.agent_unreachable, r.services[1].1.agent_refused),
        (2, 1)
    );
    assert_eq!(r.services[2].0, TRACER_OVERFLOW);
    assert_eq!(r.refused_by_status, vec![(413, 1)]);
}

#[test]
fn bad_headers_are_errors_never_panics() {
    for bad in [
        &b"v2 rid=a"[..],
        b"v1 seq=1",
        b"v1 rid=a seq=x",
        b"v1 rid=a s=web",
        b"v1 rid=a s=web:1,x",
        b"v1 rid=a s=w%G1:1",
        b"v1 rid=a s=w%2:1",
        b"v1 rid=a r=413",
        b"v1 rid=a nokey",
        b"\xff\xfe",
        b"",
    ] {
        assert!(parse_header(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let long = format!("v1 rid=a {}", "s=x:1 ".repeat(MAX_REPORT_SERVICES + 1));
    assert_eq!(parse_header(long.as_bytes()), Err(HeaderError::TooMany));
    let huge = vec![b'a'; MAX_HEADER_LEN + 1];
    assert_eq!(parse_header(&huge), Err(HeaderError::TooLong));
    // Random bytes: errors or reports, never a panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let len = (x % 64) as usize;
        let mut v = b"v1 rid=r ".to_vec();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(b"s=:,%0123456789abz* r\xff"[(x % 22) as usize]);
        }
        let _ = parse_header(&v);
    }
}

#[test]
fn every_hop_joins_per_service_and_balances() {
    let l = Arc::new(Ledger::default());
    // The tracer: 10 finished for "web", 2 dropped on a full queue, 8 in this payload.
    let r = parse_header(b"v1 rid=r1 seq=1 g=10,10,0 s=web:10,0,8,2").unwrap();
    l.received(
        "rust",
        &[("web".to_owned(), 3, 8)],
        &[("web".to_owned(), 6)],
        &["ignore_resources"],
        true,
    );
    l.report(r, "rust", 200);
    l.sampled(&[("web".to_owned(), 6)], &[("web".to_owned(), 4)]);
    let t1 = l.ticket("datadog", &pb_payload(&[("web", 3)]));
    let t2 = l.ticket("datadog", &pb_payload(&[("web", 1)]));
    t1.delivered();
    drop(t1);
    let snap = l.snapshot();
    let web = &snap.services[0];
    assert!(!web.balanced, "one span still in a writer");
    assert_eq!(web.writers[0].pending, 1);
    t2.spooled();
    drop(t2);
    let snap = l.snapshot();
    let web = &snap.services[0];
    assert_eq!(web.service, "web");
    let t = web.tracer.as_ref().unwrap();
    assert_eq!((t.created, t.sent, t.pending), (10, 8, 0));
    assert_eq!(t.dropped.get("queue_full"), Some(&2));
    assert_eq!(
        (web.received, web.dropped_processing.get("ignore_resources")),
        (8, Some(&2))
    );
    assert_eq!((web.sampled_out, web.kept), (2, 4));
    assert_eq!(
        (web.writers[0].delivered, web.writers[0].spooled, web.writers[0].pending),
        (3, 1, 0)
    );
    assert!(web.balanced, "{web:?}");
}

#[test]
fn refusals_restarts_and_unreported_tracers() {
    let l = Ledger::default();
    // An earlier agent instance got 5; this one refuses the next payload with 413.
    l.report(
        parse_header(b"v1 rid=r1 seq=4 g=9,9,0 s=web:9,5,4").unwrap(),
        "rust",
        413,
    );
    let web = l.snapshot().services.remove(0);
    let t = web.tracer.unwrap();
    assert_eq!((t.earlier_agent, t.sent, t.refused_by_agent, t.pending), (5, 4, 4, 0));
    assert_eq!(web.unexplained, 0);
    // The tracer's next report counts the refusal itself (and an old report changes nothing).
    l.report(
        parse_header(b"v1 rid=r1 seq=5 g=9,9,0 s=web:9,5,0,0,0,0,0,0,4 r=413:4").unwrap(),
        "rust",
        200,
    );
    l.report(parse_header(b"v1 rid=r1 seq=3 g=1,1,0 s=web:1").unwrap(), "rust", 200);
    let snap = l.snapshot();
    let t = snap.services[0].tracer.clone().unwrap();
    assert_eq!((t.earlier_agent, t.sent, t.refused_by_agent, t.pending), (5, 4, 4, 0));
    assert_eq!(snap.runtimes[0].refused_by_status.get("413"), Some(&4));
    // ddtrace: no header.
    l.received(
        "python",
        &[("flask".to_owned(), 1, 3)],
        &[("flask".to_owned(), 3)],
        &[],
        false,
    );
    let flask = l
        .snapshot()
        .services
        .into_iter()
        .find(|s| s.service == "flask")
        .unwrap();
    assert!(flask.tracer.is_none());
    assert_eq!((flask.received, flask.received_from_reporting_tracers), (3, 0));
}

#[test]
fn names_are_normalized_and_cardinality_is_bounded() {
    let l = Ledger::default();
    l.report(
        parse_header(b"v1 rid=r1 seq=1 s=My%20Service:2,0,2").unwrap(),
        "rust",
        200,
    );
    l.received(
        "rust",
        &[("My Service".to_owned(), 1, 2)],
        &[("my_service".to_owned(), 2)],
        &[],
        true,
    );
    let snap = l.snapshot();
    assert_eq!(snap.services.len(), 1, "{:?}", snap.services);
    assert_eq!(snap.services[0].service, "my_service");
    assert_eq!(snap.services[0].unexplained, 0);
    for i in 0..MAX_SERVICES + 50 {
        l.received("rust", &[(format!("s{i}"), 1, 1)], &[], &[], false);
    }
    assert_eq!(l.snapshot().services.len(), MAX_SERVICES + 1);
    for i in 0..MAX_RUNTIMES + 5 {
        l.report(
            parse_header(format!("v1 rid=x{i} seq=1 s=a:1").as_bytes()).unwrap(),
            "rust",
            200,
        );
    }
    let snap = l.snapshot();
    assert_eq!((snap.runtimes.len(), snap.runtimes_evicted), (MAX_RUNTIMES, 6));
}

#[test]
fn huge_counts_from_a_header_never_overflow() {
    let l = Ledger::default();
    let max = u64::MAX;
    for rid in ["a", "b"] {
        let h = format!(
            "v1 rid={rid} seq=1 g={max},{max},{max} s=web:{max},{max},{max},{max},{max},{max},{max},{max},{max}"
        );
        l.report(parse_header(h.as_bytes()).unwrap(), "rust", 200);
    }
    let snap = l.snapshot();
    let t = snap.services[0].tracer.as_ref().unwrap();
    assert_eq!(t.sent, max);
    assert!(!render(&snap).is_empty());
}
