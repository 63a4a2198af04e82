//! The two loopback programs of `scripts/load.sh` (whole-process throughput of the agent):
//!
//! ```text
//! agent_load intake <port file> <counts file>
//! agent_load load <agent addr> <v0.4|v0.5> <seconds> <connections> <spans/s, 0 = saturate> <summary file>
//! ```
//!
//! `intake` is a fake Datadog intake answering **202** at once: it decompresses each zstd
//! `AgentPayload` and counts its trace chunks and spans by walking the protobuf (no decoding
//! into structs, so the intake costs little CPU next to the agent), and rewrites `<counts file>`
//! (JSON) at most every 100 ms and on every request once idle. It runs until killed.
//!
//! `load` sends, for `<seconds>`, ddtrace-shaped payloads of 1000 traces built from the real
//! ddtrace captures (testdata/ddtrace-captures: the Flask demo's traces, repeated, with fresh
//! trace ids and start times, and the headers ddtrace sends, `Datadog-Send-Real-Http-Status`
//! included) over `<connections>` keep-alive HTTP/1.1 connections on loopback, as fast as the
//! agent answers or paced to `<spans/s>`; then writes to `<summary file>` what the agent
//! answered: spans and traces accepted (200), refused (429), other codes.

#![allow(clippy::print_stderr)] // a command-line program reports its usage on stderr

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/fake_intake.rs"]
mod fake_intake;

/// Traces per payload (a busy service's flush).
const TRACES: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("intake") if args.len() == 4 => {
            fake_intake::serve(&args[2], &args[3], 202, fake_intake::Write::Every100ms);
        }
        Some("load") if args.len() == 8 => {
            let addr: SocketAddr = args[2].parse().expect("agent address host:port");
            assert!(addr.ip().is_loopback(), "loopback only");
            let version = args[3].as_str();
            assert!(version == "v0.4" || version == "v0.5", "v0.4 or v0.5");
            let secs: f64 = args[4].parse().expect("seconds");
            let connections: usize = args[5].parse().expect("connections");
            let rate: f64 = args[6].parse().expect("spans/s");
            load(
                addr,
                version,
                Duration::from_secs_f64(secs),
                connections.clamp(1, 64),
                rate,
                &args[7],
            );
        }
        _ => {
            eprintln!(
                "usage: agent_load intake <port file> <counts file> | \
                 load <addr> <v0.4|v0.5> <seconds> <connections> <spans/s> <summary file>"
            );
            std::process::exit(2);
        }
    }
}

// ---- the payloads ----

fn capture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/ddtrace-captures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Replaces a span's trace id (and start) in a v0.4 span map / v0.5 span array.
fn restamp(span: &mut rmpv::Value, trace_id: u64, start: u64) {
    use rmpv::Value as V;
    match span {
        V::Map(fields) => {
            for (k, v) in fields.iter_mut() {
                match k.as_str() {
                    Some("trace_id") => *v = V::from(trace_id),
                    Some("start") => *v = V::from(start),
                    _ => {}
                }
            }
        }
        V::Array(fields) if fields.len() >= 12 => {
            fields[3] = V::from(trace_id);
            fields[6] = V::from(start);
        }
        _ => {}
    }
}

/// `TRACES` traces cycled from `traces`, with trace ids from `first_id` and fresh start times.
fn repeat(traces: &[rmpv::Value], first_id: u64) -> Vec<rmpv::Value> {
    let start = now_ns();
    (0..TRACES)
        .map(|i| {
            let mut t = traces[i % traces.len()].clone();
            if let rmpv::Value::Array(spans) = &mut t {
                for s in spans {
                    restamp(s, first_id + i as u64, start);
                }
            }
            t
        })
        .collect()
}

/// One 1000-trace payload: (path, body, spans).
fn payload(version: &str, first_id: u64) -> (String, Vec<u8>, u64) {
    use rmpv::Value as V;
    let (rel, path) = match version {
        "v0.5" => (
            "A_recorder_default/agent/0007_POST_v0.5_traces.body.bin",
            "/v0.5/traces",
        ),
        _ => ("C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin", "/v0.4/traces"),
    };
    let body = capture(rel);
    let value = rmpv::decode::read_value(&mut &body[..]).expect("capture is msgpack");
    let out = match (version, value) {
        ("v0.5", V::Array(mut parts)) if parts.len() == 2 => {
            let V::Array(traces) = parts.remove(1) else {
                panic!("v0.5 capture: [strings, traces]")
            };
            V::Array(vec![parts.remove(0), V::Array(repeat(&traces, first_id))])
        }
        (_, V::Array(traces)) => V::Array(repeat(&traces, first_id)),
        _ => panic!("unexpected capture shape"),
    };
    let spans = match &out {
        V::Array(parts) => {
            let traces = if version == "v0.5" { &parts[1] } else { &out };
            traces
                .as_array()
                .map_or(0, |t| t.iter().map(|t| t.as_array().map_or(0, Vec::len) as u64).sum())
        }
        _ => 0,
    };
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &out).expect("encode");
    (path.to_owned(), bytes, spans)
}

// ---- the load ----

/// How many distinct payloads the senders cycle through.
const PAYLOADS: u64 = 4;
/// The first trace id: every id is at least 2^32, so msgpack writes each one as a uint64
/// (`0xcf` and 8 bytes) and a sender can rewrite ids in place without re-encoding.
const ID_BASE: u64 = 1 << 40;

/// A sender's copy of one payload and where its trace ids are, so every request carries ids
/// no earlier request carried (the local store keys spans by trace and span id: a repeated id
/// would overwrite rows instead of adding them, which is not what traffic does).
struct Fresh {
    body: Vec<u8>,
    ids: Vec<usize>,
}

