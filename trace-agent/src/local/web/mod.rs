//! The web view and its JSON API, served on loopback by the agent (default
//! `127.0.0.1:8128`, `apm_config.local.web_port`).
//!
//! | page | JSON |
//! |---|---|
//! | `/` services | `/api/v1/services?window=5m\|1h\|1d` |
//! | `/services/{service}` | `/api/v1/services/{service}?window=&operation=` |
//! | `/services/{service}/resources/{resource}` | `/api/v1/services/{service}/resources/{resource}?window=&operation=` |
//! | `/traces/{trace_id}` | `/api/v1/traces/{trace_id}` |
//! | `/search?…` | `/api/v1/traces?window=&service=&resource=&operation=&tag=k:v&min_duration=&max_duration=&error=&trace_id=&limit=&cursor=` |
//! | `/map` | `/api/v1/service-map?window=` |
//! | `/monitors` | `/api/v1/monitors`, `/api/v1/monitors/events`, `/api/v1/downtimes` (GET, POST; DELETE `/{id}`) |
//! | (service page charts) | `/api/v1/services/{service}/anomalies?window=&operation=` |
//! | (resource page, Versions) | `/api/v1/services/{service}/resources/{resource}/versions?window=&a=&b=&threshold=` |
//! | | `/api/v1/status` (store counters) |
//!
//! Path segments are percent-encoded (a resource like `GET /api` is `GET%20%2Fapi`); trace ids
//! are the decimal low 64 bits. Requests whose `Host` is not a loopback name are refused (DNS
//! rebinding); queries run on blocking threads, never on the runtime's workers.

pub mod html;
pub mod ledger;
pub mod pages;
pub mod product;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::LocalStore;
use super::monitor::{DowntimeScope, Monitors};
use super::query::{self, Window};
use super::search::{self, SearchQuery};
use super::store::unix_nanos;
use super::{service_map, versions};
use crate::net::BindError;
use html::{decode_component, query_params};
use pages::Frame;

mod view;
use view::render;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

type Reply = Response<Full<Bytes>>;

/// Binds the web view on `127.0.0.1:port` (0: ephemeral).
///
/// # Errors
/// [`BindError::AddrInUse`] when the port is taken.
pub async fn bind(port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BindError::Other {
                addr: addr.to_string(),
                source: std::io::Error::new(
                    source.kind(),
                    format!(
                        "{source}; the local web view port is set by apm_config.local.web_port / DD_APM_LOCAL_WEB_PORT"
                    ),
                ),
            }
        } else {
            BindError::Other {
                addr: addr.to_string(),
                source,
            }
        }
    })
}

/// What the handlers read.
#[derive(Debug)]
struct Ctx {
    store: LocalStore,
    monitors: Monitors,
}

/// Serves the web view on `listener` until `shutdown` turns true (no monitors).
pub async fn serve(listener: TcpListener, store: LocalStore, shutdown: watch::Receiver<bool>) {
    serve_with(listener, store, Monitors::disabled(), shutdown).await;
}

/// Serves the web view, with `monitors`' states and downtimes, until `shutdown` turns true.
pub async fn serve_with(
    listener: TcpListener,
    store: LocalStore,
    monitors: Monitors,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = Arc::new(Ctx { store, monitors });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => None,
            a = listener.accept() => Some(a),
        };
        let stream = match accepted {
            None => break,
            Some(Ok((stream, _))) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "local web view: accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let store = Arc::clone(&store);
        let svc = service_fn(move |req| {
            let store = Arc::clone(&store);
            async move { Ok::<_, Infallible>(handle(store, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), svc);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let stopping = tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "local web view: connection ended with an error");
                    }
                    false
                }
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => reply(status, "application/json", body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode JSON: {e}\n"),
        ),
    }
}

/// Only loopback names: a page of another site that rebinds its name to 127.0.0.1 is refused.
fn loopback_host(req: &Request<hyper::body::Incoming>) -> bool {
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

/// A parsed route.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Services,
    Service(String),
    ServiceAnomalies(String),
    Resource(String, String),
    ResourceVersions(String, String),
    Trace(u64),
    Search,
    ServiceMap,
    Monitors,
    MonitorEvents,
    Downtimes,
    Status,
    Ledger,
}

