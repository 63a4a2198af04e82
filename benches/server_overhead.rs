//! Server overhead of `tracer::http::ServerLayer`: an axum hello-world with and without the
//! layer, in the same run, under the same loopback load.
//!
//! The load generator is a tokio client holding `CONNECTIONS` keep-alive HTTP/1.1
//! connections, each sending requests back to back. Server and client run on separate
//! single-thread runtimes; the traced server's tracer exports to a loopback sink that
//! answers 200 to everything, so its worker encodes and sends every span for real, on the
//! same machine (this is the cost an application pays, export included).
//!
//! Criterion times bursts of requests for each variant (`plain`, `traced`). After it, the
//! bench runs both variants in alternating rounds and prints the throughput of each and the
//! ratio, which is the figure the instrumentation issue targets (≤ 5 % loss), and the CPU
//! time per request of the server thread (and, for `traced`, of the tracer's export
//! thread): on a small shared machine with the load generator beside the server, the
//! throughput of a hello-world is bound by wake-up latency as much as by CPU, so the CPU
//! cost per request is the steadier measure of what the layer adds.
#![allow(clippy::print_stdout)] // the bench reports the A/B summary on stdout

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;
use criterion::{Criterion, Throughput, criterion_group};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tracer::http::ServerLayer;
use tracer::{Tracer, TracerConfig};

const CONNECTIONS: usize = 32;

// ---------- allocation counting (per thread, apm::CountingAllocator) ----------

#[global_allocator]
static GLOBAL: apm::CountingAllocator = apm::CountingAllocator;

use apm::allocations as allocs;

fn hello() -> Router {
    Router::new().route("/hello/{name}", get(|| async { "Hello, World!" }))
}

fn single_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// CPU time (user + system) of this process's threads named `name`, summed, from `/proc`
/// (clock ticks of 10 ms: use over long spans only).
fn named_thread_cpu(name: &str) -> Option<Duration> {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 10))
}

/// A server on its own thread and single-thread runtime.
struct Server {
    addr: SocketAddr,
    handle: tokio::runtime::Handle,
}

impl Server {
    /// Serves `app`; returns once it listens.
    fn start(app: Router) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = single_thread_runtime();
            let _ = tx.send(rt.handle().clone());
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app).await;
            });
        });
        let handle = rx.recv().expect("server runtime");
        Self { addr, handle }
    }

    /// CPU time of the server's thread so far (asked on that thread).
    fn cpu(&self, client: &Runtime) -> Duration {
        let task = self.handle.spawn(async { thread_cpu() });
        client.block_on(task).expect("cpu probe")
    }
}

/// `CONNECTIONS` keep-alive connections to one server.
struct Load {
    conns: Vec<SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
}

impl Load {
    async fn connect(addr: SocketAddr) -> Self {
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            conns.push(send);
        }
        Self { conns, addr }
    }

    /// Sends `total` requests spread over the connections; returns the elapsed time.
    async fn run(&mut self, total: u64) -> Duration {
        let per = total.div_ceil(CONNECTIONS as u64);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut send) in self.conns.drain(..).enumerate() {
            let host = self.addr.to_string();
            tasks.spawn(async move {
                for n in 0..per {
                    send.ready().await.expect("connection ready");
                    let req = http::Request::get(format!("/hello/user{}", (i as u64) * per + n))
                        .header(http::header::HOST, &host)
                        .header(http::header::USER_AGENT, "server-overhead-bench")
                        .body(Empty::new())
                        .expect("request");
                    let resp = send.send_request(req).await.expect("response");
                    assert_eq!(resp.status(), 200);
                    let _ = resp.into_body().collect().await.expect("body");
                }
                send
            });
        }
        while let Some(send) = tasks.join_next().await {
            self.conns.push(send.expect("load task"));
        }
        start.elapsed()
    }
}

struct Bench {
    client: Runtime,
    plain: Load,
    traced: Load,
    plain_server: Server,
    traced_server: Server,
    tracer: Tracer,
}

fn setup() -> Bench {
    let config = TracerConfig::default()
        .with_service("server-overhead")
        .with_agent_url(&apm::sink_agent())
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    let plain_server = Server::start(hello());
    let traced_server = Server::start(hello().layer(ServerLayer::axum(tracer)));
    let client = single_thread_runtime();
    let (plain, traced) = client.block_on(async {
        (
            Load::connect(plain_server.addr).await,
            Load::connect(traced_server.addr).await,
        )
    });
    Bench {
        client,
        plain,
        traced,
        plain_server,
        traced_server,
        tracer,
    }
}

