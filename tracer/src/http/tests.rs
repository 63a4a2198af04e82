use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::common::{QueryPolicy, client_ip, collapse_path};
use super::*;
use crate::config::QueryStringMode;
use crate::propagation::Baggage;
use crate::{SpanData, Tracer, TracerConfig};

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A service from a closure returning a future (tower's `service_fn`, without the dep).
#[derive(Clone)]
struct Fn<F>(F);

impl<F, Fut, E> Service<Request<()>> for Fn<F>
where
    F: FnMut(Request<()>) -> Fut,
    Fut: Future<Output = Result<Response<()>, E>> + Send + 'static,
{
    type Response = Response<()>;
    type Error = E;
    type Future = BoxFut<Response<()>, E>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        Box::pin((self.0)(req))
    }
}

/// Returns `Pending` once, so the handler resumes in a later poll.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn tracer(vars: &[(&str, &str)]) -> Tracer {
    let config = TracerConfig::from_source(vars).unwrap_or_default().with_service("web");
    Tracer::without_worker(config)
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|rt| rt.block_on(f))
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn status(code: u16) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r
}

fn request(uri: &str, headers: &[(&str, &str)], route: Option<&'static str>) -> Request<()> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(()).unwrap_or_default();
    if let Some(r) = route {
        req.extensions_mut().insert(Route::new(r));
    }
    req
}

/// Runs one request through `ServerLayer` around a handler answering `code`; returns the
/// spans of the trace.
fn serve(tracer: Tracer, req: Request<()>, code: u16) -> Vec<SpanData> {
    let mut svc =
        ServerLayer::new(tracer).layer(Fn(
            move |_req: Request<()>| async move { Ok::<_, Infallible>(status(code)) },
        ));
    let _ = block_on(svc.call(req));
    tracer.pop_chunk().unwrap_or_default()
}

#[test]
fn a_routed_request_makes_one_web_span() {
    let t = tracer(&[]);
    let spans = serve(
        t,
        request(
            "/users/42?password=hunter2&page=3",
            &[("host", "example.com:5050"), ("user-agent", "curl/8.0")],
            Some("/users/{id}"),
        ),
        200,
    );
    let [s] = spans.as_slice() else { panic!("{spans:?}") };
    assert_eq!(s.name(), "http.request");
    assert_eq!(s.resource(), "GET /users/{id}");
    assert_eq!(s.span_type(), "web");
    assert!(!s.is_error());
    assert!(s.is_top_level());
    assert!(s.measured, "_dd.measured");
    for (k, v) in [
        ("span.kind", "server"),
        ("component", "tower"),
        ("http.method", "GET"),
        ("http.route", "/users/{id}"),
        ("http.status_code", "200"),
        ("http.useragent", "curl/8.0"),
        ("http.url", "http://example.com:5050/users/42?<redacted>&page=3"),
    ] {
        assert_eq!(s.tag(k), Some(v), "{k}: {s:?}");
    }
    assert_eq!(s.tag("_dd.http.route_source"), None);
    assert_eq!(s.tag("http.client_ip"), None, "client IP is off by default");
}

#[test]
fn unmatched_requests_share_one_resource_per_status() {
    let t = tracer(&[]);
    for path in ["/nope/1", "/nope/2", "/favicon.ico"] {
        let spans = serve(t, request(path, &[], None), 404);
        let [s] = spans.as_slice() else { panic!("{spans:?}") };
        assert_eq!(s.resource(), "GET 404");
        assert_eq!(s.tag("http.status_code"), Some("404"));
        assert_eq!(s.tag("http.route"), None);
        assert_eq!(s.tag("_dd.http.route_source"), None);
        assert!(!s.is_error());
    }
}

#[test]
fn without_a_route_the_resource_is_the_path_without_ids() {
    let t = tracer(&[]);
    let spans = serve(t, request("/users/42/orders/9f8e7d6c?x=1", &[], None), 200);
    let [s] = spans.as_slice() else { panic!("{spans:?}") };
    assert_eq!(s.resource(), "GET /users/?/orders/?");
    assert_eq!(s.tag("_dd.http.route_source"), Some("fallback"));
    assert_eq!(s.tag("http.route"), None);
}

