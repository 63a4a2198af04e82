//! A second traced service for the demo, so the service map has something to draw: a
//! `frontend` whose requests look up a cache it does not trace (a span tagged
//! `peer.service: demo-cache`) and then call the Flask demo over real HTTP with the trace
//! context propagated (`tracer::http::ClientLayer` on a hyper client). One trace spans both
//! services: `frontend → flask-demo → (sqlite)`, and `frontend → demo-cache`.
//!
//! Shared by `examples/demo_traffic.rs` and `tests/local_web_chromium.rs` (`#[path]`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};
use tracer::Tracer;
use tracer::http::{ClientLayer, ClientService};

/// The untraced cache the frontend names.
pub(crate) const CACHE: &str = "demo-cache";

/// The frontend service: its tracer and its traced HTTP client to the app.
#[derive(Clone)]
pub(crate) struct Frontend {
    tracer: Tracer,
    client: ClientService<Client<HttpConnector, Empty<Bytes>>>,
    app: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("the app answered {0}")]
struct Upstream(u16);

impl Frontend {
    /// A frontend calling the app at `app`, tracing with `tracer` (its own service name).
    pub(crate) fn new(tracer: Tracer, app: SocketAddr) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            tracer,
            client: ClientLayer::new(tracer).with_component("hyper").layer(client),
            app,
        }
    }

    /// One frontend request (`GET /shop{path}`): a cache lookup, `think` of its own work,
    /// then `GET {path}` on the app. Returns the app's status; a 5xx marks the request span
    /// as an error.
    pub(crate) async fn request(&self, path: &str, think: Duration) -> Result<u16, String> {
        let mut root = self
            .tracer
            .span("frontend.request")
            .resource(format!("GET /shop{path}"))
            .span_type("web")
            .tag("span.kind", "server")
            .tag("http.method", "GET")
            .start();
        root.child("redis.command")
            .resource("GET")
            .span_type("redis")
            .tag("span.kind", "client")
            .tag("peer.service", CACHE)
            .start()
            .finish();
        if !think.is_zero() {
            tokio::time::sleep(think).await;
        }
        let mut client = self.client.clone();
        client.ready().await.map_err(|e| format!("client not ready: {e}"))?;
        let uri = format!("http://{}{path}", self.app);
        let req = http::Request::get(uri.as_str())
            .body(Empty::new())
            .map_err(|e| format!("{uri}: {e}"))?;
        let call = {
            let _entered = root.enter();
            client.call(req)
        };
        let status = call.await.map_err(|e| format!("GET {uri}: {e}"))?.status().as_u16();
        root.set_tag("http.status_code", status.to_string());
        if status >= 500 {
            root.set_error(&Upstream(status));
        }
        Ok(status)
    }
}
