//! The export worker's work per span with client-side stats off / on / P0-dropping, in a
//! form `valgrind --tool=callgrind` can count (instruction counts do not move with the
//! machine's load, unlike `benches/client_stats.rs`'s timings):
//!
//! ```text
//! cargo build --profile bench --example client_stats_cost
//! for mode in off on drop; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$mode target/release/examples/client_stats_cost $mode 20000
//! done
//! ```
//!
//! Each run makes the same number of 4-span traces and flushes them to a loopback sink; the
//! difference between two runs' totals, divided by the spans, is the cost per span of what
//! differs. `off`: stats off; `on`: stats on, every trace kept; `drop`: stats on, every
//! trace rejected and dropped in the tracer.
#![allow(clippy::print_stdout)] // a measuring tool reports on stdout

use std::time::Duration;

const INFO: &str = r#"{"endpoints":["/v0.4/traces","/v0.5/traces","/v0.6/stats"],"client_drop_p0s":true}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "off".to_owned());
    let traces: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let (stats, rate) = match mode.as_str() {
        "on" => (true, 1.0),
        "drop" => (true, 0.0),
        _ => (false, 1.0),
    };
    let config = apm::sink_tracer_config(INFO, stats, rate).with_service("cost");
    let t = tracer::Tracer::new(config).expect("tracer");
    let _ = t.flush(Duration::from_secs(30)); // /info first
    let resources = ["GET /cart", "POST /pay", "GET /items/{id}", "GET /"];
    let mut done = 0;
    while done < traces {
        for i in 0..1024.min(traces - done) {
            let root = apm::four_span_trace(&t, resources[(i % 4) as usize]);
            drop(root);
            done += 1;
        }
        let _ = t.flush(Duration::from_secs(30));
    }
    let _ = t.shutdown(Duration::from_secs(30));
    let h = t.health();
    println!(
        "{mode}: {} spans sent, {} P0 traces dropped, {} stats payloads",
        h.spans_sent, h.p0_traces_dropped, h.stats_payloads_sent
    );
}
