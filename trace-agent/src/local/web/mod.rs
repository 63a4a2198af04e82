//! The web view and its JSON API, served on loopback by the agent (default
//! `127.0.0.1:8128`, `apm_config.local.web_port`).
//!
//! | page | JSON |
//! |---|---|
//! | `/` services | `/api/v1/services?window=5m\|1h\|1d` |
//! | `/services/{service}` | `/api/v1/services/{service}?window=&operation=` |
//! | `/services/{service}/resources/{resource}` | `/api/v1/services/{service}/resources/{resource}?window=&operation=` |
//! | `/traces/{trace_id}` | `/api/v1/traces/{trace_id}` |
//! | | `/api/v1/status` (store counters) |
//!
//! Path segments are percent-encoded (a resource like `GET /api` is `GET%20%2Fapi`); trace ids
//! are the decimal low 64 bits. Requests whose `Host` is not a loopback name are refused (DNS
//! rebinding); queries run on blocking threads, never on the runtime's workers.

pub mod html;
pub mod pages;

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
use super::query::{self, Window};
use super::store::unix_nanos;
use crate::receiver::server::BindError;
use html::{decode_component, query_params};
use pages::Frame;

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

/// Serves the web view on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, store: LocalStore, mut shutdown: watch::Receiver<bool>) {
    let store = Arc::new(store);
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
    Resource(String, String),
    Trace(u64),
    Status,
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
        ["services", s, "resources", r] => Route::Resource(dec(s)?, dec(r)?),
        ["traces", id] => Route::Trace(id.parse().ok()?),
        _ => return None,
    };
    Some((r, api))
}

async fn handle(store: Arc<LocalStore>, req: Request<hyper::body::Incoming>) -> Reply {
    if !loopback_host(&req) {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "the local web view answers loopback host names only\n",
        );
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
    let param = |k: &str| params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let window = param("window").and_then(|w| Window::parse(&w)).unwrap_or_default();
    let operation = param("operation").filter(|o| !o.is_empty());
    let now = SystemTime::now();
    let result =
        tokio::task::spawn_blocking(move || render(&store, &route, api, window, operation, unix_nanos(now))).await;
    match result {
        Ok(r) => r,
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("query failed: {e}\n"),
        ),
    }
}

/// `path` plus `&k=v…` parameters as a query string.
fn with_query(path: String, params: &str) -> String {
    match params.strip_prefix('&') {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

fn render(
    store: &LocalStore,
    route: &Route,
    api: bool,
    window: Window,
    operation: Option<String>,
    now_ns: i64,
) -> Reply {
    let status = store.status();
    let op = operation.as_deref();
    let op_q = op
        .map(|o| format!("&operation={}", html::encode_segment(o)))
        .unwrap_or_default();
    let frame = |title: &str, crumbs: Vec<(String, String)>, self_path: String, window: Option<Window>| {
        (title.to_owned(), crumbs, self_path, window)
    };
    let fail = |e: rusqlite::Error| {
        tracing::warn!(error = %e, "local web view: query failed");
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("query failed: {e}\n"),
        )
    };
    let build = |(title, crumbs, self_path, window): (String, Vec<(String, String)>, String, Option<Window>),
                 body: &dyn Fn(&Frame<'_>) -> String| {
        let f = Frame {
            title: &title,
            crumbs,
            self_path,
            window,
            status: &status,
            now_ns,
        };
        reply(StatusCode::OK, "text/html; charset=utf-8", body(&f))
    };
    let not_found = |fr, what: &str| {
        let mut r = build(fr, &|f| pages::not_found(f, what));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    match route {
        Route::Status => json(StatusCode::OK, &status),
        Route::Services => match store.read(|c| query::services(c, now_ns, window)) {
            Err(e) => fail(e),
            Ok(list) if api => json(StatusCode::OK, &list),
            Ok(list) => build(frame("Services", vec![], "/".to_owned(), Some(window)), &|f| {
                pages::services(f, &list, window)
            }),
        },
        Route::Service(service) => {
            let enc = html::encode_segment(service);
            let fr = frame(
                service,
                vec![(service.clone(), format!("/services/{enc}?window={}", window.as_str()))],
                with_query(format!("/services/{enc}"), &op_q),
                Some(window),
            );
            match store.read(|c| query::service(c, service, op, now_ns, window)) {
                Err(e) => fail(e),
                Ok(d) if api => json(
                    if d.is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    },
                    &d,
                ),
                Ok(Some(d)) => build(fr, &|f| pages::service(f, &d, window)),
                Ok(None) => not_found(fr, &format!("service {service}")),
            }
        }
        Route::Resource(service, resource) => {
            let enc = html::encode_segment(service);
            let renc = html::encode_segment(resource);
            let fr = frame(
                resource,
                vec![
                    (service.clone(), format!("/services/{enc}?window={}", window.as_str())),
                    (
                        resource.clone(),
                        format!("/services/{enc}/resources/{renc}?window={}{op_q}", window.as_str()),
                    ),
                ],
                with_query(format!("/services/{enc}/resources/{renc}"), &op_q),
                Some(window),
            );
            match store.read(|c| query::resource(c, service, op, resource, now_ns, window)) {
                Err(e) => fail(e),
                Ok(d) if api => json(
                    if d.is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    },
                    &d,
                ),
                Ok(Some(d)) => build(fr, &|f| pages::resource(f, &d)),
                Ok(None) => not_found(fr, &format!("resource {resource} of {service}")),
            }
        }
        Route::Trace(id) => {
            let fr = frame(&format!("Trace {id}"), vec![], format!("/traces/{id}"), None);
            match store.read(|c| query::trace(c, *id)) {
                Err(e) => fail(e),
                Ok(t) if api => json(
                    if t.is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    },
                    &t,
                ),
                Ok(Some(t)) => {
                    let fr = match (&t.root_service, &t.root_resource) {
                        (Some(s), Some(r)) => frame(
                            &format!("Trace {id}"),
                            vec![
                                (s.clone(), format!("/services/{}", html::encode_segment(s))),
                                (
                                    r.clone(),
                                    format!(
                                        "/services/{}/resources/{}",
                                        html::encode_segment(s),
                                        html::encode_segment(r)
                                    ),
                                ),
                            ],
                            format!("/traces/{id}"),
                            None,
                        ),
                        _ => fr,
                    };
                    build(fr, &|f| pages::trace(f, &t))
                }
                Ok(None) => not_found(fr, &format!("trace {id}")),
            }
        }
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
        assert_eq!(route("/services/%zz"), None);
        assert_eq!(route("/services/a/b"), None);
    }
}
