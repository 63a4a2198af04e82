//! Local mode end to end in a real browser: the axum Flask demo traced by our tracer → the
//! agent → the local store → the web view, loaded by headless Chromium (Debian's `chromium`,
//! installed by `scripts/test.sh`). Asserts the four resources with their exact hit and error counts, ordered and
//! plausible percentiles, and a trace page with the request span and its children; saves a
//! screenshot of every page under `target/test-runs/local-web-chromium-*/`.
//!
//! The agent is the real one, started in local mode (`trace_agent::start`); the traffic comes
//! from [`send_demo_traffic`]: [`PLAN`]'s requests to the demo app over real HTTP.
//!
//! Then the local APM product: a second traced service (`examples/flask_demo/frontend.rs`)
//! calls the app — the map shows the two-service trace and the `peer.service` cache; an
//! incident of failing requests sends a monitor to ALERT and its webhook (a loopback receiver
//! here) gets the notification; the search form finds a failing request; more successful
//! traffic brings the monitor back to OK.

#[path = "../examples/flask_demo/app.rs"]
mod app;
#[path = "../examples/flask_demo/frontend.rs"]
mod frontend;
mod http_support;
#[path = "support/local_agent.rs"]
mod local_agent;
#[path = "support/runtime.rs"]
mod runtime;
#[path = "../trace-agent/tests/common/webhook.rs"]
mod webhook;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use local_agent::{local_config, web_addr};
use runtime::runtime;
use trace_agent::local::monitor::MonitorConfig;
use tracer::{Tracer, TracerConfig};
use webhook::webhook_receiver;

/// Service of the demo requests.
const SERVICE: &str = "local-demo";
/// Requests per route and whether they fail.
const PLAN: [(&str, usize, bool); 4] = [
    ("GET /", 10, false),
    ("GET /api/apm", 8, false),
    ("GET /api/trace", 6, false),
    ("GET /api/error", 5, true),
];
/// The second service: calls the demo app with the trace context propagated.
const FRONTEND: &str = "local-frontend";

/// The traffic source: the Flask demo's axum app (`examples/flask_demo/app.rs`, traced by
/// `tracer::http::ServerLayer`) served on a free port, and [`PLAN`]'s requests over real HTTP.
/// Returns the app (still serving) and its tracer.
fn send_demo_traffic(rt: &tokio::runtime::Runtime, agent_url: &str) -> (http_support::Server, Tracer) {
    let config = TracerConfig::default()
        .with_service(SERVICE)
        .with_env("test")
        .with_agent_url(agent_url)
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    let server = http_support::serve(rt, app::router(tracer));
    for (resource, count, fails) in PLAN {
        let path = resource.trim_start_matches("GET ");
        hit(server.addr, path, count, fails);
    }
    tracer.flush(Duration::from_secs(20)).expect("flush to the agent");
    (server, tracer)
}

/// `count` requests of `path` straight to the app.
fn hit(app: SocketAddr, path: &str, count: usize, fails: bool) {
    for _ in 0..count {
        let (status, _) = apm::http_get(app, path);
        assert_eq!(status, if fails { 500 } else { 200 }, "GET {path}");
    }
}

/// Waits (bounded) for a notification of `state`; returns it (earlier ones, e.g. WARN on the
/// way, are skipped).
fn notification(rx: &std::sync::mpsc::Receiver<serde_json::Value>, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {state} notification within 60 s"));
        if n["state"] == state {
            return n;
        }
    }
}

/// The monitor's last value from the JSON API (NaN without one).
fn monitor_value(web: SocketAddr) -> f64 {
    let (code, body) = apm::http_get(web, "/api/v1/monitors");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0]["value"].as_f64().unwrap_or(f64::NAN)
}

/// The monitor's state from the JSON API.
fn monitor_state(web: SocketAddr) -> String {
    let (code, body) = apm::http_get(web, "/api/v1/monitors");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0]["state"].as_str().expect("a state").to_owned()
}

/// The Chromium binary; the test fails (never skips) without it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is required by this test and was not found: install Debian's package with \
         `apt-get install -y chromium` (.ci/run does it)"
    );
}

