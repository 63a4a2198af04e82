//! A real `reqwest` client through `tracer::http::ReqwestMiddleware` calling the axum Flask
//! demo (`examples/flask_demo`) over loopback HTTP, both traced (as two services, two
//! tracers) into our agent: one trace crosses both, the client spans carry the same tags and
//! resources as `ClientLayer`'s, statuses and errors (a 404, a 500, a refused connection)
//! are recorded, and the server spans continue the client spans.

#[path = "../examples/flask_demo/app.rs"]
mod app;
mod http_support;

use std::time::Duration;

use http_support::{OurAgent, runtime, serve};
use tracer::config::HttpSettings;
use tracer::http::ReqwestMiddleware;
use tracer::{Instrument, Tracer, TracerConfig};

#[test]
fn reqwest_calls_to_the_flask_demo_are_one_trace() {
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let config = |service: &str| {
        TracerConfig::default()
            .with_service(service)
            .with_env("test")
            .with_agent_url(&agent.url())
            .unwrap()
    };
    let server_tracer = Tracer::new(config("flask-demo")).unwrap();
    let client_tracer =
        Tracer::new(config("frontend").with_http(HttpSettings::default().with_header_tags("x-request-id").unwrap()))
            .unwrap();
    let server = serve(&rt, app::router(server_tracer));
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(ReqwestMiddleware::new(client_tracer))
        .build();

    let root = client_tracer.span("frontend.job").start();
    let (trace_id, root_id) = (root.trace_id().low(), root.span_id().to_u64());
    let base = format!("http://{}", server.addr);
    let statuses = rt.block_on(
        async {
            let mut out = Vec::new();
            for path in ["/api/apm?token=secret", "/api/error", "/nope/42"] {
                let resp = client
                    .get(format!("{base}{path}"))
                    .header("x-request-id", "req-7")
                    .send()
                    .await
                    .expect("the demo answers");
                out.push(resp.status().as_u16());
            }
            let refused = client.get(format!("http://127.0.0.1:{closed_port}/x")).send().await;
            assert!(refused.is_err());
            out
        }
        .in_span(root),
    );
    assert_eq!(statuses, [200, 500, 404]);
    client_tracer.flush(Duration::from_secs(10)).unwrap();
    server_tracer.flush(Duration::from_secs(10)).unwrap();

    // root + 4 client spans + 3 server spans + /api/apm's query and render + /api/error's query.
    let spans = agent.spans(11);
    assert_eq!(spans.len(), 11, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id == trace_id), "one trace: {spans:#?}");

    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.tag("span.kind") == Some("client") && s.tag("component") == Some("reqwest"))
        .collect();
    assert_eq!(clients.len(), 4);
    for c in &clients {
        assert_eq!((c.service.as_str(), c.name.as_str()), ("frontend", "http.request"));
        assert_eq!(c.parent_id, root_id, "a child of the current span");
        assert_eq!(c.tag("component"), Some("reqwest"));
        assert_eq!(c.tag("out.host"), Some("127.0.0.1"));
        assert_eq!(c.tag("http.method"), Some("GET"));
    }
    let by_resource = |r: &str| {
        clients
            .iter()
            .find(|c| c.resource == r)
            .unwrap_or_else(|| panic!("no client span {r}: {clients:#?}"))
    };
    let apm = by_resource("GET /api/apm");
    assert_eq!(apm.tag("http.status_code"), Some("200"));
    assert_eq!(apm.error, 0);
    assert_eq!(
        apm.tag("http.url"),
        Some(format!("{base}/api/apm?<redacted>").as_str()),
        "query string obfuscated"
    );
    assert_eq!(
        apm.metrics.get("network.destination.port"),
        Some(&f64::from(server.addr.port()))
    );
    assert_eq!(apm.tag("http.request.headers.x-request-id"), Some("req-7"));
    let err = by_resource("GET /api/error");
    assert_eq!(
        (err.tag("http.status_code"), err.error),
        (Some("500"), 0),
        "5xx is the server's error"
    );
    let nope = by_resource("GET /nope/?");
    assert_eq!(
        (nope.tag("http.status_code"), nope.error),
        (Some("404"), 1),
        "4xx is a client error"
    );
    assert_eq!(nope.tag("error.type"), Some("404"));
    let refused = by_resource("GET /x");
    assert_eq!(refused.error, 1);
    assert_eq!(refused.tag("error.type"), Some("reqwest::Error (connect)"));
    assert!(refused.tag("http.status_code").is_none());
    assert!(
        refused.tag("error.message").is_some_and(|m| m.contains("onnect")),
        "{refused:?}"
    );

    // Each server span continues its client span.
    let servers: Vec<_> = spans.iter().filter(|s| s.tag("span.kind") == Some("server")).collect();
    assert_eq!(servers.len(), 3);
    for s in &servers {
        assert_eq!(s.service, "flask-demo");
        let parent = clients
            .iter()
            .find(|c| c.span_id == s.parent_id)
            .unwrap_or_else(|| panic!("server span without its client span: {s:#?}"));
        let path = parent.resource.trim_start_matches("GET ");
        assert!(s.resource.starts_with("GET "), "{s:?}");
        if path == "/api/apm" || path == "/api/error" {
            assert_eq!(s.resource, parent.resource, "same route");
        }
    }
    let server_error = servers.iter().find(|s| s.resource == "GET /api/error").unwrap();
    assert_eq!(server_error.error, 1);
}
