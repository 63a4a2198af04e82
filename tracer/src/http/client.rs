//! The client layer: one `http` span per outgoing request, its context injected into the
//! request headers.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::common;
use super::shell::{Settings, layer_shell};
use crate::propagation::{Baggage, Propagator};
use crate::span::{Entered, SpanContext, Str};
use crate::tracer::Span;
use crate::tracer::Tracer;

/// What every client span of one layer (or middleware) shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
}

impl Shared {
    /// From the tracer's configuration, with `component`.
    pub(crate) fn new(tracer: Tracer, component: &'static str) -> Self {
        let errors = *tracer.config().http().client_error_statuses();
        Self {
            settings: Settings::new(tracer, component, errors),
        }
    }

    /// Starts the client span of a request (a child of the current span) and injects its
    /// context and the current baggage into `headers`.
    pub(crate) fn start(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
    ) -> (Span, Option<SpanContext>) {
        let method = common::method_str(method);
        let path = common::collapse_path(uri.path());
        let mut builder = self
            .tracer
            .span(self.name.clone())
            .span_type("http")
            .resource(common::join(&method, &path))
            .tag("span.kind", "client")
            .tag("component", self.component.clone())
            .tag("http.method", method)
            .tag("http.url", common::request_url(&self.query, uri, headers));
        if let Some(host) = uri.host() {
            builder = builder.tag("out.host", host.to_owned());
        }
        if let Some(port) = uri.port_u16() {
            builder = builder.metric("network.destination.port", f64::from(port));
        }
        if let Some(service) = &self.service {
            builder = builder.service(service.clone());
        }
        // The application's headers, before ours are added.
        for (tag, value) in common::header_tags(headers, &self.header_tags, false) {
            builder = builder.tag(tag, value);
        }
        let span = builder.start();
        let ctx = span.context();
        if let Some(ctx) = &ctx {
            self.propagator.inject(&self.tracer, ctx, headers);
        }
        if let Some(baggage) = Baggage::current() {
            self.propagator.inject_baggage(&baggage, headers);
        }
        (span, ctx)
    }

    /// Finishes `span` with a response: status code, header tags, error for a client
    /// error status.
    pub(crate) fn on_response(&self, span: &mut Span, status: http::StatusCode, headers: &http::HeaderMap) {
        span.set_tag("http.status_code", common::status_str(status.as_u16()));
        for (tag, value) in common::header_tags(headers, &self.header_tags, true) {
            span.set_tag(tag, value);
        }
        if self.error_statuses.contains(status.as_u16()) {
            span.set_error_flag(true);
            span.set_tag("error.type", common::status_str(status.as_u16()));
            span.set_tag("error.message", common::status_message(status));
        }
    }

    /// Finishes `span` with an error that produced no response.
    pub(crate) fn on_error(span: &mut Span, error_type: &str, message: String) {
        span.set_error_flag(true);
        span.set_tag("error.type", error_type.to_owned());
        span.set_tag("error.message", message);
    }
}

/// A tower [`Layer`](tower_layer::Layer) that traces each outgoing HTTP request and injects the trace context
/// (and the current baggage) into its headers. The span's parent is the current span.
#[derive(Debug, Clone)]
pub struct ClientLayer {
    shared: Arc<Shared>,
}

impl ClientLayer {
    /// A client layer configured from the tracer's configuration (injection styles,
    /// client error statuses, query-string obfuscation); component `tower`.
    pub fn new(tracer: Tracer) -> Self {
        Self {
            shared: Arc::new(Shared::new(tracer, "tower")),
        }
    }
}

layer_shell!(ClientLayer, ClientService, Shared, "the parent's");

impl<S, B, RB> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Display,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let (span, ctx) = self.shared.start(&method, &uri, req.headers_mut());
        let inner = {
            let _entered = Entered::new(ctx.clone());
            self.inner.call(req)
        };
        ClientFuture {
            inner,
            span: Some(span),
            ctx,
            shared: Arc::clone(&self.shared),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ClientService`]: finishes the client span with the
    /// response status or the error.
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        ctx: Option<SpanContext>,
        shared: Arc<Shared>,
    }
}

impl<F> std::fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = {
            let _entered = Entered::new(this.ctx.clone());
            match this.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(out) => out,
            }
        };
        if let Some(mut span) = this.span.take() {
            match &out {
                Ok(response) => this
                    .shared
                    .on_response(&mut span, response.status(), response.headers()),
                Err(e) => Shared::on_error(&mut span, std::any::type_name::<E>(), e.to_string()),
            }
        }
        Poll::Ready(out)
    }
}