/// Runs Chromium headless with `args` + `url`, killing it after a deadline; returns stdout.
fn run_chromium(browser: &Path, profile: &Path, args: &[String], url: &str, log: &Path) -> String {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(log).expect("chromium log"));
    let mut child = cmd.spawn().expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            assert!(
                status.success(),
                "chromium {args:?} {url} failed ({status}); see {}",
                log.display()
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} {url} did not finish in 90 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("reader").expect("chromium stdout")
}

/// Loads `path` in Chromium: returns the DOM after scripts ran, and saves a screenshot.
fn load(browser: &Path, dir: &Path, addr: SocketAddr, path: &str, name: &str) -> String {
    let url = format!("http://{addr}{path}");
    let profile = dir.join("chromium-profile");
    let dom = run_chromium(
        browser,
        &profile,
        &["--dump-dom".to_owned()],
        &url,
        &dir.join(format!("{name}.dom.log")),
    );
    std::fs::write(dir.join(format!("{name}.html")), &dom).expect("save dom");
    let shot = dir.join(format!("{name}.png"));
    run_chromium(
        browser,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".to_owned(),
        ],
        &url,
        &dir.join(format!("{name}.shot.log")),
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} is not a real screenshot",
        shot.display()
    );
    dom
}

/// The attributes of the element whose `attr` is `value`.
fn element<'a>(html: &'a str, attr: &str, value: &str) -> &'a str {
    let needle = format!("{attr}=\"{value}\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no element with {needle} in the DOM"));
    let start = html[..at].rfind('<').expect("element start");
    let end = html[at..].find('>').expect("element end") + at;
    &html[start..end]
}

fn attr<'a>(element: &'a str, name: &str) -> &'a str {
    let needle = format!(" {name}=\"");
    let at = element
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + needle.len();
    let end = element[at..].find('"').expect("attribute end") + at;
    &element[at..end]
}

fn num(element: &str, name: &str) -> f64 {
    attr(element, name)
        .parse()
        .unwrap_or_else(|e| panic!("{name} of {element}: {e}"))
}

