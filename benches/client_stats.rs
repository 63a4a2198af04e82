//! The export worker's cost per span with client-side stats
//! (`DD_TRACE_STATS_COMPUTATION_ENABLED`), next to the same tracer without them, in the same
//! run. Stats are computed on the export thread, never on the application thread, so what
//! this measures is the worker: a burst of 4-span traces is created (untimed), then the
//! flush that samples, aggregates, encodes and sends it to a loopback sink is timed (one
//! iteration = 1024 traces = 4096 spans). Throughput is in spans.
//!
//! - `stats_off`: today's path (sample, encode, send).
//! - `stats_on_kept`: stats on, every trace kept (sample rate 1): the added aggregation cost.
//! - `stats_on_p0_dropped`: stats on, every trace rejected (sample rate 0) and dropped in the
//!   tracer: aggregation instead of encoding and sending.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// What an agent that takes client stats says in `/info`.
const INFO: &str = r#"{"version":"7.60.0","endpoints":["/v0.4/traces","/v0.5/traces","/v0.6/stats"],"client_drop_p0s":true,"span_kinds_stats_computed":["server","client","producer","consumer"]}"#;

fn tracer(stats: bool, rate: f64) -> tracer::Tracer {
    let config = apm::sink_tracer_config(INFO, stats, rate)
        .with_service("bench")
        .with_env("bench");
    tracer::Tracer::new(config).expect("tracer")
}

fn tree_4(t: &tracer::Tracer, i: u64) {
    let resource = ["GET /cart", "POST /pay", "GET /items/{id}", "GET /"][(i % 4) as usize];
    let root = apm::four_span_trace(t, resource);
    drop(black_box(root));
}

/// Traces per timed flush: enough that the flush's HTTP round trip is a small part of it.
const BURST: u64 = 1024;

/// `iters` bursts: each creates [`BURST`] traces (untimed), then the flush that exports
/// them is timed.
fn export_time(t: &tracer::Tracer, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for i in 0..BURST {
            tree_4(t, i);
        }
        let start = Instant::now();
        let _ = t.flush(Duration::from_secs(30));
        total += start.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("stats_off", tracer(false, 1.0)),
        ("stats_on_kept", tracer(true, 1.0)),
        ("stats_on_p0_dropped", tracer(true, 0.0)),
    ];
    for (_, t) in &cases {
        // /info first, so the stats decision is taken before the timings.
        let _ = export_time(t, 2);
    }
    let mut g = c.benchmark_group("export_per_span");
    g.throughput(Throughput::Elements(4 * BURST));
    for (name, t) in &cases {
        g.bench_function(*name, |b| b.iter_custom(|n| export_time(t, n)));
    }
    g.finish();
    for (name, t) in &cases {
        let h = t.health();
        assert!(
            h.p0_traces_dropped == 0 || *name == "stats_on_p0_dropped",
            "{name}: {h:?}"
        );
        let _ = t.shutdown(Duration::from_secs(10));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
