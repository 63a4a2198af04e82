//! Decodes and processes a Flask-like payload (built from the ddtrace captures) in a loop and
//! prints spans per second; a fixed amount of work, handy under `perf`.
//!
//! `cargo run --release -p trace-agent --example decode_loop -- [iterations] [v04|v05]`

use std::io::Cursor;
use std::time::Instant;

use trace_agent::decode::{ApiVersion, Encoding, decode_payload};
use trace_agent::process::{ProcessConfig, RequestFacts, process_payload};

#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

const COPIES: usize = 50;

fn capture(rel: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(trace_agent::decode::captures::dir().join(rel))
}

fn array32(n: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut v = vec![0xdd];
    v.extend_from_slice(&u32::try_from(n)?.to_be_bytes());
    Ok(v)
}

/// The captured v0.4 traces repeated [`COPIES`] times.
fn v04() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let capture = capture("C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin")?;
    let traces = usize::from(capture.first().copied().unwrap_or(0x90) & 0x0f);
    let mut body = array32(traces * COPIES)?;
    for _ in 0..COPIES {
        body.extend_from_slice(capture.get(1..).unwrap_or_default());
    }
    Ok(body)
}

/// The captured v0.5 string table once and its traces repeated [`COPIES`] times.
fn v05() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let capture = capture("A_recorder_default/agent/0007_POST_v0.5_traces.body.bin")?;
    let mut cur = Cursor::new(capture.get(1..).unwrap_or_default());
    let _table: Vec<String> = rmp_serde::from_read(&mut cur)?;
    let table_end = 1 + usize::try_from(cur.position())?;
    let traces = usize::from(capture.get(table_end).copied().unwrap_or(0x90) & 0x0f);
    let mut body = capture.get(..table_end).unwrap_or_default().to_vec();
    body.extend(array32(traces * COPIES)?);
    for _ in 0..COPIES {
        body.extend_from_slice(capture.get(table_end + 1..).unwrap_or_default());
    }
    Ok(body)
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let (version, body) = match args.next().as_deref() {
        Some("v05") => (ApiVersion::V05, v05()?),
        _ => (ApiVersion::V04, v04()?),
    };
    let config = ProcessConfig::default();
    let facts = RequestFacts {
        lang: "python",
        client_computed_top_level: true,
    };
    let mut spans = 0;
    let start = Instant::now();
    for _ in 0..iterations {
        let mut p = decode_payload(version, Encoding::Msgpack, &body)?;
        process_payload(&mut p, &facts, &config, 1_800_000_000_000_000_000);
        spans += p.span_count();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {spans} spans in {secs:.3} s: {:.2} M spans/s",
        version.as_str(),
        spans as f64 / secs / 1e6
    );
    Ok(())
}
