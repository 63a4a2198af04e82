//! The local store's write path: 1000-trace payloads shaped like the Flask demo's ddtrace
//! traces (a `flask.request` root with its handler, template and database spans, ddtrace's
//! usual tags and metrics) with **fresh random trace ids** each (as real traffic has),
//! pushed through the real path (`LocalStore::push_traces`, the writer thread, SQLite in WAL
//! mode on disk) and waited for (`sync`). One iteration is one payload written; the store
//! already holds `LOCAL_STORE_PRELOAD` payloads (default 200: 800 000 spans) so the indexes
//! are not empty.
//!
//! `cargo bench -p trace-agent --bench local_store -- --warm-up-time 1 --measurement-time 5 --sample-size 10`
#![allow(clippy::print_stderr)] // reports the preload

#[path = "../tests/common/rng.rs"]
mod rng;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trace_agent::local::{LocalConfig, LocalStore, unix_nanos};
use trace_agent::upstream::pb;

use rng::Rng;

const TRACES: usize = 1000;
const MS: i64 = 1_000_000;

fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn numbers(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// One Flask request trace: four spans.
fn trace(rng: &mut Rng, start: i64) -> Vec<pb::Span> {
    let trace_id = rng.next();
    let ids = [rng.next(), rng.next(), rng.next(), rng.next()];
    let user = format!("u{}", rng.next() % 100_000);
    let span = |i: usize, parent: u64, name: &str, resource: &str, kind: &str, offset: i64, dur: i64| pb::Span {
        service: "flask-demo".to_owned(),
        name: name.to_owned(),
        resource: resource.to_owned(),
        trace_id,
        span_id: ids[i],
        parent_id: parent,
        start: start + offset,
        duration: dur,
        r#type: kind.to_owned(),
        ..pb::Span::default()
    };
    let mut root = span(0, 0, "flask.request", "GET /users/<id>", "web", 0, 12 * MS);
    root.meta = strings(&[
        ("_dd.base_service", "flask-demo"),
        ("_dd.p.dm", "-0"),
        ("_dd.p.tid", "6750a1b200000000"),
        ("component", "flask"),
        ("env", "demo"),
        ("flask.endpoint", "user"),
        ("flask.url_rule", "/users/<id>"),
        ("flask.view_args.id", "42"),
        ("http.method", "GET"),
        ("http.route", "/users/<id>"),
        ("http.status_code", "200"),
        ("http.url", "http://127.0.0.1:5000/users/42"),
        ("http.useragent", "python-requests/2.32.3"),
        ("language", "python"),
        ("runtime-id", "5b4bd1b4c4e14a0b9a46d1a2f6a1ec3e"),
        ("span.kind", "server"),
        ("user.id", &user),
        ("version", "1.0"),
    ]);
    root.metrics = numbers(&[
        ("_dd.measured", 1.0),
        ("_dd.top_level", 1.0),
        ("_dd.tracer_kr", 1.0),
        ("_sampling_priority_v1", 1.0),
        ("process_id", 4242.0),
    ]);
    let mut handler = span(
        1,
        ids[0],
        "flask.dispatch_request",
        "flask.dispatch_request",
        "",
        MS,
        10 * MS,
    );
    handler.meta = strings(&[("_dd.base_service", "flask-demo"), ("component", "flask")]);
    let mut query = span(
        2,
        ids[1],
        "sqlite.query",
        "SELECT * FROM users WHERE id = ?",
        "sql",
        2 * MS,
        3 * MS,
    );
    query.meta = strings(&[
        ("component", "sqlite"),
        ("db.system", "sqlite"),
        ("span.kind", "client"),
        ("peer.service", "users-db"),
    ]);
    query.metrics = numbers(&[("_dd.measured", 1.0), ("db.row_count", 1.0)]);
    let mut render = span(
        3,
        ids[1],
        "flask.render_template",
        "user.html",
        "template",
        6 * MS,
        2 * MS,
    );
    render.meta = strings(&[("component", "flask"), ("flask.template_name", "user.html")]);
    vec![root, handler, query, render]
}

fn payload(rng: &mut Rng, start: i64) -> Arc<pb::TracerPayload> {
    let chunks = (0..TRACES)
        .map(|i| pb::TraceChunk {
            priority: 1,
            spans: trace(rng, start + i as i64 * 1000),
            ..pb::TraceChunk::default()
        })
        .collect();
    Arc::new(pb::TracerPayload {
        env: "demo".to_owned(),
        language_name: "python".to_owned(),
        chunks,
        ..pb::TracerPayload::default()
    })
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LocalConfig {
        retention: Duration::from_secs(86_400),
        max_size_bytes: 16 << 30,
        ..LocalConfig::in_dir(dir.path())
    };
    let store = LocalStore::open(config).expect("open the store");
    let mut rng = Rng(7);
    let mut now = unix_nanos(SystemTime::now());
    let preload: usize = std::env::var("LOCAL_STORE_PRELOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let started = std::time::Instant::now();
    for _ in 0..preload {
        store.push_traces(payload(&mut rng, now));
        now += 1_000_000_000;
        assert!(store.sync(Duration::from_secs(600)), "the writer fell behind");
    }
    eprintln!(
        "local_store: preloaded {} spans in {:.1?}",
        store.status().spans_written,
        started.elapsed()
    );
    let spans = (TRACES * 4) as u64;
    let mut g = c.benchmark_group("local_store");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("write 1000 Flask traces (4000 spans)", |b| {
        b.iter_batched(
            || {
                now += 1_000_000_000;
                payload(&mut rng, now)
            },
            |p| {
                store.push_traces(p);
                assert!(store.sync(Duration::from_secs(600)));
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();
    let status = store.status();
    assert_eq!(status.dropped_trace_payloads_write_error, 0, "{status:?}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
