//! The two loopback programs of `scripts/soak.sh`:
//!
//! ```text
//! soak_load intake <port file> <counts file>   # a fake Datadog intake that counts what arrives
//! soak_load load <agent addr> <seconds> <summary file>
//! soak_load burst <agent addr> <payloads> <traces per payload>   # v0.4, sequential; prints accepted
//! ```
//!
//! `intake` serves `/api/v0.2/traces` (zstd `AgentPayload`: counts trace chunks and spans) and
//! `/api/v0.2/stats`, and rewrites `<counts file>` (JSON) after every request; it runs until
//! killed. `load` sends, for `<seconds>`, a mix of valid traffic (v0.4/v0.5/v0.7 payloads of
//! 1–50 traces over 2000 services, priority kept) and hostile traffic (bodies over
//! `max_payload_size`, garbage on every trace and stats route, slow bodies that time out),
//! every kind bounded in count and concurrency, loopback only; then writes what the agent
//! answered (traces in payloads answered 200 = accepted, 429, other codes) to `<summary file>`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports on stdout

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/fake_intake.rs"]
mod fake_intake;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("intake") if args.len() == 4 => {
            fake_intake::serve(&args[2], &args[3], 200, fake_intake::Write::EveryRequest);
        }
        Some("load") if args.len() == 5 => {
            let addr: SocketAddr = args[2].parse().expect("agent address host:port");
            assert!(addr.ip().is_loopback(), "loopback only");
            let secs: u64 = args[3].parse().expect("seconds");
            load(addr, Duration::from_secs(secs), &args[4]);
        }
        Some("burst") if args.len() == 5 => {
            let addr: SocketAddr = args[2].parse().expect("agent address host:port");
            assert!(addr.ip().is_loopback(), "loopback only");
            let payloads: u64 = args[3].parse().expect("payloads");
            let per: u64 = args[4].parse().expect("traces per payload");
            burst(addr, payloads, per);
        }
        _ => {
            eprintln!("usage: soak_load intake <port file> <counts file> | load <addr> <seconds> <summary file>");
            std::process::exit(2);
        }
    }
}

// ---- the load ----

#[derive(Default)]
struct Tally {
    payloads: AtomicU64,
    accepted_traces: AtomicU64,
    refused_429_traces: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn code(&self, kind: &str, code: u16) {
        *self
            .codes
            .lock()
            .expect("codes")
            .entry(format!("{kind} {code}"))
            .or_default() += 1;
    }
}

/// xorshift64*: enough randomness for traffic shapes.
struct Rng(u64);