#[test]
fn path_collapsing() {
    for (path, want) in [
        ("/", "/"),
        ("", "/"),
        ("/api/apm", "/api/apm"),
        ("/users/42", "/users/?"),
        ("/users/550e8400-e29b-41d4-a716-446655440000/x", "/users/?/x"),
        ("/files/a%20b", "/files/?"),
        ("/u/alice@example.com", "/u/?"),
        ("/x/averyveryverylongsegmentname", "/x/?"),
        ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/…"),
        ("/trailing/", "/trailing/"),
        ("/é", "/?"),
    ] {
        assert_eq!(collapse_path(path), want, "{path}");
    }
}

#[test]
fn server_errors_are_marked_on_the_server_span() {
    let t = tracer(&[]);
    let spans = serve(t, request("/api/error", &[], Some("/api/error")), 500);
    let [s] = spans.as_slice() else { panic!("{spans:?}") };
    assert!(s.is_error());
    assert_eq!(s.tag("error.type"), Some("500"));
    assert_eq!(s.tag("error.message"), Some("500: Internal Server Error"));
    assert_eq!(s.resource(), "GET /api/error");
    // 4xx is not a server error; the configured statuses are.
    let spans = serve(t, request("/x", &[], Some("/x")), 403);
    assert!(!spans[0].is_error());
    let t = tracer(&[("DD_TRACE_HTTP_SERVER_ERROR_STATUSES", "403,500-599")]);
    let spans = serve(t, request("/x", &[], Some("/x")), 403);
    assert!(spans[0].is_error());
}

#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable")]
struct DbDown(#[source] std::io::Error);

#[test]
fn a_handler_error_gives_its_type_message_and_chain() {
    let t = tracer(&[]);
    let mut svc = ServerLayer::new(t).layer(Fn(|_req: Request<()>| async {
        let mut r = status(500);
        r.extensions_mut()
            .insert(HandlerError::new(&DbDown(std::io::Error::other("connection refused"))));
        Ok::<_, Infallible>(r)
    }));
    let _ = block_on(svc.call(request("/api/error", &[], Some("/api/error"))));
    let spans = t.pop_chunk().unwrap_or_default();
    let s = &spans[0];
    assert!(s.is_error());
    assert!(s.tag("error.type").is_some_and(|t| t.ends_with("DbDown")), "{s:?}");
    assert_eq!(s.tag("error.message"), Some("the database is unavailable"));
    assert!(
        s.tag("error.stack")
            .is_some_and(|st| st.ends_with("the database is unavailable\ncaused by: connection refused")),
        "{s:?}"
    );
}

#[test]
fn an_inner_service_error_marks_the_span() {
    let t = tracer(&[]);
    let mut svc = ServerLayer::new(t).layer(Fn(|_req: Request<()>| async { Err::<Response<()>, _>("boom") }));
    assert!(block_on(svc.call(request("/a/1", &[], None))).is_err());
    let spans = t.pop_chunk().unwrap_or_default();
    assert!(spans[0].is_error());
    assert_eq!(spans[0].tag("error.message"), Some("boom"));
    assert_eq!(spans[0].resource(), "GET /a/?");
    assert_eq!(spans[0].tag("http.status_code"), None);
}

#[test]
fn a_panicking_handler_marks_the_span_and_keeps_unwinding() {
    let t = tracer(&[]);
    let mut svc = ServerLayer::new(t).layer(Fn(|_req: Request<()>| async {
        YieldOnce(false).await;
        if true {
            panic!("handler exploded");
        }
        Ok::<_, Infallible>(status(200))
    }));
    let fut = svc.call(request("/boom", &[], Some("/boom")));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on(fut)));
    assert!(caught.is_err(), "the panic continues");
    let spans = t.pop_chunk().unwrap_or_default();
    let [s] = spans.as_slice() else { panic!("{spans:?}") };
    assert!(s.is_error());
    assert_eq!(s.tag("error.type"), Some("panic"));
    assert_eq!(s.tag("error.message"), Some("handler exploded"));
    assert_eq!(s.resource(), "GET /boom");
}

#[test]
fn a_dropped_request_still_finishes_its_span_with_a_resource() {
    let t = tracer(&[]);
    let mut svc = ServerLayer::new(t).layer(Fn(|_req: Request<()>| async {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(status(200))
    }));
    drop(svc.call(request("/slow", &[], Some("/slow"))));
    let spans = t.pop_chunk().unwrap_or_default();
    assert_eq!(spans[0].resource(), "GET /slow");
    assert_eq!(spans[0].tag("http.status_code"), None);
}

