//! The axum Flask demo (`examples/flask_demo`) driven over real HTTP, its spans checked by
//! Datadog's reference test agent (`ddapm-test-agent`, every check passing) and by our own
//! agent: one `web` span per request with the route template as resource, `GET 404` for
//! every unmatched path, the error on the `/api/error` request span, children nested, and
//! incoming `traceparent` / `x-datadog-*` contexts continued.

#[path = "../examples/flask_demo/app.rs"]
mod app;
mod http_support;
#[path = "support/test_agent.rs"]
mod test_agent;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use http_support::{Got, OurAgent, runtime, serve};
use test_agent::{assert_every_check_passed, session_traces, start_in_session};
use tracer::{Tracer, TracerConfig};

const W3C_TRACE: &str = "6b01eedd00000000000000000000abcd";
const W3C_PARENT: &str = "00000000000000ef";

/// The demo's traffic: each route, two unmatched paths, and two requests that continue an
/// upstream trace. Returns the bodies by path.
fn drive(addr: SocketAddr) -> BTreeMap<String, (u16, String)> {
    let mut out = BTreeMap::new();
    for path in ["/", "/api/apm", "/api/trace", "/api/error", "/nope/1", "/users/42/x"] {
        out.insert(path.to_owned(), apm::http_get(addr, path));
    }
    let traceparent = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
    let (status, _) = apm::http_request(
        addr,
        "GET",
        "/api/apm?from=w3c",
        &[("traceparent", &traceparent), ("tracestate", "dd=s:1;t.dm:-0")],
        &[],
    )
    .expect("w3c request");
    assert_eq!(status, 200);
    let (status, _) = apm::http_request(
        addr,
        "GET",
        "/api/trace?from=datadog",
        &[
            ("x-datadog-trace-id", "1234567890123"),
            ("x-datadog-parent-id", "4242"),
            ("x-datadog-sampling-priority", "2"),
            ("x-datadog-origin", "synthetics"),
        ],
        &[],
    )
    .expect("datadog request");
    assert_eq!(status, 200);
    out
}

fn check_bodies(bodies: &BTreeMap<String, (u16, String)>) {
    assert_eq!(bodies["/"], (200, "Entrypoint to the Application".to_owned()));
    assert_eq!(bodies["/api/apm"], (200, "Getting APM Started".to_owned()));
    assert_eq!(bodies["/api/trace"], (200, "Posting Traces".to_owned()));
    assert_eq!(bodies["/api/error"].0, 500);
    assert_eq!(bodies["/nope/1"].0, 404);
}

fn tracer_to(url: &str) -> Tracer {
    let config = TracerConfig::default()
        .with_service("flask-demo")
        .with_env("test")
        .with_version("1.0")
        .with_agent_url(url)
        .expect("agent url");
    Tracer::new(config).expect("tracer")
}

/// What both agents must show, on spans in a neutral shape.
fn check_spans(spans: &[Got]) {
    let servers: Vec<&Got> = spans.iter().filter(|s| s.name == "http.request").collect();
    assert_eq!(servers.len(), 8, "one server span per request: {servers:#?}");
    let resources: BTreeSet<&str> = servers.iter().map(|s| s.resource.as_str()).collect();
    assert_eq!(
        resources,
        BTreeSet::from(["GET /", "GET /api/apm", "GET /api/trace", "GET /api/error", "GET 404"]),
        "no resource per unmatched path"
    );
    for s in &servers {
        assert_eq!(s.service, "flask-demo");
        assert_eq!(s.tag("span.kind"), Some("server"), "{s:?}");
        assert_eq!(s.tag("component"), Some("axum"));
        assert_eq!(s.tag("http.method"), Some("GET"));
        assert!(
            s.tag("http.url").is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "{s:?}"
        );
        assert!(s.tag("http.status_code").is_some(), "{s:?}");
        assert_eq!(s.tag("_dd.http.route_source"), None, "the layer sees the routes: {s:?}");
        let error = s.resource == "GET /api/error";
        assert_eq!(s.error, i32::from(error), "{s:?}");
        if s.resource != "GET 404" {
            assert_eq!(Some(&s.resource[4..]), s.tag("http.route"));
            // Each routed request has its children under it.
            let children: BTreeSet<&str> = spans
                .iter()
                .filter(|c| c.parent_id == s.span_id && c.trace_id == s.trace_id)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(
                children,
                BTreeSet::from(["sqlite.query", "template.render"])
                    .into_iter()
                    .filter(|n| !error || *n == "sqlite.query")
                    .collect(),
                "{s:?}"
            );
        }
    }
    let error = servers
        .iter()
        .find(|s| s.resource == "GET /api/error")
        .expect("error span");
    assert_eq!(error.tag("http.status_code"), Some("500"));
    assert!(
        error.tag("error.type").is_some_and(|t| t.ends_with("AppError")),
        "{error:?}"
    );
    assert_eq!(error.tag("error.message"), Some("the demo database is unavailable"));
    assert!(
        error
            .tag("error.stack")
            .is_some_and(|t| t.contains("caused by: database timeout")),
        "{error:?}"
    );
    let four04: Vec<&&Got> = servers.iter().filter(|s| s.resource == "GET 404").collect();
    assert_eq!(four04.len(), 2);
    assert!(
        four04
            .iter()
            .all(|s| s.error == 0 && s.tag("http.status_code") == Some("404"))
    );

    // Incoming contexts are continued: trace id and parent.
    let w3c = servers
        .iter()
        .find(|s| s.tag("http.url").is_some_and(|u| u.ends_with("?from=w3c")))
        .expect("w3c span");
    assert_eq!(format!("{:016x}", w3c.trace_id), W3C_TRACE[16..]);
    assert_eq!(format!("{:016x}", w3c.parent_id), W3C_PARENT);
    let dd = servers
        .iter()
        .find(|s| s.tag("http.url").is_some_and(|u| u.ends_with("?from=datadog")))
        .expect("datadog span");
    assert_eq!((dd.trace_id, dd.parent_id), (1_234_567_890_123, 4242));
    // Requests without incoming context start traces of their own.
    let roots = servers.iter().filter(|s| s.parent_id == 0).count();
    assert_eq!(roots, 6);
}