impl Rng {
    fn with_seed(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `[lo, hi)`.
    fn below(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sends one request; the status code (0 when the connection failed or timed out).
fn send(addr: SocketAddr, path: &str, content_type: &str, traces: u64, body: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nX-Datadog-Trace-Count: {traces}\r\n\
         Datadog-Meta-Lang: soak\r\nDatadog-Send-Real-Http-Status: true\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    // A refused body may be cut short by the agent: read the reply either way.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn span_map(trace: u64, span: u64, parent: u64, service: &str, start: u64) -> rmpv::Value {
    use rmpv::Value as V;
    V::Map(vec![
        (V::from("trace_id"), V::from(trace)),
        (V::from("span_id"), V::from(span)),
        (V::from("parent_id"), V::from(parent)),
        (V::from("service"), V::from(service)),
        (V::from("name"), V::from("soak.request")),
        (V::from("resource"), V::from("GET /soak/?")),
        (V::from("start"), V::from(start)),
        (V::from("duration"), V::from(1_000_000u64)),
        (V::from("type"), V::from("web")),
        (
            V::from("metrics"),
            V::Map(vec![(V::from("_sampling_priority_v1"), V::from(2.0))]),
        ),
    ])
}

fn encode(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode");
    out
}

/// A valid payload of `n` two-span traces (ids from `next`) in one of v0.4/v0.5/v0.7.
fn valid(rng: &mut Rng, next: &AtomicU64) -> (&'static str, Vec<u8>, u64) {
    use rmpv::Value as V;
    let n = rng.below(1, 51);
    let start = now_ns();
    let traces: Vec<(u64, String)> = (0..n)
        .map(|_| {
            (
                next.fetch_add(1, Ordering::Relaxed),
                format!("svc-{}", rng.below(0, 2000)),
            )
        })
        .collect();
    match rng.below(0, 3) {
        0 => {
            let body = V::Array(
                traces
                    .iter()
                    .map(|(t, s)| {
                        V::Array(vec![
                            span_map(*t, t * 2, 0, s, start),
                            span_map(*t, t * 2 + 1, t * 2, s, start),
                        ])
                    })
                    .collect(),
            );
            ("/v0.4/traces", encode(&body), n)
        }
        1 => {
            // v0.5: [string table, traces of 12-element span arrays].
            // Index 4: the priority metric's key; services follow.
            let mut table: Vec<String> = vec![
                String::new(),
                "soak.request".into(),
                "GET /soak/?".into(),
                "web".into(),
                "_sampling_priority_v1".into(),
            ];
            let spans = traces
                .iter()
                .map(|(t, s)| {
                    table.push(s.clone());
                    let si = (table.len() - 1) as u64;
                    let one = |id: u64, parent: u64| {
                        V::Array(vec![
                            V::from(si),
                            V::from(1u64),
                            V::from(2u64),
                            V::from(*t),
                            V::from(id),
                            V::from(parent),
                            V::from(start),
                            V::from(1_000_000u64),
                            V::from(0),
                            V::Map(vec![]),
                            V::Map(vec![(V::from(4u64), V::from(2.0))]),
                            V::from(3u64),
                        ])
                    };
                    V::Array(vec![one(t * 2, 0), one(t * 2 + 1, t * 2)])
                })
                .collect::<Vec<_>>();
            let body = V::Array(vec![
                V::Array(table.into_iter().map(V::from).collect()),
                V::Array(spans),
            ]);
            ("/v0.5/traces", encode(&body), n)
        }
        _ => {
            let chunks = traces
                .iter()
                .map(|(t, s)| {
                    V::Map(vec![
                        (V::from("priority"), V::from(2)),
                        (
                            V::from("spans"),
                            V::Array(vec![
                                span_map(*t, t * 2, 0, s, start),
                                span_map(*t, t * 2 + 1, t * 2, s, start),
                            ]),
                        ),
                    ])
                })
                .collect();
            let body = V::Map(vec![
                (V::from("language_name"), V::from("soak")),
                (V::from("chunks"), V::Array(chunks)),
            ]);
            ("/v0.7/traces", encode(&body), n)
        }
    }
}

/// `payloads` v0.4 payloads of `per` one-span traces each, sent one after the other.
fn burst(addr: SocketAddr, payloads: u64, per: u64) {
    let mut accepted = 0;
    let mut codes = BTreeMap::<u16, u64>::new();
    let start = now_ns();
    for p in 0..payloads {
        let body = rmpv::Value::Array(
            (0..per)
                .map(|i| {
                    let t = 1 + p * per + i;
                    rmpv::Value::Array(vec![span_map(t, t, 0, &format!("svc-{}", t % 100), start)])
                })
                .collect(),
        );
        let code = send(addr, "/v0.4/traces", "application/msgpack", per, &encode(&body));
        *codes.entry(code).or_default() += 1;
        if code == 200 {
            accepted += per;
        }
    }
    println!("{{\"accepted_traces\": {accepted}, \"codes\": {codes:?}}}");
}

fn load(addr: SocketAddr, duration: Duration, summary: &str) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1 + (now_ns() % 1_000_000) * 1_000_000_000));
    let started = Instant::now();
    let mut threads = Vec::new();
    // Valid traffic: 3 senders.
    for seed in 0..3u64 {
        let (tally, stop, next_id) = (Arc::clone(&tally), Arc::clone(&stop), Arc::clone(&next_id));
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::with_seed(seed + 1);
            while !stop.load(Ordering::Relaxed) {
                let (path, body, n) = valid(&mut rng, &next_id);
                let code = send(addr, path, "application/msgpack", n, &body);
                tally.payloads.fetch_add(1, Ordering::Relaxed);
                tally.code("valid", code);
                match code {
                    200 => tally.accepted_traces.fetch_add(n, Ordering::Relaxed),
                    429 => tally.refused_429_traces.fetch_add(n, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }));
    }
    // Hostile: garbage and oversized bodies, one sender, at most 20 per second.
    {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::with_seed(99);
            let routes = ["/v0.4/traces", "/v0.5/traces", "/v0.7/traces", "/v0.6/stats"];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let route = routes[rng.below(0, routes.len() as u64) as usize];
                let (kind, body) = if i % 25 == 0 {
                    // Over the default max_payload_size (25 MB): 413 (declared length).
                    ("huge", vec![0x91; 26 << 20])
                } else {
                    let n = rng.below(1, 64 * 1024) as usize;
                    ("garbage", (0..n).map(|_| rng.next() as u8).collect())
                };
                let code = send(addr, route, "application/msgpack", 1, &body);
                tally.code(kind, code);
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // Slow bodies: up to 8 at a time, each declaring 1 MB and sending 1 byte per 200 ms.
    for _ in 0..8 {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                    break;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
                let _ = write!(
                    s,
                    "POST /v0.4/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/msgpack\r\n\
                     Content-Length: 1048576\r\n\r\n"
                );
                let mut code = 0u16;
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    if s.write_all(&[0x90]).is_err() {
                        break;
                    }
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf)
                        && n >= 12
                    {
                        code = String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                tally.code("slow", code);
            }
        }));
    }
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let codes = tally.codes.lock().expect("codes").clone();
    let out = serde_json::json!({
        "seconds": started.elapsed().as_secs_f64(),
        "valid_payloads": tally.payloads.load(Ordering::Relaxed),
        "accepted_traces": tally.accepted_traces.load(Ordering::Relaxed),
        "refused_429_traces": tally.refused_429_traces.load(Ordering::Relaxed),
        "codes": codes,
    });
    std::fs::write(summary, serde_json::to_vec_pretty(&out).unwrap_or_default()).expect("summary");
    println!("{out}");
}
