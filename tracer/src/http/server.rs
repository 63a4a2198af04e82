//! The server layer: one `web` span per request, current while the handler runs.

use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::common;
use super::interned;
use super::shell::{Settings, layer_shell};
use super::{HandlerError, Route};
use crate::propagation::{Baggage, Propagator};
use crate::span::{Entered, SpanContext, Str};
use crate::tracer::Span;
use crate::tracer::Tracer;

/// Which baggage items become `baggage.<key>` tags.
#[derive(Debug, Clone)]
enum BaggageTags {
    None,
    All,
    Keys(Vec<String>),
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    client_ip: Option<Option<String>>,
    baggage_tags: BaggageTags,
    warned_fallback: AtomicBool,
}

impl Clone for Shared {
    /// A copy for a reconfigured layer, which warns about its own fallback routes.
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            client_ip: self.client_ip.clone(),
            baggage_tags: self.baggage_tags.clone(),
            warned_fallback: AtomicBool::new(false),
        }
    }
}

/// A tower [`Layer`](tower_layer::Layer) that traces each request of an HTTP server (see the [module
/// docs](super) for the span and for where to add it in an axum app).
#[derive(Debug, Clone)]
pub struct ServerLayer {
    shared: Arc<Shared>,
}

impl ServerLayer {
    /// A server layer with component `tower`, configured from the tracer's configuration
    /// (propagation styles, error statuses, client IP, query-string obfuscation).
    pub fn new(tracer: Tracer) -> Self {
        let config = tracer.config();
        let http = config.http();
        let baggage_tags = match http.baggage_tag_keys() {
            [] => BaggageTags::None,
            keys if keys.iter().any(|k| k == "*") => BaggageTags::All,
            keys => BaggageTags::Keys(keys.to_vec()),
        };
        let client_ip = http
            .client_ip_enabled()
            .then(|| http.client_ip_header().map(str::to_owned));
        let errors = *http.server_error_statuses();
        Self {
            shared: Arc::new(Shared {
                settings: Settings::new(tracer, "tower", errors),
                client_ip,
                baggage_tags,
                warned_fallback: AtomicBool::new(false),
            }),
        }
    }

    /// A server layer for axum (component `axum`); add it with `Router::layer` after the
    /// routes so the resource is the route template.
    #[cfg(feature = "axum")]
    pub fn axum(tracer: Tracer) -> Self {
        Self::new(tracer).with_component("axum")
    }
}

layer_shell!(ServerLayer, ServerService, Shared, "the tracer's `DD_SERVICE`");

/// The route template (a [`Route`] extension, else axum's `MatchedPath`) and the
/// resource `"<method> <template>"`, both shared strings made once per thread and route.
fn route_of(method: &str, ext: &http::Extensions) -> Option<(Str, Str)> {
    if let Some(r) = ext.get::<Route>() {
        return Some(interned::route_and_resource(method, r.as_str()));
    }
    #[cfg(feature = "axum")]
    if let Some(m) = ext.get::<axum::extract::MatchedPath>() {
        return Some(interned::route_and_resource(method, m.as_str()));
    }
    None
}

#[cfg(feature = "axum")]
fn peer_ip(ext: &http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

#[cfg(not(feature = "axum"))]
fn peer_ip(_ext: &http::Extensions) -> Option<std::net::IpAddr> {
    None
}

impl<S, B, RB> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Display,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        if !shared.tracer.config().enabled() {
            // DD_TRACE_ENABLED=false: no span, no header parsing.
            return ServerFuture {
                inner: self.inner.call(req),
                state: None,
            };
        }
        // One pass over the headers: the propagation headers, `Host` and `User-Agent`.
        let found = common::PropagationHeaders::collect(req.headers());
        let incoming = if found.is_empty() || shared.propagator.extract_styles().is_empty() {
            Default::default()
        } else {
            shared.propagator.extract_incoming(&found)
        };
        let method = common::method_str(req.method());
        let (route, resource) = match route_of(&method, req.extensions()) {
            Some((route, resource)) => (Some(route), Resource::Route(resource)),
            None => (None, Resource::Unrouted(common::collapse_path(req.uri().path()))),
        };

        let mut builder = shared
            .tracer
            .span(shared.name.clone())
            .span_type("web")
            .measured()
            .tag("span.kind", "server")
            .tag("component", shared.component.clone())
            .tag("http.method", method.clone())
            .tag("http.url", common::url_with_host(&shared.query, req.uri(), found.host));
        builder = match &incoming.context {
            Some(remote) => builder.child_of(remote),
            None => builder.root(),
        };
        if let Some(service) = &shared.service {
            builder = builder.service(service.clone());
        }
        if let Some(route) = route {
            builder = builder.tag("http.route", route);
        }
        if let Some(ua) = found.user_agent {
            builder = builder.tag("http.useragent", interned::user_agent(ua));
        }
        drop(found);
        if let Some(header) = &shared.client_ip {
            if let Some(ip) = common::client_ip(req.headers(), header.as_deref()) {
                builder = builder.tag("http.client_ip", ip.to_string());
            }
            if let Some(ip) = peer_ip(req.extensions()) {
                builder = builder.tag("network.client.ip", ip.to_string());
            }
        }
        for (tag, value) in common::header_tags(req.headers(), &shared.header_tags, false) {
            builder = builder.tag(tag, value);
        }
        if let Some(id) = incoming.reparent_id {
            builder = builder.tag("_dd.parent_id", id);
        }
        let baggage = incoming.baggage.map(Arc::new);
        if let Some(b) = &baggage {
            for (k, v) in b.iter() {
                let wanted = match &shared.baggage_tags {
                    BaggageTags::None => false,
                    BaggageTags::All => true,
                    BaggageTags::Keys(keys) => keys.iter().any(|w| w == k),
                };
                if wanted {
                    builder = builder.tag(format!("baggage.{k}"), v.to_owned());
                }
            }
            req.extensions_mut().insert(Arc::clone(b));
        }
        let span = builder.start();
        let ctx = span.context();

        let inner = {
            let _entered = Entered::new(ctx.clone());
            let _baggage = baggage.clone().map(Baggage::enter);
            self.inner.call(req)
        };
        ServerFuture {
            inner,
            state: Some(State {
                span,
                ctx,
                baggage,
                shared: Arc::clone(&self.shared),
                method,
                resource,
                resolved: false,
            }),
        }
    }
}