impl Fresh {
    fn new(body: &[u8]) -> Self {
        let ids_end = ID_BASE + PAYLOADS * TRACES as u64;
        let mut ids = Vec::new();
        let mut i = 0;
        while i + 9 <= body.len() {
            let id = (body[i] == 0xcf).then(|| u64::from_be_bytes(body[i + 1..i + 9].try_into().unwrap_or_default()));
            if id.is_some_and(|id| (ID_BASE..ids_end).contains(&id)) {
                ids.push(i + 1);
                i += 9;
            } else {
                i += 1;
            }
        }
        assert!(!ids.is_empty(), "no trace id found in a load payload");
        Self {
            body: body.to_vec(),
            ids,
        }
    }

    /// Moves every trace id on by `ranges` × (all payloads' ids).
    fn shift(&mut self, ranges: u64) {
        for &at in &self.ids {
            let slot = &mut self.body[at..at + 8];
            let id = u64::from_be_bytes(slot.try_into().unwrap_or_default());
            slot.copy_from_slice(&(id + ranges * PAYLOADS * TRACES as u64).to_be_bytes());
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    accepted_spans: AtomicU64,
    accepted_traces: AtomicU64,
    refused_429_spans: AtomicU64,
    other_codes: Mutex<std::collections::BTreeMap<u16, u64>>,
    reconnects: AtomicU64,
}

/// Sends `body` on `conn` (keep-alive) and reads the reply; the status, or `None` when the
/// connection broke (the caller reconnects).
fn post(conn: &mut BufReader<TcpStream>, path: &str, body: &[u8]) -> Option<u16> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Tracer/11.0.0\r\nContent-Type: application/msgpack\r\n\
         Datadog-Meta-Lang: python\r\nDatadog-Meta-Lang-Version: 3.11.7\r\nDatadog-Meta-Lang-Interpreter: CPython\r\n\
         Datadog-Meta-Tracer-Version: 4.16.0\r\nDatadog-Client-Computed-Top-Level: true\r\n\
         Datadog-Send-Real-Http-Status: 1\r\nX-Datadog-Trace-Count: {TRACES}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = conn.get_mut();
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        close |= lower == "connection: close";
    }
    let mut rest = vec![0; len];
    conn.read_exact(&mut rest).ok()?;
    (!close).then_some(status)
}

fn connect(addr: SocketAddr) -> Option<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_nodelay(true).ok()?;
    Some(BufReader::new(s))
}

fn load(addr: SocketAddr, version: &str, duration: Duration, connections: usize, rate: f64, summary: &str) {
    // A few distinct payloads (different trace ids), built before the clock starts.
    let payloads: Arc<Vec<(String, Vec<u8>, u64)>> = Arc::new(
        (0..PAYLOADS)
            .map(|k| payload(version, ID_BASE + k * TRACES as u64))
            .collect(),
    );
    let spans_per_payload = payloads[0].2;
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + duration;
    // Paced: each connection sends at its share of the rate.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(spans_per_payload as f64 * connections as f64 / rate));
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (payloads, tally) = (Arc::clone(&payloads), Arc::clone(&tally));
            std::thread::spawn(move || {
                // This sender's own copies, ids moved to its range; after each send a payload's
                // ids move on by `connections` ranges, so no trace id is ever sent twice.
                let mut own: Vec<Fresh> = payloads.iter().map(|(_, body, _)| Fresh::new(body)).collect();
                for p in &mut own {
                    p.shift(c as u64);
                }
                let mut conn = None;
                let mut next = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
                let mut k = c;
                while Instant::now() < end {
                    if let Some(i) = interval {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += i;
                        if Instant::now() >= end {
                            break;
                        }
                    }
                    if conn.is_none() {
                        conn = connect(addr);
                    }
                    let Some(c) = conn.as_mut() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let (path, _, spans) = &payloads[k % payloads.len()];
                    let fresh = &mut own[k % payloads.len()];
                    k += 1;
                    let status = post(c, path, &fresh.body);
                    fresh.shift(connections as u64);
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    match status {
                        Some(200) => {
                            tally.accepted_spans.fetch_add(*spans, Ordering::Relaxed);
                            tally.accepted_traces.fetch_add(TRACES as u64, Ordering::Relaxed);
                        }
                        Some(429) => {
                            tally.refused_429_spans.fetch_add(*spans, Ordering::Relaxed);
                        }
                        other => {
                            *tally
                                .other_codes
                                .lock()
                                .expect("codes")
                                .entry(other.unwrap_or(0))
                                .or_default() += 1;
                        }
                    }
                    if status.is_none() {
                        conn = None;
                        tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let seconds = start.elapsed().as_secs_f64();
    let t = &tally;
    let codes: std::collections::BTreeMap<String, u64> = t
        .other_codes
        .lock()
        .expect("codes")
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let out = serde_json::json!({
        "version": version,
        "seconds": seconds,
        "connections": connections,
        "target_spans_per_second": rate,
        "spans_per_payload": spans_per_payload,
        "payload_bytes": payloads[0].1.len(),
        "requests": t.requests.load(Ordering::Relaxed),
        "accepted_spans": t.accepted_spans.load(Ordering::Relaxed),
        "accepted_traces": t.accepted_traces.load(Ordering::Relaxed),
        "refused_429_spans": t.refused_429_spans.load(Ordering::Relaxed),
        "other_codes": codes,
        "reconnects": t.reconnects.load(Ordering::Relaxed),
    });
    std::fs::write(summary, serde_json::to_vec_pretty(&out).unwrap_or_default()).expect("summary file");
}
