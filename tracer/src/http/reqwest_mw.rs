//! [`ReqwestMiddleware`]: client spans for `reqwest` through `reqwest-middleware`
//! (feature `reqwest`), the same spans as [`ClientLayer`](super::ClientLayer) makes.

use std::sync::Arc;

use reqwest_middleware::{Middleware, Next};

use super::client::Shared;
use crate::span::Str;
use crate::tracer::Instrument;
use crate::tracer::Tracer;

/// A `reqwest-middleware` middleware that traces each request: an `http.request` span of
/// type `http` (child of the current span; `span.kind=client`, `component=reqwest`,
/// `http.method`, `http.url` with the query string obfuscated, `out.host`,
/// `network.destination.port`, `http.status_code`, `DD_TRACE_HEADER_TAGS` headers; resource
/// `GET /users/?`), whose context and the current baggage are injected into the request so
/// the service called continues the trace. A status in `DD_TRACE_HTTP_CLIENT_ERROR_STATUSES`
/// (default 400-499) or an error without a response (connect, timeout, a later middleware)
/// marks the span as an error.
///
/// ```no_run
/// # fn demo(tracer: tracer::Tracer) {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(tracer::http::ReqwestMiddleware::new(tracer))
///     .build();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ReqwestMiddleware {
    shared: Arc<Shared>,
}

impl ReqwestMiddleware {
    /// From the tracer's configuration (injection styles, client error statuses, query
    /// string obfuscation, header tags).
    pub fn new(tracer: Tracer) -> Self {
        Self {
            shared: Arc::new(Shared::new(tracer, "reqwest")),
        }
    }

    /// Sets the operation name (default `http.request`).
    #[must_use]
    pub fn with_operation_name(mut self, name: impl Into<Str>) -> Self {
        Arc::make_mut(&mut self.shared).settings.name = name.into();
        self
    }

    /// Sets the service of the client spans (default: the parent's).
    #[must_use]
    pub fn with_service(mut self, service: impl Into<Str>) -> Self {
        Arc::make_mut(&mut self.shared).settings.service = Some(service.into().into_shared());
        self
    }
}

#[async_trait::async_trait]
impl Middleware for ReqwestMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let shared = &*self.shared;
        if !shared.tracer.config().enabled() {
            return next.run(req, extensions).await;
        }
        // A `Url` is always a valid URI; the fallback only loses the URL in the tags.
        let uri: http::Uri = req.url().as_str().parse().unwrap_or_default();
        let method = req.method().clone();
        let (mut span, ctx) = shared.start(&method, &uri, req.headers_mut());
        let out = next.run(req, extensions).with_context(ctx).await;
        match &out {
            Ok(resp) => shared.on_response(&mut span, resp.status(), resp.headers()),
            Err(reqwest_middleware::Error::Reqwest(e)) => {
                let kind = if e.is_timeout() {
                    "reqwest::Error (timeout)"
                } else if e.is_connect() {
                    "reqwest::Error (connect)"
                } else {
                    "reqwest::Error"
                };
                let message = crate::span::error::with_causes(e.to_string(), e, ": ");
                Shared::on_error(&mut span, kind, message);
                span.set_tag("error.stack", super::common::error_chain(kind, e));
            }
            Err(e @ reqwest_middleware::Error::Middleware(_)) => {
                Shared::on_error(&mut span, "reqwest_middleware::Error", e.to_string());
            }
        }
        drop(span);
        out
    }
}