/// The layer's own cost per request, without the network: `call` + poll of a service that
/// answers at once, bare and wrapped in `ServerLayer` (a realistic request: route known,
/// `Host`, `User-Agent`, `Accept` headers, a query string).
fn layer_call(c: &mut Criterion) {
    use tower::{Layer, Service, ServiceExt};
    let config = TracerConfig::default()
        .with_service("layer-call")
        .with_agent_url(&apm::sink_agent())
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    let rt = single_thread_runtime();
    let request = || {
        let mut req = http::Request::get("/hello/user42?lang=en")
            .header(http::header::HOST, "127.0.0.1:5050")
            .header(http::header::USER_AGENT, "server-overhead-bench")
            .header(http::header::ACCEPT, "*/*")
            .body(())
            .expect("request");
        req.extensions_mut().insert(tracer::http::Route::new("/hello/{name}"));
        req
    };
    let bare = tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    // Allocations on the request's thread, in steady state.
    let per_request = |svc: &mut dyn FnMut()| {
        for _ in 0..1000 {
            svc();
        }
        let before = allocs();
        for _ in 0..1000 {
            svc();
        }
        (allocs() - before) as f64 / 1000.0
    };
    let mut bare_svc = bare;
    let bare_allocs = per_request(&mut || {
        let _ = rt.block_on(async { bare_svc.ready().await.expect("ready").call(request()).await });
    });
    let mut traced_svc = ServerLayer::axum(tracer).layer(bare);
    let traced_allocs = per_request(&mut || {
        let _ = rt.block_on(async { traced_svc.ready().await.expect("ready").call(request()).await });
    });
    println!(
        "layer_call: allocations per request on the request's thread: bare {bare_allocs:.1}, with ServerLayer {traced_allocs:.1}"
    );

    let mut group = c.benchmark_group("layer_call");
    group.bench_function("bare", |bench| {
        let mut svc = bare;
        bench.iter(|| rt.block_on(async { svc.ready().await.expect("ready").call(request()).await }));
    });
    let mut traced = ServerLayer::axum(tracer).layer(bare);
    group.bench_function("server_layer", |bench| {
        bench.iter(|| rt.block_on(async { traced.ready().await.expect("ready").call(request()).await }));
    });
    group.finish();
    let _ = tracer.flush(Duration::from_secs(10));
    let h = tracer.health();
    println!(
        "layer_call: tracer sent {} spans, dropped {} (queue full)",
        h.spans_sent, h.spans_dropped_queue_full
    );
}

fn server_overhead(c: &mut Criterion) {
    let mut b = setup();
    const BURST: u64 = 2048;
    let mut group = c.benchmark_group("axum_hello");
    group.throughput(Throughput::Elements(BURST));
    group.bench_function("plain", |bench| {
        bench.iter_custom(|iters| {
            let load = &mut b.plain;
            b.client.block_on(async { load.run(iters * BURST).await })
        });
    });
    group.bench_function("traced", |bench| {
        bench.iter_custom(|iters| {
            let load = &mut b.traced;
            b.client.block_on(async { load.run(iters * BURST).await })
        });
    });
    group.finish();

    // Alternating rounds: the machine's background load hits both variants alike.
    const ROUNDS: usize = 6;
    const PER_ROUND: u64 = 20_000;
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    let (mut plain_cpu, mut traced_cpu) = (Duration::ZERO, Duration::ZERO);
    let export_before = named_thread_cpu("dd-trace-export");
    for _ in 0..ROUNDS {
        let cpu = b.plain_server.cpu(&b.client);
        let load = &mut b.plain;
        let t = b.client.block_on(async { load.run(PER_ROUND).await });
        plain_cpu += b.plain_server.cpu(&b.client) - cpu;
        plain.push(PER_ROUND as f64 / t.as_secs_f64());

        let cpu = b.traced_server.cpu(&b.client);
        let load = &mut b.traced;
        let t = b.client.block_on(async { load.run(PER_ROUND).await });
        traced_cpu += b.traced_server.cpu(&b.client) - cpu;
        traced.push(PER_ROUND as f64 / t.as_secs_f64());
    }
    let _ = b.tracer.flush(Duration::from_secs(10));
    let export_cpu = match (export_before, named_thread_cpu("dd-trace-export")) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let (p, t) = (median(&mut plain), median(&mut traced));
    let n = (ROUNDS as u64 * PER_ROUND) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let h = b.tracer.health();
    println!(
        "server_overhead: {CONNECTIONS} keep-alive connections, {ROUNDS} alternating rounds of {PER_ROUND} requests: \
         plain {p:.0} req/s, traced {t:.0} req/s (median): traced/plain throughput = {:.3}",
        t / p
    );
    println!(
        "server_overhead: server thread CPU per request: plain {:.2} us, traced {:.2} us (ratio {:.3}); \
         export thread {:.2} us per request; traced total / plain = {:.3}",
        us(plain_cpu),
        us(traced_cpu),
        traced_cpu.as_secs_f64() / plain_cpu.as_secs_f64(),
        us(export_cpu),
        (traced_cpu + export_cpu).as_secs_f64() / plain_cpu.as_secs_f64(),
    );
    println!(
        "server_overhead: tracer sent {} spans, dropped {} (queue full) / {} (send failed)",
        h.spans_sent, h.spans_dropped_queue_full, h.spans_dropped_send_failed
    );
}

/// What the sink's `/info` lists: a current agent's trace endpoints (v0.5 is used).
const SINK_INFO: &str =
    r#"{"version":"7.60.0","endpoints":["/v0.4/traces","/v0.5/traces","/info"],"client_drop_p0s":false}"#;

