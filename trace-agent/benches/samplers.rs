//! Cost of `Samplers::sample` per chunk, on Flask-like chunks (a web root + 4 children), for
//! each path of spec 5.1: tracer keep (P1), tracer drop (P0), P0 with an error (errors
//! sampler: chunk signature), no priority (no-priority sampler), and P0 with the rare sampler
//! on. The clock advances 1 ms per chunk, so buckets rotate as in production. The chunk clone
//! each iteration needs is setup, not measured.
//!
//! `cargo bench -p trace-agent --bench samplers -- --warm-up-time 1 --measurement-time 3`

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use trace_agent::config::AgentConfig;
use trace_agent::sample::{ChunkContext, Samplers};
use trace_agent::span::{PRIORITY_NONE, Span, Str, TraceChunk};

#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

fn flask_chunk(trace_id: u64, priority: i32, error: bool) -> TraceChunk<'static> {
    let mut spans = Vec::new();
    let mut root = Span {
        service: Str::from("flask-demo"),
        name: Str::from("flask.request"),
        resource: Str::from("GET /api/trace"),
        r#type: Str::from("web"),
        trace_id,
        span_id: 1,
        error: i32::from(error),
        meta: vec![
            (
                Str::from("http.status_code"),
                Str::from(if error { "500" } else { "200" }),
            ),
            (Str::from("http.method"), Str::from("GET")),
            (Str::from("env"), Str::from("prod")),
        ],
        metrics: vec![(Str::from("_top_level"), 1.0), (Str::from("_dd.agent_psr"), 1.0)],
        ..Span::default()
    };
    if error {
        root.meta
            .push((Str::from("error.type"), Str::from("ZeroDivisionError")));
    }
    spans.push(root);
    for (i, (name, resource)) in [
        ("flask.dispatch_request", "flask.dispatch_request"),
        ("requests.request", "GET /downstream"),
        ("postgres.query", "SELECT * FROM users WHERE id = ?"),
        ("flask.process_response", "flask.process_response"),
    ]
    .into_iter()
    .enumerate()
    {
        spans.push(Span {
            service: Str::from("flask-demo"),
            name: Str::from(name),
            resource: Str::from(resource),
            trace_id,
            span_id: 2 + i as u64,
            parent_id: 1,
            ..Span::default()
        });
    }
    let mut c = TraceChunk::from_spans(spans);
    c.priority = priority;
    c
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("samplers");
    let cases: [(&str, i32, bool, bool); 5] = [
        ("p1_keep", 1, false, false),
        ("p0_drop", 0, false, false),
        ("p0_error", 0, true, false),
        ("no_priority", PRIORITY_NONE, false, false),
        ("p0_rare_on", 0, false, true),
    ];
    for (name, priority, error, rare) in cases {
        let mut config = AgentConfig {
            default_env: "prod".to_owned(),
            ..AgentConfig::default()
        };
        config.sampler.rare.enabled = rare;
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&config));
        let ctx = ChunkContext::new("prod", 0, 1);
        let tick = Cell::new(0u64);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let n = tick.get() + 1;
                    tick.set(n);
                    flask_chunk(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), priority, error)
                },
                |chunk| {
                    let now: SystemTime =
                        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(tick.get());
                    let outcome = samplers.sample(chunk, &ctx, now);
                    if let Some(rates) = samplers.take_rates_update() {
                        black_box(rates);
                    }
                    black_box(outcome)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
