//! Traffic for the one-command demo (`scripts/demo.sh`): hits the Flask demo's four routes a
//! known number of times, waits until the agent's local store shows every request, and prints
//! the per-resource table (hits, errors, p50, p99) the agent computed.
//!
//! Then (unless `DEMO_STEADY_SECS=0`) it plays a second traced service, `demo-frontend`
//! (`examples/flask_demo/frontend.rs`), that calls the app with the trace context propagated
//! and names an untraced cache by `peer.service` — the service map's edges — in three phases:
//!
//! 1. steady traffic for `DEMO_STEADY_SECS` (default 60: six 10-second chart slots, the
//!    baseline the anomaly band needs), ~10 % of it to the failing route;
//! 2. a 12-second incident, as if version 1.1 were deployed: slow frontend requests (+250 ms)
//!    to the failing route — an anomaly on the frontend's p95 and error-rate charts, the demo
//!    monitors go to ALERT, and the resource pages compare 1.1 with 1.0;
//! 3. back on 1.0, steady traffic until the monitor is back to OK (its window is 30 s).
//!
//! With `DEMO_WEBHOOK_PORT`, it listens on that loopback port as the monitors' webhook and
//! prints each notification the agent POSTs.
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

#[path = "flask_demo/frontend.rs"]
mod frontend;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tracer::{Tracer, TracerConfig};

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
    if let Err(e) = wait_and_print(web, service, sent as u64) {
        eprintln!("demo_traffic: {e}");
        return ExitCode::FAILURE;
    }
    let steady = std::env::var("DEMO_STEADY_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(60u64);
    if steady == 0 {
        return ExitCode::SUCCESS;
    }
    if let Some(port) = std::env::var("DEMO_WEBHOOK_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        && let Err(e) = webhook_printer(port)
    {
        eprintln!("demo_traffic: cannot listen for the monitors' webhook on 127.0.0.1:{port}: {e}");
    }
    match frontend_phases(app, web, Duration::from_secs(steady)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints each webhook notification POSTed to `127.0.0.1:port` (a thread; answers 200).
fn webhook_printer(port: u16) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                let Ok(n) = stream.read(&mut chunk) else { break None };
                if n == 0 || buf.len() > 1 << 20 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    if body.len() >= len {
                        break Some(body.to_owned());
                    }
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(v) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) {
                println!(
                    "   webhook received: monitor {:?} {} → {}: {}",
                    v["monitor"].as_str().unwrap_or("?"),
                    v["previous_state"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or("")
                );
            }
        }
    });
    Ok(())
}

/// The first monitor's state, from the agent's JSON API.
fn monitor_state(web: SocketAddr) -> Option<(String, String)> {
    let (status, body) = apm::http_request(web, "GET", "/api/v1/monitors", &[], &[]).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok().filter(|_| status == 200)?;
    let m = v.as_array()?.first()?;
    Some((m["name"].as_str()?.to_owned(), m["state"].as_str()?.to_owned()))
}

/// The frontend's steady traffic, incident and recovery (see the module docs).
fn frontend_phases(app: SocketAddr, web: SocketAddr, steady: Duration) -> Result<(), String> {
    let config = TracerConfig::from_env()
        .map_err(|e| e.to_string())?
        .with_service("demo-frontend");
    // Version 1.0 runs the steady traffic; "1.1" (a bad deploy) the incident; then a rollback
    // to 1.0: the resource pages compare the two versions.
    let good = Tracer::new(config.clone().with_version("1.0")).map_err(|e| e.to_string())?;
    let bad = Tracer::new(config.with_version("1.1")).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let stable = frontend::Frontend::new(good, app);
    let deploy = frontend::Frontend::new(bad, app);
    let routes = [
        "/",
        "/api/apm",
        "/api/trace",
        "/",
        "/api/apm",
        "/api/trace",
        "/",
        "/api/apm",
        "/api/trace",
        "/api/error",
    ];
    // Five requests a second for `secs`; `incident` sends them to the failing route, slowly.
    let run = |secs: Duration, incident: bool, until: &dyn Fn() -> bool| -> Result<u64, String> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < secs && !until() {
            let tick = Instant::now();
            rt.block_on(async {
                let mut calls = Vec::new();
                for i in 0..5u64 {
                    let (path, think) = if incident {
                        ("/api/error", Duration::from_millis(250))
                    } else {
                        (
                            routes[((n + i) % routes.len() as u64) as usize],
                            Duration::from_millis(1 + (n + i) % 3),
                        )
                    };
                    let f = if incident { deploy.clone() } else { stable.clone() };
                    calls.push(tokio::spawn(async move { f.request(path, think).await }));
                }
                for c in calls {
                    c.await.map_err(|e| e.to_string())??;
                }
                Ok::<_, String>(())
            })?;
            n += 5;
            std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
        }
        Ok(n)
    };
    let never = || false;
    println!();
    println!(
        "== demo-frontend → {app}: steady traffic for {} s (the anomaly band's baseline; the map's edges)",
        steady.as_secs()
    );
    let a = run(steady, false, &never)?;
    println!("   {a} frontend requests (version 1.0); now version 1.1 for 12 s: slow and failing");
    let b = run(Duration::from_secs(12), true, &never)?;
    println!("   {b} failing requests sent; waiting for the monitor to go to ALERT…");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match monitor_state(web) {
            Some((name, state)) if state == "ALERT" => {
                println!("   monitor {name:?} is ALERT");
                break;
            }
            None => {
                println!("   (no monitor configured)");
                break;
            }
            _ => run(Duration::from_secs(1), false, &never).map(|_| ())?,
        }
    }
    println!("   rolled back to 1.0: steady traffic until the monitor recovers (its window is 30 s)…");
    let recovered = || monitor_state(web).is_none_or(|(_, s)| s == "OK");
    let c = run(Duration::from_secs(120), false, &recovered)?;
    match monitor_state(web) {
        Some((name, state)) => println!("   {c} more requests; monitor {name:?} is {state}"),
        None => println!("   {c} more requests"),
    }
    for t in [good, bad] {
        t.shutdown(Duration::from_secs(10))
            .map_err(|e| format!("flushing the frontend's traces: {e}"))?;
    }
    Ok(())
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
