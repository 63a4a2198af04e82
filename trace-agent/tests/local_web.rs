//! The local web view and its JSON API over real HTTP: the pages show the stored figures
//! (exact hits and errors, ordered percentiles), escape stored strings, and refuse what a
//! loopback-only view must refuse.

#[path = "common/spans.rs"]
mod spans;
#[path = "common/webhook.rs"]
mod webhook;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trace_agent::local::{LocalConfig, LocalStore, unix_nanos, web};
use trace_agent::stats::sketch::Sketch;
use trace_agent::upstream::pb;
use webhook::webhook_receiver;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn span(trace: u64, id: u64, parent: u64, names: (&str, &str, &str), start: i64, dur: i64) -> pb::Span {
    spans::span((trace, id, parent), names, start, dur, ("http.method", "GET"))
}

fn traces(chunks: Vec<Vec<pb::Span>>) -> Arc<pb::TracerPayload> {
    Arc::new(pb::TracerPayload {
        chunks: spans::kept_chunks(chunks),
        ..pb::TracerPayload::default()
    })
}

/// An encoded sketch of `latencies_ms` (empty bytes for none).
fn sketch_of(latencies_ms: impl IntoIterator<Item = f64>) -> Vec<u8> {
    let mut s = Sketch::new();
    for ms in latencies_ms {
        s.add(ms * 1e6).unwrap();
    }
    if s.is_empty() { Vec::new() } else { s.encode() }
}

/// `hits` top-level `http.request` spans of `service`/`resource`, `errors` of them failing
/// (durations and sketches left to the caller).
fn group(service: &str, resource: &str, hits: u64, errors: u64) -> pb::ClientGroupedStats {
    pb::ClientGroupedStats {
        service: service.to_owned(),
        name: "http.request".to_owned(),
        resource: resource.to_owned(),
        hits,
        errors,
        top_level_hits: hits,
        ..pb::ClientGroupedStats::default()
    }
}

/// A stats payload of env `test` and `version` holding `group` in the 10 s bucket at `start`.
fn group_payload(start: i64, version: &str, group: pb::ClientGroupedStats) -> Arc<pb::StatsPayload> {
    Arc::new(pb::StatsPayload {
        stats: vec![pb::ClientStatsPayload {
            env: "test".to_owned(),
            version: version.to_owned(),
            stats: vec![pb::ClientStatsBucket {
                start: start as u64,
                duration: 10 * SEC as u64,
                stats: vec![group],
                ..pb::ClientStatsBucket::default()
            }],
            ..pb::ClientStatsPayload::default()
        }],
        ..pb::StatsPayload::default()
    })
}

/// A bucket of `hits` spans of `resource` with latencies 1..=hits ms, the last `errors` failing.
fn stats(start: i64, service: &str, resource: &str, hits: u64, errors: u64) -> Arc<pb::StatsPayload> {
    group_payload(
        start,
        "",
        pb::ClientGroupedStats {
            duration: (1..=hits).sum::<u64>() * MS as u64,
            ok_summary: sketch_of((1..=hits - errors).map(|v| v as f64)),
            error_summary: sketch_of((hits - errors + 1..=hits).map(|v| v as f64)),
            ..group(service, resource, hits, errors)
        },
    )
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

fn request(addr: SocketAddr, method: &str, path: &str, host: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    let r = request(addr, "GET", path, &addr.to_string());
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r
}

/// The attributes of the element whose `attr` is `value` (a `<tr data-resource="…" …>`).
fn row_attrs<'a>(html: &'a str, attr: &str, value: &str) -> &'a str {
    let needle = format!("{attr}=\"{value}\"");
    let at = html.find(&needle).unwrap_or_else(|| panic!("no element with {needle}"));
    let end = html[at..].find('>').unwrap() + at;
    &html[at..end]
}

