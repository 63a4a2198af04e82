//! The route table: one match on the path, any method (like the Go agent's mux).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::AppState;
use super::server::Peer;
use super::traces;
use crate::decode::ApiVersion;

/// Response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// Header naming the agent version.
pub const AGENT_VERSION_HEADER: &str = "datadog-agent-version";
/// Header carrying the `/info` hash.
pub const AGENT_STATE_HEADER: &str = "datadog-agent-state";
/// Path of the JSON status endpoint used by `trace-agent status` (loopback only).
pub use crate::status::STATUS_PATH;

/// A plain reply with `body` and content type.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text reply with a trailing newline (Go `http.Error` style).
pub fn text(status: StatusCode, msg: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

/// Dispatches a request and stamps the agent headers on the reply.
pub async fn handle(state: Arc<AppState>, peer: Peer, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    // `status` itself is not counted as a request in flight.
    let _in_flight = (path != STATUS_PATH).then(|| InFlight::enter(&state));
    let mut resp = match path.as_str() {
        "/spans" | "/v0.1/spans" => traces::handle(&state, ApiVersion::V01, req).await,
        "/v0.2/traces" => traces::handle(&state, ApiVersion::V02, req).await,
        "/v0.3/traces" => traces::handle(&state, ApiVersion::V03, req).await,
        "/v0.4/traces" => traces::handle(&state, ApiVersion::V04, req).await,
        "/v0.5/traces" => traces::handle(&state, ApiVersion::V05, req).await,
        "/v0.7/traces" => traces::handle(&state, ApiVersion::V07, req).await,
        "/v0.6/stats" => traces::handle_stats(&state, req).await,
        "/info" => {
            state.stats.info_requests.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, "application/json", state.info.body.clone())
        }
        "/v0.7/config" => state.proxy.handle(&state, super::proxy::Route::RemoteConfig, req).await,
        "/services" | "/v0.1/services" | "/v0.2/services" | "/v0.3/services" | "/v0.4/services" => {
            discard(&state, req).await;
            text(StatusCode::OK, "OK")
        }
        STATUS_PATH => status(&state, peer, req.headers()),
        p if p.starts_with(super::proxy::TELEMETRY_PREFIX) => {
            state.proxy.handle(&state, super::proxy::Route::Telemetry, req).await
        }
        p if p.starts_with(super::proxy::EVP_PREFIX) => state.proxy.handle(&state, super::proxy::Route::Evp, req).await,
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let h = resp.headers_mut();
    h.insert(
        AGENT_VERSION_HEADER,
        HeaderValue::from_static(crate::identity::AGENT_VERSION),
    );
    if let Ok(v) = HeaderValue::from_str(&state.info.state) {
        h.insert(AGENT_STATE_HEADER, v);
    }
    resp
}

/// Counts a request as in flight until dropped (also when the connection is cut mid-request).
struct InFlight(Arc<AppState>);

impl InFlight {
    fn enter(state: &Arc<AppState>) -> Self {
        state.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads a body into nothing (bounded by the payload limit and the read timeout).
async fn discard(state: &AppState, req: Request<Incoming>) {
    traces::drain_body(state, req.into_body()).await;
}

/// Whether the `Host` header names this machine by a loopback name (`localhost`,
/// `127.x.x.x`, `[::1]`, any port) or is absent. A page reached under any other name came
/// through a DNS-rebinding page in a browser: refused, like the web view does.
pub fn host_is_loopback(h: &http::HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or("", |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn status(state: &AppState, peer: Peer, h: &http::HeaderMap) -> Reply {
    if !peer.is_local() {
        return text(StatusCode::FORBIDDEN, "status is only served to local clients");
    }
    if !host_is_loopback(h) {
        return text(
            StatusCode::FORBIDDEN,
            "status is only served under a loopback host name (localhost, 127.0.0.1, [::1])",
        );
    }
    let listening = state.listening.clone();
    let snapshot = state.stats.snapshot(listening);
    match serde_json::to_vec(&snapshot) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
