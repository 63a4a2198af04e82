//! Per-span cost on the application thread: our tracer next to the OpenTelemetry SDK
//! (`BatchSpanProcessor` + an exporter that discards), in the same run.
//!
//! Cases: a root span with 5 string tags; a 4-span tree (cost per span = time / 4); the
//! 5-tag root on 2 threads at once. Then the integrations, each next to its peer: a
//! `tracing` span (`info_span!` with 5 fields, entered, exited and closed) through our
//! `DatadogLayer` and through `tracing-opentelemetry` + the OpenTelemetry SDK; and the
//! OpenTelemetry API (start with 5 attributes, end) through our bridge and through the SDK.
//! `registry_only_baseline` is the `tracing` registry without any layer: what `tracing`
//! itself costs before either layer records anything. Spans are timed in bursts of 4096 with a flush between
//! bursts (untimed), for both tracers: what is measured is the application thread's cost,
//! not how the exporters compete with it for the machine's 2 cores. Before the timings,
//! the bench prints allocations per span made on the application thread (a counting
//! global allocator, per thread), in steady state.
//!
//! Our tracer exports to a loopback sink that answers 200 to everything, so its worker
//! encodes and sends for real on the other core, as in production.

#![allow(clippy::print_stdout)] // the bench reports allocation counts on stdout

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};

// ---------- allocation counting (per thread, apm::CountingAllocator) ----------

#[global_allocator]
static GLOBAL: apm::CountingAllocator = apm::CountingAllocator;

use apm::allocations as allocs;

mod common;
use common::*;

// ---------- the two tracers ----------

fn ours() -> tracer::Tracer {
    let config = tracer::TracerConfig::default()
        .with_service("bench")
        .with_env("bench")
        .with_agent_url(&apm::sink_agent())
        .expect("url")
        .with_queue_capacity(16 * 1024);
    tracer::Tracer::new(config).expect("tracer")
}

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn otel() -> (SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(Discard)
                .with_batch_config(
                    opentelemetry_sdk::trace::BatchConfigBuilder::default()
                        .with_max_queue_size(16 * 1024)
                        .build(),
                )
                .build(),
        )
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

// ---------- the workloads ----------

// ours_root, otel_root, ours_tree, otel_tree, tracing_root and the two subscribers'
// dispatchers are in benches/common (shared with span_load).

/// Spans per timed burst: well under the queue capacity (16 Ki chunks, worker woken at
/// half), so the export worker sleeps while the application thread is timed.
const BURST: u64 = 4096;

fn allocs_per_span(name: &str, spans_per_iter: u64, mut f: impl FnMut(), mut settle: impl FnMut()) {
    for _ in 0..3 {
        for _ in 0..BURST {
            f(); // warm-up: fills the span pool, thread-locals, lazily created state
        }
        settle();
    }
    let (mut total, mut spans) = (0u64, 0u64);
    for _ in 0..5 {
        let before = allocs();
        for _ in 0..BURST {
            f();
        }
        total += allocs() - before;
        spans += BURST * spans_per_iter;
        settle();
    }
    println!(
        "allocations per span on the app thread, {name}: {:.3}",
        total as f64 / spans as f64
    );
}

/// Times `f` in bursts of [`BURST`] with `settle` (a flush, untimed) between bursts: the
/// cost on the application thread while the exporter is idle.
fn bursts(iters: u64, f: &impl Fn(), settle: &impl Fn()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BURST);
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        total += start.elapsed();
        settle();
        left -= n;
    }
    total
}

/// Runs `f` on 2 long-lived threads at once, in bursts with `settle` between them (run by
/// the calling thread while both wait); returns the wall time of `iters` iterations per
/// thread (the slower thread's time of each burst).
fn two_threads(iters: u64, f: &(impl Fn() + Sync), settle: &impl Fn()) -> Duration {
    let bursts = iters.div_ceil(BURST / 2).max(1);
    let per_burst = iters.div_ceil(bursts);
    let start_line = Barrier::new(3);
    let finish_line = Barrier::new(3);
    let times = std::sync::Mutex::new(vec![Duration::ZERO; 2]);
    std::thread::scope(|s| {
        for id in 0..2 {
            let (start_line, finish_line, times) = (&start_line, &finish_line, &times);
            s.spawn(move || {
                for _ in 0..bursts {
                    start_line.wait();
                    let start = Instant::now();
                    for _ in 0..per_burst {
                        f();
                    }
                    let elapsed = start.elapsed();
                    if let Ok(mut t) = times.lock() {
                        t[id] += elapsed;
                    }
                    finish_line.wait();
                }
            });
        }
        for _ in 0..bursts {
            start_line.wait();
            finish_line.wait();
            settle();
        }
    });
    let total = times
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .max()
        .unwrap_or_default();
    // Scale to exactly `iters` iterations.
    total.mul_f64(iters as f64 / (bursts * per_burst) as f64)
}