#[test]
fn flask_demo_spans_pass_the_reference_test_agent() {
    let token = "axum-flask-demo";
    let agent = start_in_session("http-flask-demo-test-agent", token);
    let rt = runtime();
    let tracer = tracer_to(&agent.url());
    let server = serve(&rt, app::router(tracer));
    let bodies = drive(server.addr);
    check_bodies(&bodies);
    drop(server);
    tracer.flush(Duration::from_secs(20)).expect("flush to the test agent");

    assert_every_check_passed(&agent);
    let traces = session_traces(&agent, token);
    let spans: Vec<Got> = traces
        .iter()
        .flatten()
        .map(|s| Got {
            service: s["service"].as_str().unwrap_or_default().to_owned(),
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            resource: s["resource"].as_str().unwrap_or_default().to_owned(),
            trace_id: s["trace_id"].as_u64().unwrap_or_default(),
            span_id: s["span_id"].as_u64().unwrap_or_default(),
            parent_id: s["parent_id"].as_u64().unwrap_or_default(),
            error: s["error"].as_i64().unwrap_or_default() as i32,
            meta: s["meta"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            metrics: s["metrics"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    check_spans(&spans);
    // The 128-bit W3C trace id's upper half travels as `_dd.p.tid` on the chunk root.
    let w3c = spans
        .iter()
        .find(|s| s.tag("http.url").is_some_and(|u| u.ends_with("?from=w3c")))
        .expect("w3c span");
    assert_eq!(w3c.tag("_dd.p.tid"), Some(&W3C_TRACE[..16]));
    // Server spans are measured service entries.
    let root = spans.iter().find(|s| s.resource == "GET /api/apm").expect("apm span");
    assert_eq!(root.metrics.get("_dd.top_level"), Some(&1.0));
    assert_eq!(root.metrics.get("_dd.measured"), Some(&1.0));
    agent.stop();
}

#[test]
fn flask_demo_spans_reach_our_agent() {
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let tracer = tracer_to(&agent.url());
    let server = serve(&rt, app::router(tracer));
    check_bodies(&drive(server.addr));
    drop(server);
    tracer.flush(Duration::from_secs(20)).expect("flush to our agent");
    // 8 server spans; 5 routed successes with 2 children, the error with 1.
    let spans = agent.spans(8 + 5 * 2 + 1);
    check_spans(&spans);
    assert_eq!(spans.len(), 19, "{spans:#?}");
    let status = rt.block_on(agent.agent.shutdown());
    assert!(status.dropped.is_empty(), "{:?}", status.dropped);
}

/// The example binary itself: `PORT` and `DD_SERVICE` are honoured and SIGTERM sends every
/// span before exiting. `cargo test` / `cargo nextest run` build the examples; a run
/// filtered to this test alone needs `cargo build --example flask_demo` first.
#[test]
fn the_example_binary_serves_and_flushes_on_sigterm() {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("flask_demo"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --example flask_demo` (cargo test builds examples unless filtered)",
        bin.display()
    );
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let dir = apm::run_dir("http-flask-demo-binary");
    let port = apm::free_port();
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("PORT", port.to_string())
        .env("DD_SERVICE", "flask-demo-bin")
        .env("DD_TRACE_AGENT_URL", agent.url())
        .env_remove("DD_AGENT_HOST")
        .env_remove("DD_TRACE_AGENT_PORT");
    let mut child = apm::ChildGuard::spawn("flask_demo", cmd, &dir.join("flask_demo.log"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    apm::wait_for_tcp(addr, Duration::from_secs(30));
    check_bodies(&drive(addr));
    let exit = child.terminate(Duration::from_secs(20)).expect("exit status");
    let log = std::fs::read_to_string(dir.join("flask_demo.log")).unwrap_or_default();
    assert!(exit.success(), "{exit:?}: {log}");
    assert!(log.contains(&format!("listening on http://127.0.0.1:{port}")), "{log}");
    assert!(log.contains("sent 8 traces / 19 spans"), "{log}");
    assert!(!log.contains("WARN"), "quiet: {log}");
    let spans = agent.spans(19);
    assert!(spans.iter().all(|s| s.service == "flask-demo-bin"), "{spans:?}");
    check_spans_of(&spans, "flask-demo-bin");
}

fn check_spans_of(spans: &[Got], service: &str) {
    let renamed: Vec<Got> = spans
        .iter()
        .cloned()
        .map(|mut s| {
            if s.service == service {
                s.service = "flask-demo".to_owned();
            }
            s
        })
        .collect();
    check_spans(&renamed);
}
