//! Distributed tracing across two instrumented services over real HTTP: service A's handler
//! calls service B through `tracer::http::ClientLayer` around hyper-util's client; B's
//! `ServerLayer` continues the trace, whichever propagation style A injects.

mod http_support;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use http_support::{Got, OurAgent, runtime, serve};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tracer::http::{ClientLayer, ClientService, ServerLayer};
use tracer::propagation::{Baggage, Style};
use tracer::{Tracer, TracerConfig};

type TracedClient = ClientService<Client<HttpConnector, Empty<Bytes>>>;

#[derive(Clone)]
struct AppA {
    client: TracedClient,
    b: String,
}

/// A's `/call`: GET B's `/users/{id}` and answer with what B said.
async fn call_b(State(app): State<AppA>) -> String {
    let req = http::Request::get(format!("{}/users/42", app.b))
        .body(Empty::new())
        .expect("request");
    match app.client.oneshot(req).await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            format!("{status} {}", String::from_utf8_lossy(&body))
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Service A, traced by `tracer_a`: its `/call` calls B at `b` through a traced client.
fn serve_a(rt: &tokio::runtime::Runtime, tracer_a: Tracer, b: std::net::SocketAddr) -> http_support::Server {
    let client = ClientLayer::new(tracer_a).layer(Client::builder(TokioExecutor::new()).build_http());
    serve(
        rt,
        Router::new()
            .route("/call", get(call_b))
            .with_state(AppA {
                client,
                b: format!("http://{b}"),
            })
            .layer(ServerLayer::axum(tracer_a)),
    )
}

fn tracer(service: &str, agent: &str, inject: Vec<Style>) -> Tracer {
    let config = TracerConfig::default()
        .with_service(service)
        .with_agent_url(agent)
        .expect("agent url")
        .with_propagation_styles(Style::defaults(), inject);
    Tracer::new(config).expect("tracer")
}

fn one_call_across_two_services(inject: Vec<Style>, baggage: Option<&str>) -> (Vec<Got>, String) {
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let tracer_b = tracer("svc-b", &agent.url(), Style::defaults());
    let b = serve(
        &rt,
        Router::new()
            .route(
                "/users/{id}",
                get(move || async move {
                    let _q = tracer_b.span("db.query").resource("SELECT 1").start();
                    let user = Baggage::current()
                        .and_then(|b| b.get("user.id").map(str::to_owned))
                        .unwrap_or_default();
                    format!("hello from b to {user}")
                }),
            )
            .layer(ServerLayer::axum(tracer_b)),
    );
    let tracer_a = tracer("svc-a", &agent.url(), inject);
    let a = serve_a(&rt, tracer_a, b.addr);
    let headers: Vec<(&str, &str)> = baggage.map(|b| ("baggage", b)).into_iter().collect();
    let (status, body) = apm::http_request(a.addr, "GET", "/call", &headers, &[]).expect("call A");
    assert_eq!(status, 200);
    drop((a, b));
    tracer_a.flush(Duration::from_secs(20)).expect("flush A");
    tracer_b.flush(Duration::from_secs(20)).expect("flush B");
    let spans = agent.spans(4);
    rt.block_on(agent.agent.shutdown());
    (spans, String::from_utf8_lossy(&body).into_owned())
}

fn check_one_trace(spans: &[Got]) {
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let find = |service: &str, kind: Option<&str>, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name && s.tag("span.kind") == kind)
            .unwrap_or_else(|| panic!("no {service} {name} {kind:?} in {spans:#?}"))
    };
    let a_server = find("svc-a", Some("server"), "http.request");
    let a_client = find("svc-a", Some("client"), "http.request");
    let b_server = find("svc-b", Some("server"), "http.request");
    let b_query = find("svc-b", None, "db.query");
    let trace = a_server.trace_id;
    assert!(spans.iter().all(|s| s.trace_id == trace), "one trace: {spans:#?}");
    assert_eq!(a_server.parent_id, 0);
    assert_eq!(a_server.resource, "GET /call");
    assert_eq!(a_client.parent_id, a_server.span_id);
    assert_eq!(a_client.resource, "GET /users/?");
    assert_eq!(a_client.tag("http.status_code"), Some("200"));
    assert_eq!(a_client.tag("out.host"), Some("127.0.0.1"));
    assert_eq!(b_server.parent_id, a_client.span_id, "B continues A's client span");
    assert_eq!(b_server.resource, "GET /users/{id}");
    assert_eq!(b_server.metrics.get("_dd.top_level"), Some(&1.0));
    assert_eq!(b_query.parent_id, b_server.span_id);
}