#[test]
fn chromium_shows_the_demo_traffic() {
    let browser = chromium();
    let dir = apm::run_dir("local-web-chromium");
    let rt = runtime();
    // The real agent in local mode: receiver → stats → samplers → the store, web view on a free port.
    let mut config = local_config(&dir, apm::free_port());
    let (hook, notifications) = webhook_receiver(0);
    config.local.monitors = MonitorConfig::from_yaml(&format!(
        "
webhooks: {{ops: 'http://{hook}/hook'}}
monitors:
  - name: demo errors
    service: {SERVICE}
    metric: error_rate
    window: 5m
    warning: 25%
    critical: 40%
    message: '{SERVICE} errors at {{{{value}}}} @webhook-ops'
"
    ))
    .expect("monitor config");
    config.local.monitors.interval = Duration::from_millis(200);
    let agent = rt.block_on(trace_agent::start(config)).expect("agent");
    let web_addr = web_addr(&agent);
    let agent_url = format!("http://{}", agent.tcp_addr().unwrap());
    let (server, app_tracer) = send_demo_traffic(&rt, &agent_url);
    let total: usize = PLAN.iter().map(|(_, n, _)| n).sum();
    // Readiness: every chunk and every stats row reached the store (stats go every second).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = agent.status();
        let local = status.local.as_ref().expect("status shows local mode");
        let stats_hits = http_hits(web_addr);
        if local.store.chunks_written >= total as u64 && stats_hits >= total as u64 {
            assert_eq!(status.total_received().traces, total as u64, "{status:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not get everything: {status:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Services.
    let dom = load(&browser, &dir, web_addr, "/?window=5m", "services");
    let svc = element(&dom, "data-service", SERVICE);
    let errors: usize = PLAN.iter().filter(|p| p.2).map(|p| p.1).sum();
    assert_eq!(
        (num(svc, "data-hits") as usize, num(svc, "data-errors") as usize),
        (total, errors)
    );

    // The service's resources: exact counts, ordered and plausible percentiles.
    let dom = load(
        &browser,
        &dir,
        web_addr,
        &format!("/services/{SERVICE}?window=5m"),
        "service",
    );
    let rows = dom.matches("<tr data-resource=").count();
    assert_eq!(rows, PLAN.len(), "exactly the four resources");
    for (resource, count, fails) in PLAN {
        let row = element(&dom, "data-resource", resource);
        assert_eq!(num(row, "data-hits") as usize, count, "{resource}");
        assert_eq!(
            num(row, "data-errors") as usize,
            if fails { count } else { 0 },
            "{resource}"
        );
        let (p50, p95, p99) = (num(row, "data-p50"), num(row, "data-p95"), num(row, "data-p99"));
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{resource}: {p50} {p95} {p99}");
        assert!(p99 < 5e9, "{resource}: a span of this test cannot take {p99} ns");
        assert!(
            num(row, "data-total") >= p50 * count as f64 * 0.5,
            "{resource}: total time"
        );
    }

    // A resource: its traces, then one trace's waterfall.
    let dom = load(
        &browser,
        &dir,
        web_addr,
        &format!("/services/{SERVICE}/resources/GET%20%2Fapi%2Ferror?window=5m"),
        "resource",
    );
    assert!(dom.contains("class=\"chart dist\""), "latency distribution");
    assert_eq!(
        dom.matches("<tr data-trace=").count(),
        5,
        "the five failing requests are listed"
    );
    let first = element(&dom, "data-error", "1");
    let trace_id = attr(first, "data-trace").to_owned();

    let dom = load(&browser, &dir, web_addr, &format!("/traces/{trace_id}"), "trace");
    let root = element(&dom, "data-name", "http.request");
    assert_eq!((attr(root, "data-depth"), attr(root, "data-error")), ("0", "1"));
    let root_id = attr(root, "data-span-id").to_owned();
    let query = element(&dom, "data-name", "sqlite.query");
    assert_eq!(
        (
            attr(query, "data-parent-id"),
            attr(query, "data-depth"),
            attr(query, "data-service"),
            attr(query, "data-error"),
        ),
        (root_id.as_str(), "1", SERVICE, "1"),
        "the failing query is a child of the request span"
    );
    assert!(
        dom.contains("database timeout after"),
        "the query's error message is shown"
    );
    assert!(
        dom.contains("the demo database is unavailable"),
        "the request span's error message is shown"
    );

    assert_eq!(monitor_state(web_addr), "OK", "17 % errors is under the 25 % warning");

    // A second service calling the app: one trace across both, and a peer.service cache.
    let front_tracer = Tracer::new(
        TracerConfig::default()
            .with_service(FRONTEND)
            .with_env("test")
            .with_agent_url(&agent_url)
            .expect("agent url"),
    )
    .expect("frontend tracer");
    let front = frontend::Frontend::new(front_tracer, server.addr);
    const FRONT_CALLS: usize = 4;
    for _ in 0..FRONT_CALLS {
        let status = rt
            .block_on(front.request("/api/apm", Duration::ZERO))
            .expect("frontend call");
        assert_eq!(status, 200);
    }
    front_tracer.flush(Duration::from_secs(20)).expect("flush the frontend");
    app_tracer.flush(Duration::from_secs(20)).expect("flush the app");
    // An incident: 20 failing requests → (5 + 20) / (29 + 4 + 20) = 47 % errors → ALERT.
    const INCIDENT: usize = 20;
    hit(server.addr, "/api/error", INCIDENT, true);
    app_tracer.flush(Duration::from_secs(20)).expect("flush the app");
    let alert = notification(&notifications, "ALERT");
    assert_eq!(alert["monitor"], "demo errors");
    // The first evaluation beyond 40 % may see part of the incident (stats reach the store
    // every second): the value is between the threshold and the final rate.
    let value = alert["value"].as_f64().expect("a value");
    assert!(0.40 < value && value <= 25.0 / 53.0 + 1e-9, "{alert}");
    let message = alert["message"].as_str().expect("a message");
    assert!(
        message.starts_with(&format!("{SERVICE} errors at ")) && message.ends_with(" % @webhook-ops"),
        "{message}"
    );

    // Readiness: the whole incident is in the store (the monitor's value is the final rate).
    let deadline = Instant::now() + Duration::from_secs(30);
    while (monitor_value(web_addr) - 25.0 / 53.0).abs() > 1e-9 {
        assert!(Instant::now() < deadline, "the incident never fully reached the store");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The map: the two-service trace and the untraced cache.
    let dom = load(&browser, &dir, web_addr, "/map?window=5m", "service-map");
    // (the map's SVG comes first in the page; its edges carry both ends)
    let edge = element(&dom, "data-from", &format!("{FRONTEND}\" data-to=\"{SERVICE}"));
    assert!(
        edge.starts_with("<g class=\"edge"),
        "frontend → app is an SVG edge: {edge}"
    );
    assert_eq!(num(edge, "data-hits") as usize, FRONT_CALLS);
    assert!(
        dom.contains(&format!("data-from=\"{FRONTEND}\" data-to=\"{}\"", frontend::CACHE)),
        "the peer.service edge"
    );
    assert_eq!(num(element(&dom, "data-node", SERVICE), "data-errors") as usize, 25);
    // One of those traces holds spans of both services, the app's under the frontend's call.
    let (code, body) = apm::http_get(
        web_addr,
        &format!("/api/v1/traces?window=5m&service={FRONTEND}&limit=1"),
    );
    assert_eq!(code, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = found["traces"][0]["trace_id"]
        .as_str()
        .expect("a frontend trace")
        .to_owned();
    assert_eq!(found["traces"][0]["root_service"], FRONTEND);
    let dom = load(&browser, &dir, web_addr, &format!("/traces/{id}"), "two-service-trace");
    let server_span = element(&dom, "data-service", SERVICE);
    assert_eq!(
        attr(server_span, "data-depth"),
        "2",
        "frontend root → client call → app"
    );

    // The search form (GET): failing requests of the app.
    let dom = load(
        &browser,
        &dir,
        web_addr,
        &format!("/search?window=5m&service={SERVICE}&resource=GET+%2Fapi%2Ferror&error=true"),
        "search",
    );
    assert_eq!(
        dom.matches("<tr data-trace=").count(),
        5 + INCIDENT,
        "every failing request is found"
    );
    let first = element(&dom, "data-error", "1");
    let failing = attr(first, "data-trace").to_owned();
    assert!(dom.contains("id=\"search-form\""));
    let dom = load(&browser, &dir, web_addr, &format!("/traces/{failing}"), "search-hit");
    assert!(
        dom.contains("the demo database is unavailable"),
        "the found trace failed"
    );

    // Monitors: ALERT on the page and on the service page.
    let dom = load(&browser, &dir, web_addr, "/monitors", "monitors-alert");
    assert_eq!(
        attr(element(&dom, "data-monitor", "demo errors"), "data-state"),
        "ALERT"
    );
    // Recovery: 80 successful requests → 25 / 133 = 19 % → OK, notified.
    const RECOVERY: usize = 80;
    hit(server.addr, "/api/apm", RECOVERY, false);
    app_tracer.flush(Duration::from_secs(20)).expect("flush the app");
    let ok = notification(&notifications, "OK");
    let value = ok["value"].as_f64().expect("a value");
    assert!((25.0 / 133.0 - 1e-9..0.25).contains(&value), "{ok}");
    let dom = load(&browser, &dir, web_addr, "/monitors", "monitors-ok");
    assert_eq!(attr(element(&dom, "data-monitor", "demo errors"), "data-state"), "OK");
    assert!(
        dom.contains("data-to=\"ALERT\"") && dom.contains("data-from=\"ALERT\""),
        "both changes are events"
    );
    let dom = load(
        &browser,
        &dir,
        web_addr,
        &format!("/services/{SERVICE}?window=5m"),
        "service-with-monitor",
    );
    assert!(dom.contains("id=\"chart-p95\"") && dom.contains("id=\"chart-error-rate\""));
    assert_eq!(attr(element(&dom, "data-monitor", "demo errors"), "data-state"), "OK");

    drop(server);
    let status = rt.block_on(agent.shutdown());
    let local = status.local.expect("local mode status");
    let chunks = total + 2 * FRONT_CALLS + INCIDENT + RECOVERY;
    assert_eq!(local.store.chunks_written, chunks as u64, "nothing written twice");
}

/// Hits of [`SERVICE`] in the last 5 minutes, from the JSON API.
fn http_hits(web: SocketAddr) -> u64 {
    let (code, body) = apm::http_get(web, "/api/v1/services?window=5m");
    assert_eq!(code, 200, "{body}");
    let services: serde_json::Value = serde_json::from_str(&body).unwrap();
    services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["service"] == SERVICE)
        .filter_map(|s| s["hits"].as_u64())
        .sum()
}
