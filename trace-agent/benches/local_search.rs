//! Trace search and the service map on a generated **day of a busy service**: by default
//! 864 000 kept traces (10 per second for 24 h, the agent's default
//! `target_traces_per_second`) of 4 spans each — `web` → `api` (a propagated call) →
//! `postgres` (a `peer.service` span) plus a cache span — 2 % failing, a `user.id` tag with
//! 100 000 values, durations spread over two orders of magnitude.
//!
//! The data is written once through the real write path (`LocalStore::push_traces`) into
//! `$CARGO_TARGET_DIR/local-search-bench/v<schema version>-<traces>/` and reused by later runs
//! (delete it to regenerate; a new schema version regenerates it); `LOCAL_SEARCH_TRACES` sets
//! the size. Each benchmark is one search as the JSON API runs it, as of the end of the
//! generated day.
//!
//! `cargo bench -p trace-agent --bench local_search -- --warm-up-time 1 --measurement-time 3 --sample-size 10`
#![allow(clippy::print_stderr)] // reports how the generated day was made

#[path = "../tests/common/rng.rs"]
mod rng;
#[path = "../tests/common/spans.rs"]
mod spans;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use trace_agent::local::query::Window;
use trace_agent::local::search::{SearchQuery, search};
use trace_agent::local::service_map::service_map;
use trace_agent::local::{LocalConfig, LocalStore, unix_nanos};
use trace_agent::upstream::pb;

use rng::Rng;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const RESOURCES: [&str; 8] = [
    "GET /",
    "GET /cart",
    "POST /cart",
    "GET /product/?",
    "POST /checkout",
    "GET /search",
    "GET /user/?",
    "POST /login",
];

#[allow(clippy::too_many_arguments)]
fn span(trace: u64, id: u64, parent: u64, service: &str, name: &str, resource: &str, start: i64, dur: i64) -> pb::Span {
    spans::span(
        (trace, id, parent),
        (service, name, resource),
        start,
        dur,
        ("env", "prod"),
    )
}

/// One trace starting at `start`: (trace id, spans).
fn trace(rng: &mut Rng, id: u64, start: i64) -> Vec<pb::Span> {
    let resource = RESOURCES[rng.below(RESOURCES.len() as u64) as usize];
    // Log-uniform-ish from 2 ms to ~2 s: most are fast, a tail is slow.
    let dur = 2 * MS * (1i64 << rng.below(10)) + rng.below(MS as u64) as i64;
    let failing = rng.below(50) == 0;
    let mut root = span(id, 1, 0, "web", "http.request", resource, start, dur);
    root.meta
        .insert("user.id".to_owned(), format!("u{}", rng.below(100_000)));
    root.meta.insert(
        "http.status_code".to_owned(),
        if failing { "500" } else { "200" }.to_owned(),
    );
    let mut api = span(id, 2, 1, "api", "http.request", resource, start + MS / 2, dur * 3 / 4);
    let mut db = span(
        id,
        3,
        2,
        "api",
        "postgresql.query",
        "SELECT * FROM items WHERE id = ?",
        start + MS,
        dur / 2,
    );
    db.meta.insert("peer.service".to_owned(), "postgres".to_owned());
    db.r#type = "sql".to_owned();
    let cache = span(id, 4, 1, "web", "redis.command", "GET", start + MS / 4, MS / 4);
    if failing {
        root.error = 1;
        api.error = 1;
        api.meta
            .insert("error.message".to_owned(), "upstream timeout".to_owned());
    }
    vec![root, api, db, cache]
}

/// The database of `n` traces over one day, and the end of that day (ns).
fn generated_day(n: u64) -> (LocalStore, i64) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    // Keyed by the schema version: a database of an older schema is regenerated.
    let dir = target
        .join("local-search-bench")
        .join(format!("v{}-{n}", LocalStore::SCHEMA_VERSION));
    let end_file = dir.join("day_end_ns");
    let config = LocalConfig {
        retention: Duration::from_secs(3650 * 86_400),
        max_size_bytes: 64 << 30,
        ..LocalConfig::in_dir(&dir)
    };
    if let Some(end) = std::fs::read_to_string(&end_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return (LocalStore::open(config).expect("open the bench database"), end);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalStore::open(config).expect("create the bench database");
    let end = unix_nanos(SystemTime::now());
    let day = 86_400 * SEC;
    let step = day / n as i64;
    let mut rng = Rng(42);
    let started = std::time::Instant::now();
    let per_payload = 500u64;
    let mut i = 0u64;
    while i < n {
        let chunks = (i..(i + per_payload).min(n))
            .map(|k| pb::TraceChunk {
                priority: 1,
                spans: trace(&mut rng, 1_000_000 + k, end - day + k as i64 * step),
                ..pb::TraceChunk::default()
            })
            .collect();
        store.push_traces(Arc::new(pb::TracerPayload {
            chunks,
            ..pb::TracerPayload::default()
        }));
        i += per_payload;
        if i.is_multiple_of(per_payload * 64) {
            assert!(store.sync(Duration::from_secs(600)), "the writer fell behind");
        }
    }
    assert!(store.sync(Duration::from_secs(600)));
    let status = store.status();
    assert_eq!(status.chunks_written, n, "every generated trace is stored: {status:?}");
    eprintln!(
        "local_search: generated {n} traces / {} spans in {:.0?} ({:.0} MiB)",
        status.spans_written,
        started.elapsed(),
        std::fs::metadata(dir.join("local.sqlite3")).map_or(0, |m| m.len()) as f64 / 1_048_576.0
    );
    std::fs::write(&end_file, end.to_string()).expect("write the day's end");
    (store, end)
}

fn q(pairs: &[(&str, &str)]) -> SearchQuery {
    let params: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    SearchQuery::from_params(&params).expect("a valid search")
}

fn bench(c: &mut Criterion) {
    let n = std::env::var("LOCAL_SEARCH_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(864_000u64);
    let (store, end) = generated_day(n);
    let cases = [
        ("errors, 1d", q(&[("window", "1d"), ("error", "true")])),
        (
            "service+resource+errors, 1d",
            q(&[
                ("window", "1d"),
                ("service", "api"),
                ("resource", "POST /checkout"),
                ("error", "true"),
            ]),
        ),
        ("min_duration 1s, 1d", q(&[("window", "1d"), ("min_duration", "1s")])),
        (
            "rare tag (user.id), 1d",
            q(&[("window", "1d"), ("tag", "user.id:u4242")]),
        ),
        (
            "common tag (status 200), 1d",
            q(&[("window", "1d"), ("tag", "http.status_code:200")]),
        ),
        (
            "trace id, 1d",
            q(&[("window", "1d"), ("trace_id", &(1_000_000 + n / 2).to_string())]),
        ),
        ("service, 1h, page 1", q(&[("window", "1h"), ("service", "web")])),
    ];
    let mut g = c.benchmark_group(format!("local_search/{n}_traces"));
    for (name, query) in &cases {
        let found = store.read(|conn| search(conn, query, end)).expect("search");
        assert!(!found.traces.is_empty(), "{name}: the generated day has matches");
        g.bench_function(*name, |b| {
            b.iter(|| store.read(|conn| search(conn, black_box(query), end)).expect("search"));
        });
    }
    g.bench_function("service map, 1h", |b| {
        b.iter(|| store.read(|conn| service_map(conn, end, Window::OneHour)).expect("map"));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
