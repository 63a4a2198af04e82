//! The local web view and its JSON API over real HTTP: the pages show the stored figures
//! (exact hits and errors, ordered percentiles), escape stored strings, and refuse what a
//! loopback-only view must refuse.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trace_agent::local::{LocalConfig, LocalStore, unix_nanos, web};
use trace_agent::stats::sketch::Sketch;
use trace_agent::upstream::pb;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn span(
    trace: u64,
    id: u64,
    parent: u64,
    (service, name, resource): (&str, &str, &str),
    start: i64,
    dur: i64,
) -> pb::Span {
    pb::Span {
        service: service.to_owned(),
        name: name.to_owned(),
        resource: resource.to_owned(),
        trace_id: trace,
        span_id: id,
        parent_id: parent,
        start,
        duration: dur,
        r#type: "web".to_owned(),
        meta: HashMap::from([("http.method".to_owned(), "GET".to_owned())]),
        ..pb::Span::default()
    }
}

fn traces(chunks: Vec<Vec<pb::Span>>) -> Arc<pb::TracerPayload> {
    Arc::new(pb::TracerPayload {
        chunks: chunks
            .into_iter()
            .map(|spans| pb::TraceChunk {
                priority: 1,
                spans,
                ..pb::TraceChunk::default()
            })
            .collect(),
        ..pb::TracerPayload::default()
    })
}

/// A bucket of `hits` spans of `resource` with latencies 1..=hits ms, the last `errors` failing.
fn stats(start: i64, service: &str, resource: &str, hits: u64, errors: u64) -> Arc<pb::StatsPayload> {
    let sketch = |range: std::ops::RangeInclusive<u64>| {
        let mut s = Sketch::new();
        for v in range {
            s.add(v as f64 * 1e6).unwrap();
        }
        if s.is_empty() { Vec::new() } else { s.encode() }
    };
    Arc::new(pb::StatsPayload {
        stats: vec![pb::ClientStatsPayload {
            env: "test".to_owned(),
            stats: vec![pb::ClientStatsBucket {
                start: start as u64,
                duration: 10 * SEC as u64,
                stats: vec![pb::ClientGroupedStats {
                    service: service.to_owned(),
                    name: "http.request".to_owned(),
                    resource: resource.to_owned(),
                    hits,
                    errors,
                    duration: (1..=hits).sum::<u64>() * MS as u64,
                    top_level_hits: hits,
                    ok_summary: sketch(1..=hits - errors),
                    error_summary: sketch(hits - errors + 1..=hits),
                    ..pb::ClientGroupedStats::default()
                }],
                ..pb::ClientStatsBucket::default()
            }],
            ..pb::ClientStatsPayload::default()
        }],
        ..pb::StatsPayload::default()
    })
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
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(LocalConfig::in_dir(dir.path())).unwrap();
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

    let listener = web::bind(0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(web::serve(listener, store.clone(), shutdown));

    let checks = tokio::task::spawn_blocking(move || {
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
        let resources: Vec<(&str, u64)> = svc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["resource"].as_str().unwrap(), r["hits"].as_u64().unwrap()))
            .collect();
        assert_eq!(resources, [("GET /cart", 20), ("POST /pay <b>", 5)]);
        let res: serde_json::Value =
            serde_json::from_str(&get(addr, "/api/v1/services/shop/resources/GET%20%2Fcart?window=5m").body).unwrap();
        assert_eq!(res["figures"]["hits"], 20);
        assert_eq!(res["traces"][0]["trace_id"], "42");
        let trace: serde_json::Value = serde_json::from_str(&get(addr, "/api/v1/traces/42").body).unwrap();
        let depths: Vec<u64> = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["depth"].as_u64().unwrap())
            .collect();
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
    });
    checks.await.unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_says_how_to_send_traces_and_a_fallback_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.sqlite3"), vec![7u8; 4096]).unwrap();
    let store = LocalStore::open(LocalConfig::in_dir(dir.path())).unwrap();
    let listener = web::bind(0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(web::serve(listener, store, shutdown));
    let page = tokio::task::spawn_blocking(move || get(addr, "/").body).await.unwrap();
    assert!(page.contains("id=\"no-data\"") && page.contains("DD_TRACE_AGENT_URL"));
    assert!(page.contains("id=\"store-fallback\"") && page.contains("not a usable database"));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
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