#[test]
fn a_call_through_the_client_layer_is_one_trace_with_default_styles() {
    let (spans, body) = one_call_across_two_services(Style::defaults(), None);
    assert_eq!(body, "200 OK hello from b to ");
    check_one_trace(&spans);
}

#[test]
fn a_call_carrying_only_traceparent_is_continued() {
    let (spans, _) = one_call_across_two_services(vec![Style::TraceContext], None);
    check_one_trace(&spans);
}

#[test]
fn a_call_carrying_only_datadog_headers_is_continued() {
    let (spans, _) = one_call_across_two_services(vec![Style::Datadog], None);
    check_one_trace(&spans);
}

#[test]
fn a_call_carrying_only_b3_is_continued() {
    for style in [Style::B3Multi, Style::B3Single] {
        let rt = runtime();
        let agent = OurAgent::start(&rt);
        // B reads b3 only; A writes only this style.
        let config_b = TracerConfig::default()
            .with_service("svc-b")
            .with_agent_url(&agent.url())
            .expect("url")
            .with_propagation_styles(vec![style], vec![style]);
        let tracer_b = Tracer::new(config_b).expect("tracer");
        let b = serve(
            &rt,
            Router::new()
                .route("/users/{id}", get(|| async { "b" }))
                .layer(ServerLayer::axum(tracer_b)),
        );
        let tracer_a = tracer("svc-a", &agent.url(), vec![style]);
        let a = serve_a(&rt, tracer_a, b.addr);
        assert_eq!(apm::http_get(a.addr, "/call").0, 200);
        drop((a, b));
        tracer_a.flush(Duration::from_secs(20)).expect("flush A");
        tracer_b.flush(Duration::from_secs(20)).expect("flush B");
        let spans = agent.spans(3);
        let client = spans
            .iter()
            .find(|s| s.tag("span.kind") == Some("client"))
            .expect("client span");
        let b_server = spans.iter().find(|s| s.service == "svc-b").expect("B's span");
        assert_eq!(
            (b_server.trace_id, b_server.parent_id),
            (client.trace_id, client.span_id),
            "{style:?}"
        );
        rt.block_on(agent.agent.shutdown());
    }
}

#[test]
fn baggage_travels_from_the_caller_through_a_to_b() {
    let (spans, body) = one_call_across_two_services(Style::defaults(), Some("user.id=alice,cart=7"));
    check_one_trace(&spans);
    assert_eq!(
        body, "200 OK hello from b to alice",
        "B's handler sees the baggage A received"
    );
    let b_server = spans
        .iter()
        .find(|s| s.service == "svc-b" && s.name == "http.request")
        .expect("B's span");
    assert_eq!(b_server.tag("baggage.user.id"), Some("alice"));
    assert_eq!(b_server.tag("baggage.cart"), None);
}

#[test]
fn malformed_incoming_headers_start_a_new_trace() {
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let t = tracer("svc-b", &agent.url(), Style::defaults());
    let styles = Style::ALL.to_vec();
    let t = Tracer::new(t.config().clone().with_propagation_styles(styles.clone(), styles)).expect("tracer");
    let b = serve(
        &rt,
        Router::new()
            .route("/x", get(|| async { "x" }))
            .layer(ServerLayer::axum(t)),
    );
    let bad: &[&[(&str, &str)]] = &[
        &[("x-datadog-trace-id", "not-a-number"), ("x-datadog-parent-id", "1")],
        &[("x-datadog-trace-id", "0"), ("x-datadog-parent-id", "0")],
        &[("traceparent", "00-00000000000000000000000000000000-0000000000000001-01")],
        &[("traceparent", "zz-6b01eedd00000000000000000000abcd-00000000000000ef-01")],
        &[("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")],
        &[("b3", "1-2-3-4-5")],
        &[("baggage", "=novalue,%%%")],
        &[("x-datadog-tags", "_dd.p.tid=zz,,==")],
    ];
    for headers in bad {
        let (status, _) = apm::http_request(b.addr, "GET", "/x", headers, &[]).expect("request");
        assert_eq!(status, 200, "{headers:?}");
    }
    drop(b);
    t.flush(Duration::from_secs(20)).expect("flush");
    let spans = agent.spans(bad.len());
    assert_eq!(spans.len(), bad.len());
    assert!(spans.iter().all(|s| s.parent_id == 0 && s.trace_id != 0), "{spans:#?}");
    rt.block_on(agent.agent.shutdown());
}