#[test]
fn the_request_span_is_current_in_the_handler_across_await() {
    let t = tracer(&[]);
    let seen = Arc::new(Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let mut svc = ServerLayer::new(t).layer(Fn(move |_req: Request<()>| {
        let seen = Arc::clone(&seen2);
        async move {
            YieldOnce(false).await;
            let child = t.span("db.query").start();
            YieldOnce(false).await;
            *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child.span_id());
            drop(child);
            Ok::<_, Infallible>(status(200))
        }
    }));
    let _ = block_on(svc.call(request("/x", &[], Some("/x"))));
    assert!(t.current_context().is_none(), "nothing leaks onto the thread");
    let spans = t.pop_chunk().unwrap_or_default();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| s.name() == "http.request")
        .unwrap_or_else(|| unreachable!());
    let child = spans
        .iter()
        .find(|s| s.name() == "db.query")
        .unwrap_or_else(|| unreachable!());
    assert_eq!(child.parent_id(), server.span_id());
    assert_eq!(child.trace_id(), server.trace_id());
    assert_eq!(
        Some(child.span_id()),
        *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    );
}

#[test]
fn incoming_context_is_continued() {
    let t = tracer(&[]);
    // W3C traceparent, 128-bit.
    let spans = serve(
        t,
        request(
            "/x",
            &[
                ("traceparent", "00-6b01eedd00000000000000000000abcd-00000000000000ef-01"),
                ("tracestate", "dd=s:2;o:rum;t.usr.id:u1"),
            ],
            Some("/x"),
        ),
        200,
    );
    let s = &spans[0];
    assert_eq!(s.trace_id().to_u128(), 0x6b01_eedd_0000_0000_0000_0000_0000_abcd);
    assert_eq!(s.parent_id().to_u64(), 0xef);
    assert!(s.is_top_level());
    // Datadog headers.
    let spans = serve(
        t,
        request(
            "/x",
            &[
                ("x-datadog-trace-id", "123456789"),
                ("x-datadog-parent-id", "987"),
                ("x-datadog-sampling-priority", "2"),
                ("x-datadog-tags", "_dd.p.tid=6b01eedd00000000"),
            ],
            Some("/x"),
        ),
        200,
    );
    let s = &spans[0];
    assert_eq!(s.trace_id().low(), 123_456_789);
    assert_eq!(s.trace_id().high(), 0x6b01_eedd_0000_0000);
    assert_eq!(s.parent_id().to_u64(), 987);
    // Malformed headers: a new trace, no panic.
    let spans = serve(
        t,
        request(
            "/x",
            &[
                ("traceparent", "00-zz-00-01"),
                ("x-datadog-trace-id", "abc"),
                ("b3", "---"),
            ],
            Some("/x"),
        ),
        200,
    );
    assert_eq!(spans[0].parent_id().to_u64(), 0);
    assert_ne!(spans[0].trace_id().low(), 123_456_789);
    // A conflicting W3C parent of the same trace: re-parented, `_dd.parent_id` kept.
    let spans = serve(
        t,
        request(
            "/x",
            &[
                ("x-datadog-trace-id", "42"),
                ("x-datadog-parent-id", "7"),
                ("traceparent", "00-0000000000000000000000000000002a-0000000000000009-01"),
            ],
            Some("/x"),
        ),
        200,
    );
    assert_eq!(spans[0].parent_id().to_u64(), 9);
    assert_eq!(spans[0].tag("_dd.parent_id"), Some("0000000000000007"));
}

#[test]
fn b3_is_read_when_configured() {
    let t = tracer(&[("DD_TRACE_PROPAGATION_STYLE", "b3multi,b3")]);
    let spans = serve(
        t,
        request(
            "/x",
            &[
                ("x-b3-traceid", "0000000000000abc"),
                ("x-b3-spanid", "0000000000000def"),
                ("x-b3-sampled", "1"),
            ],
            Some("/x"),
        ),
        200,
    );
    assert_eq!(
        (spans[0].trace_id().low(), spans[0].parent_id().to_u64()),
        (0xabc, 0xdef)
    );
    let spans = serve(
        t,
        request("/x", &[("b3", "0000000000000abc-0000000000000123-1")], Some("/x")),
        200,
    );
    assert_eq!(spans[0].parent_id().to_u64(), 0x123);
    // Datadog headers are not read with these styles.
    let spans = serve(
        t,
        request(
            "/x",
            &[("x-datadog-trace-id", "42"), ("x-datadog-parent-id", "7")],
            Some("/x"),
        ),
        200,
    );
    assert_eq!(spans[0].parent_id().to_u64(), 0);
}