fn attr<'a>(attrs: &'a str, name: &str) -> &'a str {
    let needle = format!(" {name}=\"");
    let at = attrs.find(&needle).unwrap_or_else(|| panic!("no {name} in {attrs}")) + needle.len();
    let end = attrs[at..].find('"').unwrap() + at;
    &attrs[at..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_show_the_stored_figures() {
    let (_dir, store) = temp_store();
    let now = unix_nanos(SystemTime::now());
    let bucket = now - now.rem_euclid(10 * SEC) - 10 * SEC;
    store.push_stats(stats(bucket, "shop", "GET /cart", 12, 3));
    store.push_stats(stats(bucket - 10 * SEC, "shop", "GET /cart", 8, 0));
    store.push_stats(stats(bucket, "shop", "POST /pay <b>", 5, 5));
    store.push_stats(stats(bucket, "<script>alert(1)</script>", "x", 1, 0));
    let root = span(42, 1, 0, ("shop", "http.request", "GET /cart"), now - 2 * SEC, 40 * MS);
    let child = span(
        42,
        2,
        1,
        ("postgres", "pg.query", "SELECT 1"),
        now - 2 * SEC + 5 * MS,
        20 * MS,
    );
    let mut failing = span(
        42,
        3,
        2,
        ("postgres", "pg.fetch", "fetch"),
        now - 2 * SEC + 10 * MS,
        5 * MS,
    );
    failing.error = 1;
    failing.meta.insert("error.type".to_owned(), "IOError".to_owned());
    failing
        .meta
        .insert("error.message".to_owned(), "<lost> connection".to_owned());
    failing
        .meta
        .insert("error.stack".to_owned(), "at fetch()\nat query()".to_owned());
    store.push_traces(traces(vec![vec![root, child, failing]]));
    assert!(tokio::task::block_in_place(|| store.sync(Duration::from_secs(10))));

    check_view(&store, move |addr| {
        assert!(addr.ip().is_loopback());
        // Services.
        let page = get(addr, "/?window=5m").body;
        let shop = row_attrs(&page, "data-service", "shop");
        assert_eq!((attr(shop, "data-hits"), attr(shop, "data-errors")), ("25", "8"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert(1)"), "stored strings are escaped");
        assert!(page.contains("<svg class=\"chart\""));

        // A service's resources.
        let page = get(addr, "/services/shop?window=5m").body;
        let cart = row_attrs(&page, "data-resource", "GET /cart");
        assert_eq!((attr(cart, "data-hits"), attr(cart, "data-errors")), ("20", "3"));
        let (p50, p95, p99): (f64, f64, f64) = (
            attr(cart, "data-p50").parse().unwrap(),
            attr(cart, "data-p95").parse().unwrap(),
            attr(cart, "data-p99").parse().unwrap(),
        );
        assert!(
            p50 > 0.0 && p50 <= p95 && p95 <= p99 && p99 <= 12.5e6,
            "{p50} {p95} {p99}"
        );
        let pay = row_attrs(&page, "data-resource", "POST /pay &lt;b&gt;");
        assert_eq!(
            (
                attr(pay, "data-hits"),
                attr(pay, "data-errors"),
                attr(pay, "data-erate")
            ),
            ("5", "5", "1")
        );
        assert!(page.contains("href=\"/services/shop/resources/GET%20%2Fcart?window=5m&amp;operation=http.request\""));

        // A resource.
        let page = get(addr, "/services/shop/resources/GET%20%2Fcart?window=5m").body;
        assert!(page.contains("<svg class=\"chart dist\""));
        assert!(page.contains("href=\"/traces/42\""), "the stored trace is listed");

        // A trace.
        let page = get(addr, "/traces/42").body;
        let ids: Vec<&str> = page
            .match_indices("data-span-id=\"")
            .map(|(i, _)| &page[i + 14..i + 15])
            .collect();
        assert_eq!(ids, ["1", "2", "3"], "depth-first waterfall");
        assert_eq!(attr(row_attrs(&page, "data-span-id", "3"), "data-depth"), "2");
        assert!(page.contains("&lt;lost&gt; connection") && page.contains("at fetch()\nat query()"));
        assert!(!page.contains("<lost>"));
        assert!(
            page.contains("data-error-span=\"3\""),
            "the error is listed under the waterfall"
        );

        // JSON API.
        let api: serde_json::Value = serde_json::from_str(&get(addr, "/api/v1/services?window=5m").body).unwrap();
        let shop = api.as_array().unwrap().iter().find(|s| s["service"] == "shop").unwrap();
        assert_eq!((shop["hits"].as_u64(), shop["errors"].as_u64()), (Some(25), Some(8)));
        assert_eq!(shop["series"].as_array().unwrap().len(), 30);
        let svc: serde_json::Value = serde_json::from_str(&get(addr, "/api/v1/services/shop?window=5m").body).unwrap();
        let resources = rows(&svc["resources"], |r| (str_of(r, "resource"), u64_of(r, "hits")));
        assert_eq!(resources, [("GET /cart", 20), ("POST /pay <b>", 5)]);
        let res: serde_json::Value =
            serde_json::from_str(&get(addr, "/api/v1/services/shop/resources/GET%20%2Fcart?window=5m").body).unwrap();
        assert_eq!(res["figures"]["hits"], 20);
        assert_eq!(res["traces"][0]["trace_id"], "42");
        let trace: serde_json::Value = serde_json::from_str(&get(addr, "/api/v1/traces/42").body).unwrap();
        let depths = rows(&trace["spans"], |s| u64_of(s, "depth"));
        assert_eq!(depths, [0, 1, 2]);
        assert_eq!(trace["spans"][2]["meta"]["error.type"], "IOError");
        let status: serde_json::Value = serde_json::from_str(&get(addr, "/api/v1/status").body).unwrap();
        assert_eq!(status["mode"]["kind"], "file");
        assert_eq!(status["spans_written"], 3);

        // What a loopback view refuses or does not know.
        assert_eq!(request(addr, "GET", "/", "evil.example:80").status, 403);
        assert_eq!(request(addr, "POST", "/", &addr.to_string()).status, 405);
        assert_eq!(request(addr, "GET", "/nope", &addr.to_string()).status, 404);
        assert_eq!(request(addr, "GET", "/traces/7", &addr.to_string()).status, 404);
        assert_eq!(
            request(addr, "GET", "/api/v1/services/nobody", &addr.to_string()).status,
            404
        );
        let r = get(addr, "/");
        assert!(r.headers.to_ascii_lowercase().contains("content-security-policy"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_says_how_to_send_traces_and_a_fallback_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.sqlite3"), vec![7u8; 4096]).unwrap();
    let store = LocalStore::open(LocalConfig::in_dir(dir.path())).unwrap();
    check_view(&store, move |addr| {
        let page = get(addr, "/").body;
        assert!(page.contains("id=\"no-data\"") && page.contains("DD_TRACE_AGENT_URL"));
        assert!(page.contains("id=\"store-fallback\"") && page.contains("not a usable database"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_service_starts_store_and_view_and_names_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalConfig {
        web_port: 0,
        ..LocalConfig::in_dir(dir.path())
    };
    let local = trace_agent::local::LocalService::start(config.clone()).await.unwrap();
    let addr = local.web_addr();
    assert_eq!(local.web_url(), format!("http://{addr}"));
    let page = tokio::task::spawn_blocking(move || get(addr, "/api/v1/status").body)
        .await
        .unwrap();
    assert!(page.contains("\"kind\":\"file\""), "{page}");

    let taken = LocalConfig {
        web_port: addr.port(),
        ..LocalConfig::in_dir(&dir.path().join("other"))
    };
    let err = trace_agent::local::LocalService::start(taken)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("apm_config.local.web_port"), "{err}");

    local.store().push_traces(traces(vec![vec![span(
        9,
        1,
        0,
        ("svc", "op", "res"),
        unix_nanos(SystemTime::now()),
        MS,
    )]]));
    let status = local.shutdown(Duration::from_secs(10)).await;
    assert_eq!(status.chunks_written, 1, "shutdown writes what was queued");
    assert!(std::net::TcpStream::connect(addr).is_err(), "the web view stopped");
}

/// A raw HTTP/1.1 exchange with extra headers and a body.
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    Reply {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

fn json_of(addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(addr, path).body).unwrap()
}

/// A stats bucket with a version, `hits` spans of `ms` ms each (the last `errors` failing).
#[allow(clippy::too_many_arguments)]
/// `f` of each element of the JSON array `list` (a panic when it is not one).
fn rows<'a, T>(list: &'a serde_json::Value, f: impl FnMut(&'a serde_json::Value) -> T) -> Vec<T> {
    list.as_array().unwrap().iter().map(f).collect()
}

/// The string field `key` of `v` (a panic when it is not one).
fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// The unsigned field `key` of `v`.
fn u64_of(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not a u64 in {v}"))
}

/// The boolean field `key` of `v`.
fn bool_of(v: &serde_json::Value, key: &str) -> bool {
    v[key].as_bool().unwrap_or_else(|| panic!("{key} is not a bool in {v}"))
}

/// A bucket of `hits` spans of `resource` on `version`, each lasting `ms`, `errors` failing.
fn stats_at(
    start: i64,
    service: &str,
    resource: &str,
    version: &str,
    hits: u64,
    errors: u64,
    ms: f64,
) -> Arc<pb::StatsPayload> {
    group_payload(
        start,
        version,
        pb::ClientGroupedStats {
            duration: (ms * 1e6) as u64 * hits,
            ok_summary: sketch_of((0..hits - errors).map(|_| ms)),
            error_summary: sketch_of((0..errors).map(|_| ms)),
            ..group(service, resource, hits, errors)
        },
    )
}

/// A store in a fresh temporary directory (removed when the returned guard drops).
fn temp_store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(LocalConfig::in_dir(dir.path())).unwrap();
    (dir, store)
}

/// Serves the web view of `store` on a free port, runs the blocking `checks` against its
/// address, then stops it (within 10 s).
async fn check_view(store: &LocalStore, checks: impl FnOnce(SocketAddr) + Send + 'static) {
    let listener = web::bind(0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(web::serve(listener, store.clone(), shutdown));
    tokio::task::spawn_blocking(move || checks(addr)).await.unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_traces_by_span_tag_duration_and_error_and_pages() {
    let (_dir, store) = temp_store();
    let now = unix_nanos(SystemTime::now());
    let mut chunks = Vec::new();
    // 30 traces of `web` calling `api`, 10 ms apart; every 5th fails in `api`; trace i lasts
    // (10 + i) ms; trace 7's api span carries user.id:u7.
    for i in 0..30u64 {
        let t = 1000 + i;
        let start = now - 60 * SEC + i as i64 * 10 * MS;
        let root = span(
            t,
            1,
            0,
            ("web", "http.request", "GET /checkout"),
            start,
            (10 + i as i64) * MS,
        );
        let mut call = span(t, 2, 1, ("api", "http.request", "POST /pay"), start + MS, 5 * MS);
        if i % 5 == 0 {
            call.error = 1;
            call.meta.insert("error.message".to_owned(), "card declined".to_owned());
        }
        if i == 7 {
            call.meta.insert("user.id".to_owned(), "u7".to_owned());
        }
        if i == 3 {
            call.meta.insert("note".to_owned(), "a\"b:c\\".to_owned());
        }
        if i == 4 {
            // The same characters, but inside another tag's value: not a match.
            call.meta
                .insert("other".to_owned(), "\"note\":\"a\\\"b:c\\\\\"".to_owned());
        }
        chunks.push(vec![root, call]);
    }
    // An old trace, outside the 5-minute window.
    chunks.push(vec![span(
        9,
        1,
        0,
        ("web", "http.request", "GET /checkout"),
        now - 600 * SEC,
        MS,
    )]);
    store.push_traces(traces(chunks));
    assert!(tokio::task::block_in_place(|| store.sync(Duration::from_secs(10))));
    check_view(&store, move |addr| {
        let ids =
            |v: &serde_json::Value| -> Vec<u64> { rows(&v["traces"], |t| str_of(t, "trace_id").parse().unwrap()) };
        // Errors (in a child span of another service), newest first.
        let r = json_of(addr, "/api/v1/traces?window=5m&error=true");
        assert_eq!(ids(&r), [1025, 1020, 1015, 1010, 1005, 1000]);
        assert_eq!(r["traces"][0]["root_service"], "web");
        assert_eq!(r["traces"][0]["root_resource"], "GET /checkout");
        assert_eq!(r["traces"][0]["span_count"], 2);
        assert_eq!(r["traces"][0]["duration_ns"], 35 * MS);
        assert_eq!(r["next_cursor"], serde_json::Value::Null);
        // A resource of the callee, a tag, a duration range.
        assert_eq!(ids(&json_of(addr, "/api/v1/traces?window=5m&tag=user.id:u7")), [1007]);
        assert_eq!(
            ids(&json_of(addr, "/api/v1/traces?window=5m&tag=note:a%22b%3Ac%5C")),
            [1003]
        );
        assert_eq!(
            ids(&json_of(addr, "/api/v1/traces?window=5m&tag=user.id:U7")),
            Vec::<u64>::new()
        );
        let r = json_of(
            addr,
            "/api/v1/traces?window=5m&service=api&resource=POST%20%2Fpay&min_duration=30ms&max_duration=32ms",
        );
        assert_eq!(ids(&r), [1022, 1021, 1020]);
        assert_eq!(
            ids(&json_of(addr, "/api/v1/traces?window=5m&service=api&operation=nope")),
            Vec::<u64>::new()
        );
        assert_eq!(ids(&json_of(addr, "/api/v1/traces?window=1h&trace_id=9")), [9]);
        assert_eq!(
            ids(&json_of(addr, "/api/v1/traces?window=5m&trace_id=9")),
            Vec::<u64>::new()
        );
        // Pages: 30 in 4 pages of 8, nothing repeated or skipped.
        let mut seen = Vec::new();
        let mut path = "/api/v1/traces?window=5m&service=web&limit=8".to_owned();
        loop {
            let r = json_of(addr, &path);
            seen.extend(ids(&r));
            match r["next_cursor"].as_str() {
                Some(c) => path = format!("/api/v1/traces?window=5m&service=web&limit=8&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, (1000..1030).rev().collect::<Vec<_>>());
        // Bad input: 400 naming the parameter.
        let r = request(addr, "GET", "/api/v1/traces?min_duration=5", &addr.to_string());
        assert_eq!(r.status, 400);
        assert!(r.body.contains("min_duration"), "{}", r.body);
        // The page: the form keeps the query, results link to their traces.
        let page = get(addr, "/search?window=5m&error=true&service=api").body;
        assert!(page.contains("id=\"search-form\""));
        assert_eq!(page.matches("<tr data-trace=").count(), 6);
        assert!(page.contains("href=\"/traces/1025\""));
        assert!(page.contains("<option value=\"true\" selected>"));
        assert_eq!(request(addr, "GET", "/search?limit=x", &addr.to_string()).status, 400);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_map_joins_parents_and_children_across_services_and_peer_services() {
    let (_dir, store) = temp_store();
    let now = unix_nanos(SystemTime::now());
    let mut chunks = Vec::new();
    for i in 0..4u64 {
        let t = 500 + i;
        let start = now - 30 * SEC + i as i64 * SEC;
        let root = span(t, 1, 0, ("frontend", "http.request", "GET /"), start, 50 * MS);
        let mut call = span(t, 2, 1, ("frontend", "http.client", "GET /api"), start + MS, 30 * MS);
        call.meta.insert("peer.service".to_owned(), "backend".to_owned());
        let mut server = span(
            t,
            3,
            2,
            ("backend", "http.request", "GET /api"),
            start + 2 * MS,
            20 * MS,
        );
        server.error = i64::from(i == 0) as i32;
        let mut db = span(t, 4, 3, ("backend", "pg.query", "SELECT 1"), start + 3 * MS, 4 * MS);
        db.meta.insert("peer.service".to_owned(), "postgres".to_owned());
        chunks.push(vec![root, call, server, db]);
    }
    store.push_traces(traces(chunks));
    store.push_stats(stats(
        now - now.rem_euclid(10 * SEC) - 10 * SEC,
        "frontend",
        "GET /",
        4,
        0,
    ));
    assert!(tokio::task::block_in_place(|| store.sync(Duration::from_secs(10))));
    check_view(&store, move |addr| {
        let m = json_of(addr, "/api/v1/service-map?window=5m");
        let edges = rows(&m["edges"], |e| {
            (
                str_of(e, "from"),
                str_of(e, "to"),
                u64_of(e, "hits"),
                u64_of(e, "errors"),
            )
        });
        // frontend → backend once per trace (the peer.service of the client span is not
        // counted again: backend has a child span there); backend → postgres by peer.service.
        assert_eq!(edges, [("backend", "postgres", 4, 0), ("frontend", "backend", 4, 1)]);
        let p99 = m["edges"][1]["p99_ns"].as_f64().unwrap();
        assert!((p99 - 20e6).abs() < 20e6 * 0.02, "p99 of the backend spans: {p99}");
        let nodes = rows(&m["nodes"], |n| {
            (str_of(n, "service"), u64_of(n, "hits"), bool_of(n, "untraced"))
        });
        assert_eq!(
            nodes,
            [("backend", 0, false), ("frontend", 4, false), ("postgres", 4, true)]
        );
        let page = get(addr, "/map?window=5m").body;
        assert!(page.contains("<svg class=\"map\""));
        assert!(page.contains("data-from=\"frontend\" data-to=\"backend\""));
        assert!(page.contains("href=\"/search?window=5m&amp;service=backend&amp;tag=peer.service%3Apostgres\""));
        assert!(
            page.contains("href=\"/search?window=5m&amp;service=frontend\""),
            "nodes link to search"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_anomalies_of_the_stored_stats() {
    let (_dir, store) = temp_store();
    let now = unix_nanos(SystemTime::now());
    let last = now - now.rem_euclid(10 * SEC);
    // 20 slots of steady traffic (10 ms, no errors) on 1.0, then the last slot on 1.1: slow
    // and failing.
    for i in 1..=20 {
        store.push_stats(stats_at(
            last - (21 - i) * 10 * SEC,
            "shop",
            "GET /cart",
            "1.0",
            100,
            1,
            10.0,
        ));
    }
    store.push_stats(stats_at(last, "shop", "GET /cart", "1.1", 100, 30, 40.0));
    assert!(tokio::task::block_in_place(|| store.sync(Duration::from_secs(10))));
    check_view(&store, move |addr| {
        let v = json_of(addr, "/api/v1/services/shop/resources/GET%20%2Fcart/versions?window=5m");
        assert_eq!((v["a"].as_str(), v["b"].as_str()), (Some("1.0"), Some("1.1")));
        let flagged = rows(&v["changes"], |c| (str_of(c, "metric"), bool_of(c, "flagged")));
        assert_eq!(flagged, [("p50", true), ("p99", true), ("error_rate", true)]);
        assert_eq!(v["versions"][0]["hits"], 2000);
        let v = json_of(
            addr,
            "/api/v1/services/shop/resources/GET%20%2Fcart/versions?window=5m&threshold=5",
        );
        assert!(
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["metric"] == "error_rate" || !c["flagged"].as_bool().unwrap())
        );
        let page = get(addr, "/services/shop/resources/GET%20%2Fcart?window=5m").body;
        assert!(page.contains("id=\"version-changes\"") && page.contains("data-metric=\"p99\" data-flagged=\"1\""));

        let a = json_of(addr, "/api/v1/services/shop/anomalies?window=5m");
        let flagged = |k: &str| -> Vec<usize> {
            a[k].as_array()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, p)| p["band"]["anomaly"] == true)
                .map(|(i, _)| i)
                .collect()
        };
        let slot_of_last = a["p95"]
            .as_array()
            .unwrap()
            .iter()
            .rposition(|p| !p["value"].is_null())
            .unwrap();
        assert_eq!(flagged("p95"), [slot_of_last], "only the slow slot");
        assert_eq!(flagged("error_rate"), [slot_of_last], "only the failing slot");
        let page = get(addr, "/services/shop?window=5m").body;
        assert_eq!(page.matches("data-anomaly=").count(), 2, "one mark on each chart");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_alerts_notifies_its_webhook_with_a_retry_and_recovers() {
    let (hook, received) = webhook_receiver(1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = LocalConfig {
        web_port: 0,
        ..LocalConfig::in_dir(dir.path())
    };
    config.monitors = trace_agent::local::monitor::MonitorConfig::from_yaml(&format!(
        "
webhooks: {{ops: 'http://{hook}/hook'}}
monitors:
  - name: cart errors
    service: shop
    resource: GET /cart
    metric: error_rate
    window: 5m
    warning: 10%
    critical: 20%
    message: 'cart errors at {{{{value}}}} @webhook-ops'
"
    ))
    .unwrap();
    config.monitors.interval = Duration::from_millis(100);
    let local = trace_agent::local::LocalService::start(config).await.unwrap();
    let addr = local.web_addr();
    let store = local.store().clone();
    let bucket = {
        let now = unix_nanos(SystemTime::now());
        now - now.rem_euclid(10 * SEC) - 10 * SEC
    };
    let state_of = move || -> String {
        let m = json_of(addr, "/api/v1/monitors");
        m[0]["state"].as_str().unwrap().to_owned()
    };
    let wait_for = move |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while state_of() != want {
            assert!(std::time::Instant::now() < deadline, "monitor never reached {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let s2 = store.clone();
    tokio::task::spawn_blocking(move || {
        s2.push_stats(stats_at(bucket, "shop", "GET /cart", "1", 100, 5, 10.0));
        assert!(s2.sync(Duration::from_secs(10)));
        // 5 % errors: OK, and nothing sent. Then 40 / 200 = 20 %: not beyond 20 %; then 25 %.
        assert_eq!(state_of(), "OK");
        s2.push_stats(stats_at(bucket, "shop", "GET /cart", "1", 100, 35, 10.0));
        assert!(s2.sync(Duration::from_secs(10)));
        wait_for("WARN");
        s2.push_stats(stats_at(bucket, "shop", "GET /cart", "1", 40, 20, 10.0));
        assert!(s2.sync(Duration::from_secs(10)));
        wait_for("ALERT");
        let warn = received.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            (warn["previous_state"].as_str(), warn["state"].as_str()),
            (Some("OK"), Some("WARN"))
        );
        let alert = received.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(alert["state"], "ALERT");
        assert_eq!(alert["monitor"], "cart errors");
        assert_eq!(alert["message"], "cart errors at 25.0 % @webhook-ops");
        assert!((alert["value"].as_f64().unwrap() - 0.25).abs() < 1e-9);
        // Muted from the API: evaluation goes on, no notification.
        let cross = send(
            addr,
            "POST",
            "/api/v1/downtimes",
            &[("Content-Type", "application/json"), ("Origin", "http://evil.example")],
            "{}",
        );
        assert_eq!(cross.status, 403, "a cross-site page cannot mute monitors");
        let r = send(
            addr,
            "POST",
            "/api/v1/downtimes",
            &[("Content-Type", "application/json")],
            "{\"scope\": \"service:shop\", \"duration\": \"1h\", \"comment\": \"deploy\"}",
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"]
            .as_u64()
            .unwrap();
        assert_eq!(json_of(addr, "/api/v1/monitors")[0]["muted"], true);
        s2.push_stats(stats_at(bucket, "shop", "GET /cart", "1", 200, 0, 10.0));
        assert!(s2.sync(Duration::from_secs(10)));
        wait_for("WARN"); // 60 / 440
        assert_eq!(
            send(addr, "DELETE", &format!("/api/v1/downtimes/{id}"), &[], "").status,
            204
        );
        s2.push_stats(stats_at(bucket, "shop", "GET /cart", "1", 400, 0, 10.0));
        assert!(s2.sync(Duration::from_secs(10)));
        wait_for("OK");
        let ok = received.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            (ok["previous_state"].as_str(), ok["state"].as_str()),
            (Some("WARN"), Some("OK")),
            "the muted change sent nothing"
        );
        let events = json_of(addr, "/api/v1/monitors/events");
        let mut changes = rows(&events, |e| (str_of(e, "from"), str_of(e, "to"), bool_of(e, "muted")));
        changes.reverse(); // oldest first
        assert_eq!(
            changes,
            [
                ("OK", "WARN", false),
                ("WARN", "ALERT", false),
                ("ALERT", "WARN", true),
                ("WARN", "OK", false)
            ]
        );
        let page = get(addr, "/monitors").body;
        assert!(page.contains("data-monitor=\"cart errors\" data-state=\"OK\""));
        assert!(
            page.contains("id=\"webhooks\" data-delivered=\"3\" data-failed=\"0\""),
            "the first 503 was retried"
        );
        let page = get(addr, "/services/shop?window=5m").body;
        assert!(
            page.contains("data-monitor=\"cart errors\" data-state=\"OK\""),
            "the state on the service page"
        );
    })
    .await
    .unwrap();
    local.shutdown(Duration::from_secs(10)).await;
}

#[test]
fn datadog_yaml_monitors_load_and_a_mistake_names_the_monitor_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datadog.yaml");
    let env: HashMap<String, String> = HashMap::new();
    std::fs::write(
        &path,
        "apm_config:
  local:
    monitor_interval: 2s
    webhooks:
      ops: http://127.0.0.1:9000/hook
    monitors:
      - name: slow cart
        service: shop
        resource: GET /cart
        metric: p99
        window: 10m
        warning: 300ms
        critical: 1s
        notify_no_data: true
        message: 'p99 {{value}} @webhook-ops'
    downtimes:
      - scope: service:shop
        schedule: {daily: '02:00-03:00'}
        comment: nightly batch
",
    )
    .unwrap();
    let c = trace_agent::config::load(Some(&path), &env).unwrap();
    assert!(c.warnings.is_empty(), "no unknown keys: {:?}", c.warnings);
    let m = &c.local.monitors;
    assert_eq!(m.interval, Duration::from_secs(2));
    assert_eq!(m.monitors[0].critical, 1e9);
    assert_eq!(m.monitors[0].no_data_window, Duration::from_secs(1200));
    assert_eq!(m.downtimes[0].comment, "nightly batch");
    std::fs::write(
        &path,
        "apm_config:\n  local:\n    monitors:\n      - name: slow cart\n        service: shop\n        metric: p99\n        critical: 1s\n        warning: 2s\n",
    )
    .unwrap();
    let e = trace_agent::config::load(Some(&path), &env).unwrap_err().to_string();
    assert!(
        e.contains("apm_config.local.monitors[0] (\"slow cart\").warning") && e.contains("at most critical"),
        "{e}"
    );
}