/// An axum app on its own multi-thread runtime of `workers` threads; returns its address.
fn serve_on_runtime(app: Router, workers: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

/// Requests per second `wrk` reports for `url` (its `Requests/sec:` line).
fn wrk(url: &str, secs: u64) -> Option<f64> {
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{secs}s"), url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `-- --wrk [seconds]`: the issue's A/B with the real `wrk` (Debian's package): an axum
/// hello-world on 2 worker threads, plain and behind `ServerLayer` (exporting v0.5 to a
/// loopback sink), `wrk -t1 -c32` for `seconds` (default 8) on each in 3 alternating
/// rounds; prints each round's req/s and the traced/plain ratio (target ≥ 0.95).
fn wrk_ab(secs: u64) {
    let config = TracerConfig::default()
        .with_service("server-overhead")
        .with_agent_url(&apm::sink_agent_with_info(SINK_INFO))
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    let app = || Router::new().route("/users/{id}", get(|| async { "Hello, World!" }));
    let plain = serve_on_runtime(app(), 2);
    let traced = serve_on_runtime(app().layer(ServerLayer::axum(tracer)), 2);
    let (plain_url, traced_url) = (format!("http://{plain}/users/42"), format!("http://{traced}/users/42"));
    // Warm-up: connections, the tracer's /info, the span pool.
    if wrk(&plain_url, 1).is_none() {
        println!("server_overhead --wrk: `wrk` is not installed (apt-get install wrk); skipped");
        return;
    }
    let _ = wrk(&traced_url, 1);
    println!("server_overhead --wrk: axum hello-world, 2 worker threads, wrk -t1 -c32 -d{secs}s, 3 alternating rounds");
    println!("| round | plain req/s | ServerLayer req/s | ratio |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=3 {
        let p = wrk(&plain_url, secs).unwrap_or(0.0);
        let t = wrk(&traced_url, secs).unwrap_or(0.0);
        let r = if p > 0.0 { t / p } else { 0.0 };
        ratios.push(r);
        println!("| {round} | {p:.0} | {t:.0} | {r:.3} |");
    }
    let _ = tracer.flush(Duration::from_secs(10));
    let h = tracer.health();
    ratios.sort_by(f64::total_cmp);
    println!(
        "server_overhead --wrk: median ratio {:.3}; tracer sent {} spans, dropped {} (queue full) / {} (send failed)",
        ratios[1], h.spans_sent, h.spans_dropped_queue_full, h.spans_dropped_send_failed
    );
}

/// `-- --callgrind <plain|noop|traced> <requests>`: `requests` requests of the `--wrk` app
/// (`GET /users/42`, `Host`, `User-Agent`, `Accept`) through the axum router in-process
/// (`tower::ServiceExt::oneshot` on a current-thread runtime: no hyper, no sockets), after
/// a warm-up, in batches of 500 with a flush after each; for `valgrind --tool=callgrind
/// --separate-threads=yes`, where two runs with different counts give the instructions per
/// request on the request thread and on the tracer's export thread (see README).
fn callgrind(args: &[String]) {
    use tower::ServiceExt;
    let variant = args.first().map_or("traced", String::as_str);
    let requests: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let config = TracerConfig::default()
        .with_service("server-overhead")
        .with_agent_url(&apm::sink_agent_with_info(SINK_INFO))
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    let app = Router::new().route("/users/{id}", get(|| async { "Hello, World!" }));
    let app = match variant {
        "traced" => app.layer(ServerLayer::axum(tracer)),
        // What any tower middleware costs in axum (its boxing and futures), for comparison.
        "noop" => app.layer(tower::util::MapRequestLayer::new(
            |r: http::Request<axum::body::Body>| r,
        )),
        _ => app,
    };
    // As `axum::serve` does: the handlers become services once, not per request.
    let app: Router = app.with_state(());
    let rt = single_thread_runtime();
    let one = |app: &Router| {
        let req = http::Request::get("/users/42")
            .header(http::header::HOST, "127.0.0.1:8080")
            .header(http::header::USER_AGENT, "wrk")
            .header(http::header::ACCEPT, "*/*")
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = rt.block_on(app.clone().oneshot(req)).expect("response");
        assert_eq!(resp.status(), 200);
    };
    for _ in 0..1000 {
        one(&app);
    }
    let _ = tracer.flush(Duration::from_secs(10));
    let (mut left, mut allocations) = (requests, 0);
    while left > 0 {
        let n = left.min(500);
        let before = allocs();
        for _ in 0..n {
            one(&app);
        }
        allocations += allocs() - before;
        let _ = tracer.flush(Duration::from_secs(10));
        left -= n;
    }
    let h = tracer.health();
    println!(
        "server_overhead --callgrind {}: {} requests ({:.2} allocations per request on the request thread), tracer sent {} spans, dropped {}",
        variant,
        requests + 1000,
        allocations as f64 / requests.max(1) as f64,
        h.spans_sent,
        h.spans_dropped_queue_full + h.spans_dropped_send_failed
    );
}

criterion_group!(benches, layer_call, server_overhead);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind") {
        callgrind(args.get(i + 1..).unwrap_or_default());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--wrk") {
        let secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(8);
        wrk_ab(secs);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