#[test]
fn baggage_becomes_tags_and_is_current_in_the_handler() {
    let t = tracer(&[]);
    let seen = Arc::new(Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let mut svc = ServerLayer::new(t).layer(Fn(move |_req: Request<()>| {
        let seen = Arc::clone(&seen2);
        async move {
            YieldOnce(false).await;
            *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Baggage::current().and_then(|b| b.get("cart").map(str::to_owned));
            Ok::<_, Infallible>(status(200))
        }
    }));
    let req = request("/x", &[("baggage", "user.id=u%201,cart=c9,secret=s")], Some("/x"));
    let _ = block_on(svc.call(req));
    let spans = t.pop_chunk().unwrap_or_default();
    assert_eq!(spans[0].tag("baggage.user.id"), Some("u 1"));
    assert_eq!(spans[0].tag("baggage.cart"), None, "not in DD_TRACE_BAGGAGE_TAG_KEYS");
    assert_eq!(
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_deref(),
        Some("c9")
    );
    assert!(Baggage::current().is_none());
}

#[test]
fn client_ip_when_enabled() {
    let t = tracer(&[("DD_TRACE_CLIENT_IP_ENABLED", "true")]);
    let spans = serve(
        t,
        request("/x", &[("x-forwarded-for", "10.0.0.1, 203.0.113.7:1234")], Some("/x")),
        200,
    );
    assert_eq!(spans[0].tag("http.client_ip"), Some("203.0.113.7"));

    let mut h = HeaderMap::new();
    h.insert("x-real-ip", http::HeaderValue::from_static("[2001:db8::1]:80"));
    h.insert("x-forwarded-for", http::HeaderValue::from_static("192.168.1.1"));
    assert_eq!(
        client_ip(&h, None).map(|i| i.to_string()).as_deref(),
        Some("2001:db8::1")
    );
    h.remove("x-real-ip");
    assert_eq!(
        client_ip(&h, None).map(|i| i.to_string()).as_deref(),
        Some("192.168.1.1"),
        "private if nothing else"
    );
    h.insert("x-custom", http::HeaderValue::from_static("garbage, 8.8.8.8"));
    assert_eq!(
        client_ip(&h, Some("x-custom")).map(|i| i.to_string()).as_deref(),
        Some("8.8.8.8")
    );
    h.insert("x-custom", http::HeaderValue::from_static("garbage"));
    assert_eq!(client_ip(&h, Some("x-custom")), None);
}

#[test]
fn query_string_policies() {
    let p = |m: QueryStringMode| QueryPolicy::new(&m);
    let url = |p: &QueryPolicy, q| p.url("http", "h:1", "/p", Some(q));
    let default = p(QueryStringMode::DefaultObfuscation);
    assert_eq!(url(&default, "a=1&api_key=XYZ&b=2"), "http://h:1/p?a=1&<redacted>&b=2");
    assert_eq!(url(&default, "token=abc"), "http://h:1/p?<redacted>");
    assert_eq!(url(&default, "q=rust"), "http://h:1/p?q=rust");
    assert_eq!(url(&p(QueryStringMode::Keep), "token=abc"), "http://h:1/p?token=abc");
    assert_eq!(url(&p(QueryStringMode::Drop), "token=abc"), "http://h:1/p");
    assert_eq!(
        url(
            &p(QueryStringMode::Obfuscate(r"ssn=\d{3}-\d{2}-\d{4}".into())),
            "ssn=123-45-6789&token=x"
        ),
        "http://h:1/p?<redacted>&token=x"
    );
    assert_eq!(
        url(&p(QueryStringMode::Obfuscate("(".into())), "a=1"),
        "http://h:1/p?<redacted>"
    );
    assert_eq!(default.url("http", "", "/p", None), "/p");
}

#[test]
fn the_client_layer_makes_a_client_span_and_injects_its_context() {
    let t = tracer(&[]);
    let sent = Arc::new(Mutex::new(HeaderMap::new()));
    let sent2 = Arc::clone(&sent);
    let mut client = ClientLayer::new(t).layer(Fn(move |req: Request<()>| {
        *sent2.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = req.headers().clone();
        async { Ok::<_, Infallible>(status(404)) }
    }));
    let parent = t.span("parent").start();
    let mut b = Baggage::new();
    b.insert("user.id", "u1");
    {
        let _entered = parent.enter();
        let _bag = Baggage::enter(Arc::new(b));
        let fut = client.call(request("http://svc-b:8080/users/42?token=abc", &[], None));
        let _ = block_on(fut);
    }
    let parent_id = parent.span_id();
    let trace_id = parent.trace_id();
    drop(parent);
    let spans = t.pop_chunk().unwrap_or_default();
    let c = spans
        .iter()
        .find(|s| s.name() == "http.request")
        .unwrap_or_else(|| unreachable!());
    assert_eq!(c.parent_id(), parent_id);
    assert_eq!(c.trace_id(), trace_id);
    assert_eq!(c.span_type(), "http");
    assert_eq!(c.resource(), "GET /users/?");
    for (k, v) in [
        ("span.kind", "client"),
        ("http.method", "GET"),
        ("http.url", "http://svc-b:8080/users/42?<redacted>"),
        ("out.host", "svc-b"),
        ("http.status_code", "404"),
        ("error.type", "404"),
    ] {
        assert_eq!(c.tag(k), Some(v), "{k}: {c:?}");
    }
    assert!(c.is_error(), "4xx is a client error");
    let h = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!(h["x-datadog-trace-id"], trace_id.low().to_string());
    assert_eq!(h["x-datadog-parent-id"], c.span_id().to_u64().to_string());
    assert_eq!(
        h["traceparent"],
        format!("00-{}-{}-01", trace_id.to_hex(), c.span_id().to_hex())
    );
    assert_eq!(h["baggage"], "user.id=u1");
}

#[test]
fn client_to_server_is_one_trace() {
    // Service A's client layer calls service B's server layer in-process.
    let t = tracer(&[]);
    let server = ServerLayer::new(t).layer(Fn(|_req: Request<()>| async { Ok::<_, Infallible>(status(200)) }));
    let server = Arc::new(Mutex::new(server));
    let mut client = ClientLayer::new(t).layer(Fn(move |req: Request<()>| {
        server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .call(req)
    }));
    let root = t.span("a.job").start();
    let root_trace = root.trace_id();
    {
        let _e = root.enter();
        let mut req = request("http://b/x", &[], None);
        req.extensions_mut().insert(Route::new("/x"));
        let _ = block_on(client.call(req));
    }
    drop(root);
    // B's server span is its own chunk (a remote-parented local root) or shares A's.
    let mut spans = Vec::new();
    while let Some(chunk) = t.pop_chunk() {
        spans.extend(chunk);
    }
    let c = spans
        .iter()
        .find(|s| s.tag("span.kind") == Some("client"))
        .unwrap_or_else(|| unreachable!());
    let srv = spans
        .iter()
        .find(|s| s.tag("span.kind") == Some("server"))
        .unwrap_or_else(|| unreachable!());
    assert_eq!(srv.trace_id(), root_trace);
    assert_eq!(srv.parent_id(), c.span_id());
}

#[test]
fn a_disabled_tracer_passes_requests_through() {
    let t = tracer(&[("DD_TRACE_ENABLED", "false")]);
    let spans = serve(
        t,
        request(
            "/x",
            &[("traceparent", "00-0000000000000000000000000000002a-000000000000000b-01")],
            Some("/x"),
        ),
        500,
    );
    assert!(spans.is_empty());
}

#[test]
fn propagation_headers_are_found_in_one_pass() {
    use crate::propagation::Extractor;
    let mut h = HeaderMap::new();
    h.insert("host", http::HeaderValue::from_static("a"));
    h.append("x-datadog-trace-id", http::HeaderValue::from_static("1"));
    h.append("x-datadog-trace-id", http::HeaderValue::from_static("2"));
    h.insert("traceparent", http::HeaderValue::from_static("tp"));
    h.insert(
        "b3",
        http::HeaderValue::from_bytes(b"\xff").unwrap_or_else(|_| unreachable!()),
    );
    h.insert("baggage", http::HeaderValue::from_static("k=v"));
    h.insert("x-other", http::HeaderValue::from_static("o"));
    let found = super::common::PropagationHeaders::collect(&h);
    assert_eq!(
        found.get("x-datadog-trace-id"),
        Some("1"),
        "the first value, as HeaderMap::get"
    );
    assert_eq!(found.get("traceparent"), Some("tp"));
    assert_eq!(found.get("baggage"), Some("k=v"));
    assert_eq!(found.get("b3"), None, "not UTF-8");
    assert_eq!(found.get("host"), None);
    assert_eq!(found.get("x-other"), None);
    assert_eq!(found.host, Some("a"), "Host is found in the same pass");
    assert_eq!(found.user_agent, None);
    // The first User-Agent counts, as with HeaderMap::get; one that is not visible ASCII is none.
    let mut h = HeaderMap::new();
    h.append("user-agent", http::HeaderValue::from_static("first/1"));
    h.append("user-agent", http::HeaderValue::from_static("second/2"));
    assert_eq!(
        super::common::PropagationHeaders::collect(&h).user_agent,
        Some("first/1")
    );
    let mut h = HeaderMap::new();
    h.append(
        "user-agent",
        http::HeaderValue::from_bytes(b"\xff").unwrap_or_else(|_| unreachable!()),
    );
    h.append("user-agent", http::HeaderValue::from_static("second/2"));
    assert_eq!(super::common::PropagationHeaders::collect(&h).user_agent, None);
    // Many propagation-looking headers: bounded, no panic.
    let mut h = HeaderMap::new();
    for i in 0..40 {
        let name = http::HeaderName::from_bytes(format!("x-datadog-{i}").as_bytes()).unwrap_or_else(|_| unreachable!());
        h.insert(name, http::HeaderValue::from_static("v"));
    }
    assert!(!super::common::PropagationHeaders::collect(&h).is_empty());
    assert!(super::common::PropagationHeaders::collect(&HeaderMap::new()).is_empty());
}

#[test]
fn header_tags_on_server_and_client_spans() {
    let t = tracer(&[(
        "DD_TRACE_HEADER_TAGS",
        "X-Request-Id, x-tenant:tenant, x-resp, x-absent",
    )]);
    let reply = || {
        let mut r = status(200);
        r.headers_mut().insert("x-resp", http::HeaderValue::from_static("r1"));
        r.headers_mut().append("x-resp", http::HeaderValue::from_static("r2"));
        r.headers_mut()
            .insert("x-tenant", http::HeaderValue::from_static("from-response"));
        r
    };
    let mut svc = ServerLayer::new(t).layer(Fn(move |_req: Request<()>| async move { Ok::<_, Infallible>(reply()) }));
    let _ = block_on(svc.call(request(
        "/a",
        &[("x-request-id", " abc "), ("X-Tenant", "acme"), ("x-other", "no")],
        Some("/a"),
    )));
    let spans = t.pop_chunk().unwrap_or_default();
    let [s] = spans.as_slice() else { panic!("{spans:?}") };
    assert_eq!(s.tag("http.request.headers.x-request-id"), Some("abc"));
    assert_eq!(
        s.tag("tenant"),
        Some("from-response"),
        "a mapped tag: the response's value is the last set"
    );
    assert_eq!(s.tag("http.response.headers.x-resp"), Some("r1,r2"));
    assert!(s.tags().all(|(k, _)| !k.contains("x-other") && !k.contains("x-absent")));

    let mut client =
        ClientLayer::new(t).layer(Fn(move |_req: Request<()>| async move { Ok::<_, Infallible>(reply()) }));
    let _ = block_on(client.call(request("http://b/x", &[("x-request-id", "req-1")], None)));
    let spans = t.pop_chunk().unwrap_or_default();
    let [c] = spans.as_slice() else { panic!("{spans:?}") };
    assert_eq!(c.tag("span.kind"), Some("client"));
    assert_eq!(c.tag("http.request.headers.x-request-id"), Some("req-1"));
    assert_eq!(c.tag("http.response.headers.x-resp"), Some("r1,r2"));
    assert_eq!(c.tag("tenant"), Some("from-response"));
}