fn bench(c: &mut Criterion) {
    let ours = ours();
    let (provider, otel) = otel();
    let ours_settle = || {
        let _ = ours.flush(Duration::from_secs(30));
    };
    let otel_settle = || {
        let _ = provider.force_flush();
    };

    allocs_per_span("ours root+5 tags", 1, || ours_root(&ours), ours_settle);
    allocs_per_span("otel root+5 attrs", 1, || otel_root(&otel), otel_settle);
    allocs_per_span("ours 4-span tree", 4, || ours_tree(&ours), ours_settle);
    allocs_per_span("otel 4-span tree", 4, || otel_tree(&otel), otel_settle);

    let mut g = c.benchmark_group("root_5_tags");
    g.bench_function("ours", |b| {
        b.iter_custom(|n| bursts(n, &|| ours_root(&ours), &ours_settle))
    });
    g.bench_function("otel_sdk_bsp", |b| {
        b.iter_custom(|n| bursts(n, &|| otel_root(&otel), &otel_settle))
    });
    g.finish();

    let mut g = c.benchmark_group("tree_4_spans");
    g.bench_function("ours", |b| {
        b.iter_custom(|n| bursts(n, &|| ours_tree(&ours), &ours_settle))
    });
    g.bench_function("otel_sdk_bsp", |b| {
        b.iter_custom(|n| bursts(n, &|| otel_tree(&otel), &otel_settle))
    });
    g.finish();

    let mut g = c.benchmark_group("root_5_tags_2_threads");
    g.bench_function("ours", |b| {
        b.iter_custom(|n| two_threads(n, &|| ours_root(&ours), &ours_settle))
    });
    g.bench_function("otel_sdk_bsp", |b| {
        b.iter_custom(|n| two_threads(n, &|| otel_root(&otel), &otel_settle))
    });
    g.finish();

    // ---- integrations ----
    let ours_layer = our_layer(ours);
    let otel_layer = tracing_otel_layer(otel.clone());
    {
        let _d = tracing::dispatcher::set_default(&ours_layer);
        allocs_per_span("ours tracing Layer 5 fields", 1, tracing_root, ours_settle);
    }
    {
        let _d = tracing::dispatcher::set_default(&otel_layer);
        allocs_per_span("tracing-opentelemetry + SDK 5 fields", 1, tracing_root, otel_settle);
    }
    let bridge = {
        use opentelemetry::trace::TracerProvider as _;
        tracer::otel::TracerProvider::new(ours).tracer("bench")
    };
    allocs_per_span("ours OTel bridge 5 attrs", 1, || otel_root(&bridge), ours_settle);

    let registry_only = tracing::Dispatch::new(tracing_subscriber::registry());
    let mut g = c.benchmark_group("tracing_root");
    g.bench_function("registry_only_baseline", |b| {
        let _d = tracing::dispatcher::set_default(&registry_only);
        b.iter_custom(|n| bursts(n, &tracing_root, &|| {}))
    });
    g.bench_function("ours_layer", |b| {
        let _d = tracing::dispatcher::set_default(&ours_layer);
        b.iter_custom(|n| bursts(n, &tracing_root, &ours_settle))
    });
    g.bench_function("tracing_otel_sdk_bsp", |b| {
        let _d = tracing::dispatcher::set_default(&otel_layer);
        b.iter_custom(|n| bursts(n, &tracing_root, &otel_settle))
    });
    g.finish();

    let mut g = c.benchmark_group("otel_api_5_attrs");
    g.bench_function("ours_bridge", |b| {
        b.iter_custom(|n| bursts(n, &|| otel_root(&bridge), &ours_settle))
    });
    g.bench_function("otel_sdk_bsp", |b| {
        b.iter_custom(|n| bursts(n, &|| otel_root(&otel), &otel_settle))
    });
    g.finish();

    let _ = ours.shutdown(Duration::from_secs(10));
    let h = ours.health();
    println!(
        "ours: {} spans finished, {} sent, {} dropped (queue full), {} dropped (send failed)",
        h.spans_finished, h.spans_sent, h.spans_dropped_queue_full, h.spans_dropped_send_failed
    );
    let _ = provider.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
