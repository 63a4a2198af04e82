//! Quickstart: the tracer API on the shape of the Flask demo's traffic, without a web
//! framework. Each "request" is a `web` span with the route as its resource, a handler
//! child, and a database child; every fourth request fails.
//!
//! ```text
//! DD_SERVICE=flask-demo DD_ENV=demo cargo run --example quickstart -- 40
//! ```
//!
//! The agent URL comes from `DD_TRACE_AGENT_URL` (or `DD_AGENT_HOST`/`DD_TRACE_AGENT_PORT`),
//! default `http://127.0.0.1:8126`.
#![allow(clippy::print_stdout)] // a command-line example reports on stdout

use std::time::Duration;

use tracer::{Tracer, TracerConfig};

#[derive(Debug, thiserror::Error)]
#[error("database timeout after 50 ms")]
struct DbTimeout;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(40);
    let config = TracerConfig::from_env()?;
    let tracer = Tracer::new(config)?;
    let routes = [
        ("/", "Entrypoint to the Application"),
        ("/api/apm", "Getting APM Started"),
        ("/api/trace", "Posting Traces"),
        ("/api/error", ""),
    ];
    for i in 0..requests {
        let (route, body) = routes[i % routes.len()];
        let mut request = tracer
            .span("http.request")
            .resource(format!("GET {route}"))
            .span_type("web")
            .measured()
            .tag("span.kind", "server")
            .tag("component", "quickstart")
            .tag("http.method", "GET")
            .tag("http.route", route)
            .tag("http.url", format!("http://127.0.0.1:5050{route}"))
            .start();
        {
            let handler = request.child("handler").resource(route).start();
            let mut query = handler
                .child("sqlite.query")
                .service("sqlite")
                .resource("SELECT 1")
                .span_type("sql")
                .start();
            if body.is_empty() {
                query.set_error(&DbTimeout);
            }
        }
        if body.is_empty() {
            request.set_tag("http.status_code", "500");
            request.set_error_tags("DbTimeout", "database timeout after 50 ms", "handler -> sqlite.query");
        } else {
            request.set_tag("http.status_code", "200");
        }
    }
    tracer.shutdown(Duration::from_secs(10))?;
    let health = tracer.health();
    println!(
        "quickstart: {requests} requests traced; sent {} traces / {} spans to {}; dropped {}",
        health.traces_sent,
        health.spans_sent,
        tracer.config().agent().url(),
        health.spans_dropped_queue_full + health.spans_dropped_send_failed
    );
    Ok(())
}