/// `(route, is_api)`, `None` for an unknown or malformed path.
fn route(path: &str) -> Option<(Route, bool)> {
    let (api, rest) = match path.strip_prefix("/api/v1") {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let dec = |s: &str| decode_component(s, false);
    let r = match segments.as_slice() {
        [] | [""] if !api => Route::Services,
        ["services"] | ["services", ""] => Route::Services,
        ["status"] if api => Route::Status,
        ["services", s] => Route::Service(dec(s)?),
        ["services", s, "anomalies"] if api => Route::ServiceAnomalies(dec(s)?),
        ["services", s, "resources", r] => Route::Resource(dec(s)?, dec(r)?),
        ["services", s, "resources", r, "versions"] if api => Route::ResourceVersions(dec(s)?, dec(r)?),
        ["traces", id] => Route::Trace(id.parse().ok()?),
        ["traces"] if api => Route::Search,
        ["search"] if !api => Route::Search,
        ["service-map"] if api => Route::ServiceMap,
        ["map"] if !api => Route::ServiceMap,
        ["monitors"] => Route::Monitors,
        ["monitors", "events"] if api => Route::MonitorEvents,
        ["downtimes"] if api => Route::Downtimes,
        ["ledger"] => Route::Ledger,
        _ => return None,
    };
    Some((r, api))
}

/// Largest request body read (downtime forms and JSON).
const MAX_BODY: usize = 16 * 1024;

/// A state-changing request must come from this view: a browser's `Origin` (sent with every
/// POST) must be a loopback origin, and `Sec-Fetch-Site` must not say cross-site.
fn same_site(req: &Request<hyper::body::Incoming>) -> bool {
    let h = req.headers();
    if h.get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return false;
    }
    match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or("");
            let name = if let Some(rest) = host.strip_prefix('[') {
                rest.split(']').next().unwrap_or("")
            } else {
                host.rsplit_once(':').map_or(host, |(n, _)| n)
            };
            matches!(name, "127.0.0.1" | "localhost" | "::1")
        }
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{}\n", message.into()))
}

fn redirect(to: &str) -> Reply {
    let mut r = reply(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Creating and removing downtimes: `POST /api/v1/downtimes` (JSON), `DELETE
/// /api/v1/downtimes/{id}`, and the monitors page's forms (`POST /monitors/downtimes`,
/// `POST /monitors/downtimes/{id}/delete`, answered with a redirect to the page).
async fn mutate(ctx: Arc<Ctx>, req: Request<hyper::body::Incoming>) -> Reply {
    use http_body_util::BodyExt;
    if !same_site(&req) {
        return text(StatusCode::FORBIDDEN, "cross-site requests cannot change monitors");
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY} bytes or unreadable: {e}"),
            );
        }
    };
    let now = unix_nanos(SystemTime::now());
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["api", "v1", "downtimes"]) => {
            if !is_json {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send Content-Type: application/json",
                );
            }
            let fields: std::collections::BTreeMap<String, serde_json::Value> = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("not a JSON object: {e}")),
            };
            let get = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            match new_downtime(
                &ctx.monitors,
                now,
                get("scope"),
                get("duration"),
                (get("start"), get("end"), get("daily")),
                get("comment"),
            ) {
                Ok(id) => json(StatusCode::CREATED, &serde_json::json!({ "id": id })),
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            }
        }
        ("DELETE", ["api", "v1", "downtimes", id]) => match id.parse() {
            Ok(id) if ctx.monitors.remove_downtime(id) => {
                reply(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "no such downtime created here (configured ones are removed from datadog.yaml)",
            ),
        },
        ("POST", ["monitors", "downtimes"]) => {
            let form = query_params(std::str::from_utf8(&body).ok());
            let get = |k: &str| {
                form.iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            match new_downtime(
                &ctx.monitors,
                now,
                get("scope"),
                get("duration"),
                (None, None, None),
                get("comment"),
            ) {
                Ok(_) => redirect("/monitors"),
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            }
        }
        ("POST", ["monitors", "downtimes", id, "delete"]) => match id.parse() {
            Ok(id) if ctx.monitors.remove_downtime(id) => redirect("/monitors"),
            _ => text(StatusCode::NOT_FOUND, "no such downtime created here"),
        },
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET only, except downtimes"),
    }
}

