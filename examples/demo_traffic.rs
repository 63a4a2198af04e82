//! Traffic for the one-command demo (`scripts/demo.sh`): hits the Flask demo's four routes a
//! known number of times, waits until the agent's local store shows every request, and prints
//! the per-resource table (hits, errors, p50, p99) the agent computed.
//!
//! ```text
//! demo_traffic <app address> <agent web view address> [service]
//! demo_traffic 127.0.0.1:5050 127.0.0.1:8128 flask-demo
//! ```
//!
//! The numbers come from the agent's JSON API (`/api/v1/services/{service}`), i.e. from what the
//! agent stored, not from this program's own counting; the program only checks that they add up
//! to what it sent.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports on stdout

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Route, requests, expected status.
const PLAN: [(&str, usize, u16); 4] = [
    ("/", 40, 200),
    ("/api/apm", 30, 200),
    ("/api/trace", 20, 200),
    ("/api/error", 10, 500),
];
const WORKERS: usize = 4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(app), Some(web)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: demo_traffic <app host:port> <web view host:port> [service]");
        return ExitCode::from(2);
    };
    let service = args.get(3).map_or("flask-demo", String::as_str);
    let (app, web): (SocketAddr, SocketAddr) = match (app.parse(), web.parse()) {
        (Ok(a), Ok(w)) => (a, w),
        _ => {
            eprintln!("demo_traffic: addresses must be host:port, e.g. 127.0.0.1:5050");
            return ExitCode::from(2);
        }
    };
    let sent = match send(app) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("demo_traffic: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("sent {sent} requests to http://{app} (40 GET /, 30 GET /api/apm, 20 GET /api/trace, 10 GET /api/error)");
    match wait_and_print(web, service, sent as u64) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends [`PLAN`] interleaved over [`WORKERS`] threads; checks every status.
fn send(app: SocketAddr) -> Result<usize, String> {
    let mut work: Vec<(&str, u16)> = Vec::new();
    let longest = PLAN.iter().map(|p| p.1).max().unwrap_or(0);
    for i in 0..longest {
        for (path, n, status) in PLAN {
            if i < n {
                work.push((path, status));
            }
        }
    }
    let total = work.len();
    let chunks: Vec<Vec<(&'static str, u16)>> = (0..WORKERS)
        .map(|w| work.iter().skip(w).step_by(WORKERS).copied().collect())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|mine| {
                s.spawn(move || -> Result<(), String> {
                    for (path, want) in mine {
                        let (got, _) = apm::http_request(app, "GET", path, &[], &[])
                            .map_err(|e| format!("GET http://{app}{path}: {e}"))?;
                        if got != want {
                            return Err(format!("GET {path}: status {got}, expected {want}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "a worker panicked".to_owned())?)
    })?;
    Ok(total)
}

/// Polls the web view's JSON API until the service shows every request, then prints the table.
fn wait_and_print(web: SocketAddr, service: &str, sent: u64) -> Result<(), String> {
    let path = format!("/api/v1/services/{service}?window=5m");
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (status, body) =
            apm::http_request(web, "GET", &path, &[], &[]).map_err(|e| format!("GET http://{web}{path}: {e}"))?;
        if status == 200 {
            let doc: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("the web view's JSON API answered: {e}"))?;
            let hits: u64 = doc["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["hits"].as_u64())
                .sum();
            if hits >= sent {
                break doc;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent did not show all {sent} requests of {service} within 60 s (last status {status})"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |ns| format!("{:.2}", ns / 1e6))
    };
    println!();
    println!("service {service}, last 5 minutes, as computed by the agent:");
    println!(
        "{:<22} {:>6} {:>7} {:>10} {:>10}",
        "RESOURCE", "HITS", "ERRORS", "P50 (ms)", "P99 (ms)"
    );
    for r in doc["resources"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:>6} {:>7} {:>10} {:>10}",
            r["resource"].as_str().unwrap_or("?"),
            r["hits"].as_u64().unwrap_or(0),
            r["errors"].as_u64().unwrap_or(0),
            ms(&r["latency"]["p50"]),
            ms(&r["latency"]["p99"]),
        );
    }
    Ok(())
}
