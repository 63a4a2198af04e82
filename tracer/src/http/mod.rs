//! HTTP instrumentation as tower layers (feature `tower`; `axum` adds axum's route
//! templates): [`ServerLayer`] makes one span per request of an axum or hyper server,
//! [`ClientLayer`] one span per outgoing request, with the trace context injected so the
//! service called continues the same trace.
//!
//! # The server span
//!
//! Equivalent to what Datadog's Go `net/http` and Python Flask integrations produce:
//!
//! | field / tag | value |
//! |---|---|
//! | name | `http.request` (as Go; [`ServerLayer::with_operation_name`]) |
//! | resource | `GET /users/{id}`: method + route template; `GET 404` when no route matched |
//! | type | `web` |
//! | `span.kind`, `component` | `server`, `axum` ([`ServerLayer::axum`]) or `tower` ([`ServerLayer::new`]) |
//! | `http.method`, `http.route`, `http.status_code` | `GET`, `/users/{id}`, `"200"` |
//! | `http.url` | `http://host:port/users/42?q=<redacted>`: query string obfuscated |
//! | `http.useragent` | the `User-Agent` header |
//! | `http.client_ip`, `network.client.ip` | with `DD_TRACE_CLIENT_IP_ENABLED=true` only |
//! | `baggage.<key>` | W3C baggage items named by `DD_TRACE_BAGGAGE_TAG_KEYS` |
//! | `_dd.measured` | 1 |
//!
//! A status in `DD_TRACE_HTTP_SERVER_ERROR_STATUSES` (default 500-599) makes the span an
//! error with `error.type` = the status code and `error.message` = `"500: Internal Server
//! Error"`, on the server span itself. A handler can give the real error instead: put a
//! [`HandlerError`] in the response's extensions (typically in the `IntoResponse` of the
//! application's error type) and its type, message and source chain become `error.type`,
//! `error.message` and `error.stack`. A handler that panics marks the span as an error
//! (`error.type` = `panic`, the panic message) before the panic continues to unwind. An
//! `Err` from the inner service marks it with the error's type and `Display`.
//!
//! The incoming trace context is extracted per `DD_TRACE_PROPAGATION_STYLE` (default
//! `datadog,tracecontext,baggage`): 128-bit trace ids, sampling priority, origin and
//! `_dd.p.*` tags. Inside the handler the request span is the current span, so spans
//! started there (without an explicit parent) nest under it, across `.await`. Incoming W3C
//! baggage is current too ([`Baggage::current`](crate::propagation::Baggage::current), which
//! the client layer forwards) and in the request's extensions as
//! `Arc<`[`Baggage`](crate::propagation::Baggage)`>`.
//!
//! The span ends when the response head is ready (as in Go's `net/http`); streaming the
//! body is not timed.
//!
//! # Where to add the server layer
//!
//! The route template is known only after routing. axum exposes it (`MatchedPath`) to
//! middleware added with **`Router::layer`** (or `route_layer`) — add the layer last,
//! after the routes:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # fn demo(tracer: tracer::Tracer) {
//! use axum::{Router, routing::get};
//! use tracer::http::ServerLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .layer(ServerLayer::axum(tracer)); // after the routes: sees `/users/{id}`
//! # }
//! ```
//!
//! - `Router::layer`: every request is traced; unmatched paths get `GET 404`.
//! - `Router::route_layer`: only matched routes are traced (404s are not).
//! - Wrapping the whole `Router` from outside (`ServiceBuilder` around it, a layer on the
//!   `make_service`, or a layer on a nested router's parent in some setups) runs before
//!   routing, so no template is known. Likewise with plain hyper, which has no router.
//!   Then the resource is the method and the path **with id-like segments collapsed**
//!   (`GET /users/?/orders`; segments with digits, long ones or encoded data become `?`,
//!   at most 8 segments), the span gets `_dd.http.route_source=fallback`, and a warning is
//!   logged once per layer. A hyper service (or any middleware) that knows the route can
//!   insert a [`Route`] into the request's extensions before this layer sees it.
//!
//! # The client span
//!
//! [`ClientLayer`] wraps any `Service<http::Request<B>>` (hyper-util's `Client`, a
//! `tower::ServiceBuilder` stack): name `http.request`, type `http`, `span.kind=client`,
//! resource `GET /collapsed/path`, `http.url`, `out.host`, `http.status_code`; errors for
//! statuses in `DD_TRACE_HTTP_CLIENT_ERROR_STATUSES` (default 400-499) and for transport
//! errors. It injects the trace context (`DD_TRACE_PROPAGATION_STYLE_INJECT`) and the
//! current [`Baggage`](crate::propagation::Baggage) into the outgoing headers.
//!
//! ```no_run
//! use tower_layer::Layer;
//! use tracer::http::{ClientLayer, ClientService};
//!
//! // `client`: e.g. hyper_util::client::legacy::Client, or a tower stack around it.
//! fn traced<C>(tracer: tracer::Tracer, client: C) -> ClientService<C> {
//!     ClientLayer::new(tracer).layer(client)
//! }
//! ```

mod client;
mod common;
mod interned;
#[cfg(feature = "reqwest")]
mod reqwest_mw;
mod server;
mod shell;

#[cfg(test)]
mod tests;

pub use client::{ClientFuture, ClientLayer, ClientService};
#[cfg(feature = "reqwest")]
pub use reqwest_mw::ReqwestMiddleware;
pub use server::{ServerFuture, ServerLayer, ServerService};

use crate::span::Str;

/// The route template of a request (e.g. `/users/{id}`), for routers other than axum's:
/// insert it into the request's extensions before [`ServerLayer`] sees the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(Str);

impl Route {
    /// A route template. It must not contain ids: it is the span's resource.
    pub fn new(template: impl Into<Str>) -> Self {
        Self(template.into().into_shared())
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The error behind a response, for the server span: insert it into the response's
/// extensions (e.g. in the `IntoResponse` of the application's error type) and the server
/// span gets its `error.type`, `error.message` and `error.stack`, whatever the status.
///
/// ```
/// # #[cfg(feature = "axum")]
/// # mod demo {
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Response};
/// use tracer::http::HandlerError;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the database is unavailable")]
/// struct AppError;
///
/// impl IntoResponse for AppError {
///     fn into_response(self) -> Response {
///         let mut response = (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
///         response.extensions_mut().insert(HandlerError::new(&self));
///         response
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: Str,
    message: Str,
    stack: Str,
}

impl HandlerError {
    /// From an error: its type name, its `Display` and its chain of sources.
    pub fn new<E: std::error::Error + ?Sized>(err: &E) -> Self {
        let kind = std::any::type_name::<E>();
        Self {
            kind: Str::from(kind),
            message: Str::from(err.to_string()),
            stack: Str::from(common::error_chain(kind, err)),
        }
    }

    /// From explicit `error.type`, `error.message` and `error.stack` values.
    pub fn from_parts(kind: impl Into<Str>, message: impl Into<Str>, stack: impl Into<Str>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            stack: stack.into(),
        }
    }

    /// `error.type`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// `error.message`.
    pub fn message(&self) -> &str {
        &self.message
    }
}
