//! Where the server layer sits in an axum app decides whether it sees the route template.
//! `Router::layer` after the routes: templates. `route_layer`: templates, 404s untraced. A
//! layer wrapped around the router from outside: no template, so the resource falls back to
//! the path with its ids collapsed, marked `_dd.http.route_source=fallback` — never the raw
//! path.

mod http_support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_support::{Got, OurAgent, runtime, serve};
use tower::Layer;
use tracer::http::ServerLayer;
use tracer::{Tracer, TracerConfig};

fn routes() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users/{id}/orders/{order}", get(|| async { "order" }))
}

fn run(make: impl FnOnce(Tracer) -> Router, expect: usize) -> Vec<Got> {
    let rt = runtime();
    let agent = OurAgent::start(&rt);
    let config = TracerConfig::default()
        .with_service("placement")
        .with_agent_url(&agent.url())
        .expect("url");
    let tracer = Tracer::new(config).expect("tracer");
    let server = serve(&rt, make(tracer));
    for path in ["/users/42", "/users/7/orders/9f8e7d6c5b4a", "/nope/123"] {
        apm::http_get(server.addr, path);
    }
    drop(server);
    tracer.flush(Duration::from_secs(20)).expect("flush");
    let spans = agent.spans(expect);
    rt.block_on(agent.agent.shutdown());
    let mut resources: Vec<Got> = spans;
    resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    resources
}

/// A traced request of `/users/{id}` and of `/users/{id}/orders/{order}`, as [`summary`] shows it.
const USER: (&str, Option<&str>, Option<&str>) = ("GET /users/{id}", Some("/users/{id}"), None);
const ORDER: (&str, Option<&str>, Option<&str>) = (
    "GET /users/{id}/orders/{order}",
    Some("/users/{id}/orders/{order}"),
    None,
);

fn summary(spans: &[Got]) -> Vec<(&str, Option<&str>, Option<&str>)> {
    spans
        .iter()
        .map(|s| (s.resource.as_str(), s.tag("http.route"), s.tag("_dd.http.route_source")))
        .collect()
}

#[test]
fn router_layer_sees_route_templates() {
    let spans = run(|t| routes().layer(ServerLayer::axum(t)), 3);
    assert_eq!(summary(&spans), [USER, ORDER, ("GET 404", None, None),]);
}

#[test]
fn route_layer_traces_matched_routes_only() {
    let spans = run(|t| routes().route_layer(ServerLayer::axum(t)), 2);
    assert_eq!(summary(&spans), [USER, ORDER,]);
}

#[test]
fn a_layer_around_the_router_falls_back_to_paths_without_ids() {
    // The traced service wraps the whole inner router: it runs before routing.
    let spans = run(
        |t| Router::new().fallback_service(ServerLayer::axum(t).layer(routes())),
        3,
    );
    assert_eq!(
        summary(&spans),
        [
            ("GET /users/?", None, Some("fallback")),
            ("GET /users/?/orders/?", None, Some("fallback")),
            ("GET 404", None, None),
        ]
    );
}
