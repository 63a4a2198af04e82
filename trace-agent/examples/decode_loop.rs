//! Decodes and processes a Flask-like v0.4 payload (from the ddtrace captures) in a loop and
//! prints spans per second; a fixed amount of work, handy under `perf stat`.
//!
//! `cargo run --release -p trace-agent --example decode_loop -- [iterations]`

use std::path::Path;
use std::time::Instant;

use trace_agent::decode::{ApiVersion, Encoding, decode_payload};
use trace_agent::process::{ProcessConfig, RequestFacts, process_payload};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args().nth(1).map_or(Ok(2000), |a| a.parse())?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/peer/captures/C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin");
    let capture = std::fs::read(path)?;
    let traces = usize::from(capture.first().copied().unwrap_or(0x90) & 0x0f);
    let copies = 50;
    let mut body = vec![0xdd];
    body.extend_from_slice(&u32::try_from(traces * copies)?.to_be_bytes());
    for _ in 0..copies {
        body.extend_from_slice(capture.get(1..).unwrap_or_default());
    }
    let config = ProcessConfig::default();
    let facts = RequestFacts {
        lang: "python",
        client_computed_top_level: true,
    };
    let mut spans = 0;
    let start = Instant::now();
    for _ in 0..iterations {
        let mut p = decode_payload(ApiVersion::V04, Encoding::Msgpack, &body)?;
        process_payload(&mut p, &facts, &config, 1_800_000_000_000_000_000);
        spans += p.span_count();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{spans} spans in {secs:.3} s: {:.2} M spans/s",
        spans as f64 / secs / 1e6
    );
    Ok(())
}