/// What the resource of a request is made of.
enum Resource {
    /// The route template is known: `"<method> <route>"`.
    Route(Str),
    /// No template: the path with id-like segments collapsed.
    Unrouted(String),
}

struct State {
    span: Span,
    ctx: Option<SpanContext>,
    baggage: Option<Arc<Baggage>>,
    shared: Arc<Shared>,
    method: Str,
    resource: Resource,
    /// The resource is set.
    resolved: bool,
}

impl State {
    /// Sets the resource: the route template, `METHOD 404` for an unmatched request, else
    /// the collapsed path (marked and warned about once).
    fn set_resource(&mut self, status: Option<u16>) {
        self.resolved = true;
        let method = self.method.as_str();
        let resource = match (&self.resource, status) {
            (Resource::Route(resource), _) => resource.clone(),
            (Resource::Unrouted(_), Some(404)) => interned::not_found(method),
            (Resource::Unrouted(path), _) => {
                let path = path.as_str();
                self.span.set_tag("_dd.http.route_source", "fallback");
                if !self.shared.warned_fallback.swap(true, Relaxed) {
                    tracing::warn!(
                        target: "tracer::http",
                        "no route template for a request to {path} (status {status:?}): the resource is the path with id-like segments collapsed. \
                         In axum, add tracer::http::ServerLayer with Router::layer after the routes (not around the Router); \
                         elsewhere insert a tracer::http::Route into the request extensions. Logged once."
                    );
                }
                Str::from(common::join(method, path))
            }
        };
        self.span.set_resource(resource);
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("span", &self.span)
            .field(
                "resource",
                &match &self.resource {
                    Resource::Route(resource) => Some(resource),
                    Resource::Unrouted(_) => None,
                },
            )
            .finish_non_exhaustive()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if !self.resolved && self.span.is_recording() {
            // Dropped before a response (the client went away, the server shut down).
            self.set_resource(None);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerService`]: keeps the request span current while
    /// the handler runs and finishes it with the response.
    pub struct ServerFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }
}

impl<F> std::fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFuture")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

impl<F, RB, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let (ctx, baggage) = match this.state.as_ref() {
                Some(s) => (s.ctx.clone(), s.baggage.clone()),
                None => (None, None),
            };
            let _entered = Entered::new(ctx);
            let _baggage = baggage.map(Baggage::enter);
            let inner = this.inner;
            catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        };
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => out,
            Err(panic) => {
                if let Some(mut state) = this.state.take() {
                    let message = panic_message(&*panic);
                    state.set_resource(None);
                    let stack = format!(
                        "panic: {message}\nin the handler of {}",
                        state.span.data().map_or("", |d| d.resource())
                    );
                    state.span.set_error_tags("panic", message, stack);
                }
                resume_unwind(panic);
            }
        };
        let Some(mut state) = this.state.take() else {
            return Poll::Ready(out);
        };
        match &out {
            Ok(response) => {
                let status = response.status();
                state.set_resource(Some(status.as_u16()));
                for (tag, value) in common::header_tags(response.headers(), &state.shared.header_tags, true) {
                    state.span.set_tag(tag, value);
                }
                state
                    .span
                    .set_tag("http.status_code", common::status_str(status.as_u16()));
                if let Some(err) = response.extensions().get::<HandlerError>() {
                    state
                        .span
                        .set_error_tags(err.kind.clone(), err.message.clone(), err.stack.clone());
                } else if state.shared.error_statuses.contains(status.as_u16()) {
                    // As Go's integrations: type and message, no stack (there is none).
                    state.span.set_error_flag(true);
                    state.span.set_tag("error.type", common::status_str(status.as_u16()));
                    state.span.set_tag("error.message", common::status_message(status));
                }
            }
            Err(e) => {
                state.set_resource(None);
                state.span.set_error_flag(true);
                state.span.set_tag("error.type", std::any::type_name::<E>());
                state.span.set_tag("error.message", e.to_string());
            }
        }
        drop(state);
        Poll::Ready(out)
    }
}