/// A downtime from a request: `scope` and either `duration` (from now) or a schedule.
fn new_downtime(
    monitors: &Monitors,
    now_ns: i64,
    scope: Option<String>,
    duration: Option<String>,
    (start, end, daily): (Option<String>, Option<String>, Option<String>),
    comment: Option<String>,
) -> Result<u64, String> {
    let scope = DowntimeScope::parse(scope.as_deref().unwrap_or("")).map_err(|e| format!("scope: {e}"))?;
    let comment = comment.unwrap_or_default().chars().take(500).collect();
    let id = if let Some(d) = duration {
        let d = crate::local::parse_duration(&d).map_err(|e| format!("duration: {e}"))?;
        monitors.mute_for(scope, now_ns, i64::try_from(d.as_nanos()).unwrap_or(i64::MAX), comment)
    } else {
        let schedule = crate::local::monitor::config::schedule(start.as_deref(), end.as_deref(), daily.as_deref())
            .map_err(|(f, e)| format!("{f}: {e}"))?;
        monitors.add_downtime(crate::local::monitor::config::DowntimeSpec {
            scope,
            schedule,
            comment,
        })
    };
    id.ok_or_else(|| format!("at most {} downtimes", crate::local::monitor::eval::MAX_DOWNTIMES))
}

async fn handle(ctx: Arc<Ctx>, req: Request<hyper::body::Incoming>) -> Reply {
    if !loopback_host(&req) {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "the local web view answers loopback host names only\n",
        );
    }
    if req.method() == Method::POST || req.method() == Method::DELETE {
        return mutate(ctx, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only\n",
        );
    }
    let Some((route, api)) = route(req.uri().path()) else {
        return reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "no such page\n");
    };
    let params = query_params(req.uri().query());
    let now = SystemTime::now();
    let result = tokio::task::spawn_blocking(move || render(&ctx, &route, api, &params, unix_nanos(now))).await;
    match result {
        Ok(r) => r,
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("query failed: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/"), Some((Route::Services, false)));
        assert_eq!(route("/api/v1/services"), Some((Route::Services, true)));
        assert_eq!(route("/api/v1/status"), Some((Route::Status, true)));
        assert_eq!(route("/status"), None);
        assert_eq!(
            route("/services/web%20app/resources/GET%20%2Fapi%2Fapm"),
            Some((Route::Resource("web app".to_owned(), "GET /api/apm".to_owned()), false))
        );
        assert_eq!(
            route("/api/v1/traces/18446744073709551615"),
            Some((Route::Trace(u64::MAX), true))
        );
        assert_eq!(route("/traces/abc"), None);
        assert_eq!(route("/api/v1/traces"), Some((Route::Search, true)));
        assert_eq!(route("/traces"), None);
        assert_eq!(route("/search"), Some((Route::Search, false)));
        assert_eq!(route("/api/v1/service-map"), Some((Route::ServiceMap, true)));
        assert_eq!(route("/map"), Some((Route::ServiceMap, false)));
        assert_eq!(route("/monitors"), Some((Route::Monitors, false)));
        assert_eq!(route("/ledger"), Some((Route::Ledger, false)));
        assert_eq!(route("/api/v1/ledger"), Some((Route::Ledger, true)));
        assert_eq!(route("/api/v1/monitors/events"), Some((Route::MonitorEvents, true)));
        assert_eq!(
            route("/api/v1/services/a/resources/b/versions"),
            Some((Route::ResourceVersions("a".to_owned(), "b".to_owned()), true))
        );
        assert_eq!(route("/services/a/anomalies"), None);
        assert_eq!(route("/services/%zz"), None);
        assert_eq!(route("/services/a/b"), None);
    }
}
