//! The tracer under production load, next to its peers in the same run.
//!
//! Every subject exports for real to its own loopback sink (an HTTP server that reads each
//! request, counts what it carries and answers 200), while the application thread creates
//! spans on the same machine: what is measured is what an application lives with, the
//! exporter competing for the cores included.
//!
//! Subjects, each next to its peer:
//! - `ours`: the native API, vs the OpenTelemetry SDK (`BatchSpanProcessor`, defaults) with
//!   an OTLP/HTTP-protobuf exporter (the proto encoding of `opentelemetry-proto`, POSTed
//!   to the sink);
//! - `ours bridge`: the same OpenTelemetry API calls through `tracer::otel`, vs the SDK;
//! - `ours layer`: a `tracing` span with 5 fields through `tracer::layer::DatadogLayer`,
//!   vs `tracing-opentelemetry` + the same SDK pipeline;
//! - `ours native` and `ours bridge` again, vs `datadog-opentelemetry` (Datadog's Rust
//!   tracer: an OpenTelemetry SDK pipeline with libdatadog's exporter, v0.4 to the sink),
//!   driven by the same OpenTelemetry calls as the bridge.
//!
//! Figures, per subject and workload (a root span with 5 tags; a 4-span tree):
//! - continuous: traces created back to back for a few seconds, ns per span;
//! - allocations per span on the application thread (a counting global allocator) in that
//!   run, and what was lost in that flood (created − delivered to the sink);
//! - export-thread CPU per delivered span (the CPU clocks of the subject's export threads,
//!   by thread name, read from here);
//! - paced: 10 k traces/s in bursts of 32, ns per span of each burst, p50 and p99;
//! - offered load: 250 k, 500 k and 1 M single-span traces/s (1 ms slots) for a few
//!   seconds, then a flush: created, delivered, lost.
//!
//! `cargo bench --bench span_load` (about 5 minutes); `-- --quick` (or `--test`, as CI and
//! `cargo test --benches` run it) is a short pass that checks that everything works (and
//! fails when a subject delivers nothing or the sink cannot count a payload); `-- --only
//! datadog` (or `sdk`, `tracing-otel`) runs only the groups of that peer.
//! Timings are only meaningful as ratios to the peer of the same run on a busy machine.
#![allow(unsafe_code)] // the thread CPU clocks below
#![allow(clippy::print_stdout)] // the bench reports its table on stdout

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};

// ---------- allocation counting (per thread, apm::CountingAllocator) ----------

#[global_allocator]
static GLOBAL: apm::CountingAllocator = apm::CountingAllocator;

use apm::allocations as allocs;

mod common;
use common::*;

// ---------- the Datadog peer (datadog-opentelemetry) and the sink's payload counter ----------
#[path = "span_load/datadog_peer.rs"]
mod datadog_peer;
#[path = "span_load/msgpack_count.rs"]
mod msgpack_count;

// ---------- export-thread CPU ----------

/// In a subject's list of export-thread names: the threads nobody named (they carry the
/// process's name, as `std::thread::spawn` and unnamed libraries' threads do), the main
/// thread excepted.
const UNNAMED: &str = "";

/// CPU time of this process's threads whose name starts with one of `prefixes` (or that
/// are [`UNNAMED`], when it is listed), summed over the threads alive now.
fn threads_cpu(prefixes: &[&str]) -> Duration {
    let mut total = Duration::ZERO;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    let main_name = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let pid = std::process::id();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let unnamed = comm == main_name && tid != pid;
        let listed = prefixes.iter().any(|p| {
            if p.is_empty() {
                unnamed
            } else {
                comm.trim_end().starts_with(p)
            }
        });
        if listed && let Ok(tid) = i32::try_from(tid) {
            total += thread_cpu(tid);
        }
    }
    total
}

/// The CPU clock of thread `tid` of this process (Linux: `MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED)`, nanosecond resolution).
#[cfg(target_os = "linux")]
fn thread_cpu(tid: i32) -> Duration {
    let clock = ((!tid) << 3) | 6;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; a bad clock id only makes the call fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu(_tid: i32) -> Duration {
    Duration::ZERO
}

// ---------- the sink ----------

/// A loopback HTTP server that answers 200 to everything and counts what it was sent.
///
/// A v0.4 / v0.5 payload's traces come from its `X-Datadog-Trace-Count`, and its spans are
/// those traces times the spans per trace of the workload being measured
/// ([`Sink::expect`]). Every [`VERIFY_EVERY`]th payload of a connection (and one without the
/// header) is read whole instead: its traces must match the header and its spans the
/// workload, or the run fails (see [`Sink::problems`]). Reading every body would cost the
/// sink about 1 000 (v0.5) to 2 200 (v0.4) instructions per span on the same 2 cores as the
/// tracer under test; the issue's sink only answers. OTLP requests carry their span count
/// in `X-Bench-Span-Count` (set by the OTLP exporter below).
#[derive(Clone)]
struct Sink {
    url: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    traces: AtomicU64,
    spans: AtomicU64,
    bad_payloads: AtomicU64,
    bad_traces: AtomicU64,
    /// Payloads whose `X-Datadog-Trace-Count` differs from the traces in the body.
    header_mismatches: AtomicU64,
    /// Read payloads whose spans are not their traces times `spans_per_trace`.
    span_mismatches: AtomicU64,
    /// Spans per trace of the workload being measured.
    spans_per_trace: AtomicU64,
}

/// One payload in this many, per connection, is read whole and checked against its header.
const VERIFY_EVERY: u64 = 16;

/// What the sink's `/info` says: the endpoints of a current Datadog agent.
const INFO: &str = r#"{"version":"7.60.0","endpoints":["/v0.4/traces","/v0.5/traces","/v0.7/traces","/info"],"client_drop_p0s":false}"#;

impl Sink {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let counts = Arc::new(Counts::default());
        counts.spans_per_trace.store(1, Relaxed);
        let c = Arc::clone(&counts);
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let c = Arc::clone(&c);
                    let _ = std::thread::Builder::new()
                        .name("sink-conn".into())
                        .spawn(move || serve(stream, &c));
                }
            })
            .expect("sink thread");
        Self {
            url: format!("http://{addr}"),
            counts,
        }
    }

    /// The spans per trace of what is sent from now on (set before a workload's warm-up,
    /// whose flush delivers what came before).
    fn expect(&self, spans_per_trace: u64) {
        self.counts.spans_per_trace.store(spans_per_trace, Relaxed);
    }

    fn traces(&self) -> u64 {
        self.counts.traces.load(Relaxed)
    }

    fn spans(&self) -> u64 {
        self.counts.spans.load(Relaxed)
    }

    /// What the sink could not count, if anything (a broken payload or counter).
    fn problems(&self) -> Option<String> {
        let c = &self.counts;
        let (bad, bad_traces, mismatches, span_mismatches) = (
            c.bad_payloads.load(Relaxed),
            c.bad_traces.load(Relaxed),
            c.header_mismatches.load(Relaxed),
            c.span_mismatches.load(Relaxed),
        );
        (bad + mismatches + span_mismatches > 0).then(|| {
            format!(
                "{bad} unreadable payloads ({bad_traces} traces by their header), \
                 {mismatches} payloads whose X-Datadog-Trace-Count differs from the body, \
                 {span_mismatches} whose spans are not their traces times the workload's spans per trace"
            )
        })
    }
}

fn serve(stream: std::net::TcpStream, counts: &Counts) {
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut payloads = 0u64;
    loop {
        let (mut t, mut s) = (None, 0u64);
        let mut version = None;
        let head = apm::read_request_head(&mut r, &mut line, |l| {
            let value = |name: &str| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(v) = value("x-datadog-trace-count:") {
                t = Some(v);
            }
            if let Some(v) = value("x-bench-span-count:") {
                s = v;
            }
            // The request line: `PUT /v0.4/traces HTTP/1.1` (or POST).
            if let Some((_, rest)) = l.split_once(' ')
                && let Some((path, _)) = rest.split_once(' ')
            {
                match path {
                    "/v0.4/traces" => version = Some(msgpack_count::Version::V04),
                    "/v0.5/traces" => version = Some(msgpack_count::Version::V05),
                    _ => {}
                }
            }
        });
        let Some(head) = head else { return };
        let (len, is_info) = (head.content_length, head.is_info);
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err() {
            return;
        }
        // Counted before the answer: what a flush waited for is counted when it returns.
        if let Some(v) = version {
            payloads += 1;
            let per_trace = counts.spans_per_trace.load(Relaxed);
            let verify = payloads % VERIFY_EVERY == 1;
            match t {
                Some(t) if !verify => {
                    counts.traces.fetch_add(t, Relaxed);
                    counts.spans.fetch_add(t * per_trace, Relaxed);
                }
                _ => match msgpack_count::count(&body, v) {
                    Some((traces, spans)) => {
                        counts.traces.fetch_add(traces, Relaxed);
                        counts.spans.fetch_add(spans, Relaxed);
                        if t.is_some_and(|t| t != traces) {
                            counts.header_mismatches.fetch_add(1, Relaxed);
                        }
                        if spans != traces * per_trace {
                            counts.span_mismatches.fetch_add(1, Relaxed);
                        }
                    }
                    None => {
                        counts.bad_payloads.fetch_add(1, Relaxed);
                        counts.bad_traces.fetch_add(t.unwrap_or(0), Relaxed);
                    }
                },
            }
        } else {
            counts.spans.fetch_add(s, Relaxed);
        }
        let reply = if is_info { INFO } else { "{}" };
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{reply}",
            reply.len()
        );
        if r.get_mut().write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------- the OpenTelemetry SDK peer ----------

/// An OTLP/HTTP exporter: the batch in OTLP protobuf (`opentelemetry-proto`'s mapping),
/// POSTed to the sink on a kept-alive connection.
#[derive(Debug)]
struct OtlpHttp {
    addr: String,
    conn: std::sync::Mutex<Option<BufReader<std::net::TcpStream>>>,
    resource: opentelemetry_sdk::Resource,
}

impl OtlpHttp {
    fn new(sink: &Sink) -> Self {
        Self {
            addr: sink.url.trim_start_matches("http://").to_owned(),
            conn: std::sync::Mutex::new(None),
            resource: opentelemetry_sdk::Resource::builder()
                .with_service_name("bench")
                .build(),
        }
    }

    fn post(&self, body: &[u8], spans: usize) -> std::io::Result<()> {
        let mut guard = self.conn.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        if guard.is_none() {
            let s = std::net::TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            *guard = Some(BufReader::new(s));
        }
        let Some(conn) = guard.as_mut() else {
            return Err(std::io::Error::other("no connection"));
        };
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nX-Bench-Span-Count: {spans}\r\n\r\n",
            self.addr,
            body.len()
        );
        let result = (|| {
            let s = conn.get_mut();
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if conn.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("closed"));
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut reply = vec![0; len];
            conn.read_exact(&mut reply)
        })();
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

impl SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
        use prost::Message as _;
        let n = batch.len();
        let resource = ResourceAttributesWithSchema::from(&self.resource);
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &resource),
        };
        let body = request.encode_to_vec();
        self.post(&body, n)
            .map_err(|e| opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string()))
    }
}

fn otel_sdk(sink: &Sink) -> (SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(OtlpHttp::new(sink)).build())
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

fn ours(sink: &Sink) -> tracer::Tracer {
    let config = tracer::TracerConfig::default()
        .with_service("bench")
        .with_env("bench")
        .with_agent_url(&sink.url)
        .expect("url");
    tracer::Tracer::new(config).expect("tracer")
}

// ---------- the workloads ----------

// In benches/common (shared with span_cost): ours_root, ours_tree, otel_root, otel_tree,
// tracing_root, tracing_tree.

// ---------- subjects ----------

/// One tracer set-up, exporting to its own sink.
struct Subject {
    name: &'static str,
    sink: Sink,
    /// Creates one trace of the workload.
    root: Box<dyn Fn()>,
    tree: Box<dyn Fn()>,
    /// Sends everything finished so far; returns once the sink has it.
    flush: Box<dyn Fn()>,
    /// Runs the closure with the subject's `tracing` dispatcher (if any) as the default.
    scope: Scope,
    /// Prefixes of the export threads' names (15 characters at most on Linux).
    export_threads: &'static [&'static str],
}

impl Subject {
    /// Spans the sink has received (read from the payloads, or the OTLP exporter's count).
    fn delivered_spans(&self) -> u64 {
        self.sink.spans()
    }
}

const OURS_THREAD: &[&str] = &["dd-trace-export"];
const SDK_THREAD: &[&str] = &["OpenTelemetry.T"];

/// Runs a closure in a subject's context.
type Scope = Box<dyn Fn(&mut dyn FnMut())>;

fn no_scope() -> Scope {
    Box::new(|f| f())
}

fn dispatch_scope(d: tracing::Dispatch) -> Scope {
    Box::new(move |f| tracing::dispatcher::with_default(&d, f))
}

fn ours_flush(t: tracer::Tracer) -> Box<dyn Fn()> {
    Box::new(move || {
        let _ = t.flush(Duration::from_secs(60));
    })
}

fn sdk_flush(p: SdkTracerProvider) -> Box<dyn Fn()> {
    Box::new(move || {
        let _ = p.force_flush();
    })
}

fn subject_ours() -> Subject {
    let sink = Sink::start();
    let t = ours(&sink);
    Subject {
        name: "ours native",
        sink,
        root: Box::new(move || ours_root(&t)),
        tree: Box::new(move || ours_tree(&t)),
        flush: ours_flush(t),
        scope: no_scope(),
        export_threads: OURS_THREAD,
    }
}

fn subject_sdk(name: &'static str) -> Subject {
    let sink = Sink::start();
    let (p, t) = otel_sdk(&sink);
    let t2 = t.clone();
    Subject {
        name,
        sink,
        root: Box::new(move || otel_root(&t)),
        tree: Box::new(move || otel_tree(&t2)),
        flush: sdk_flush(p),
        scope: no_scope(),
        export_threads: SDK_THREAD,
    }
}

fn subject_bridge() -> Subject {
    let sink = Sink::start();
    let t = ours(&sink);
    let bridge = tracer::otel::TracerProvider::new(t).tracer("bench");
    let b2 = bridge.clone();
    Subject {
        name: "ours OTel bridge",
        sink,
        root: Box::new(move || otel_root(&bridge)),
        tree: Box::new(move || otel_tree(&b2)),
        flush: ours_flush(t),
        scope: no_scope(),
        export_threads: OURS_THREAD,
    }
}

fn subject_layer() -> Subject {
    subject_tracing("ours tracing Layer", our_layer)
}

/// `tracer::layer::DatadogSubscriber` (no `Registry`): the fast path of the Layer's row.
fn subject_subscriber() -> Subject {
    subject_tracing("ours tracing Subscriber", |t| {
        tracing::Dispatch::new(tracer::layer::DatadogSubscriber::new(t))
    })
}

/// `tracing` spans through the dispatcher `dispatch` makes for our tracer.
fn subject_tracing(name: &'static str, dispatch: fn(tracer::Tracer) -> tracing::Dispatch) -> Subject {
    let sink = Sink::start();
    let t = ours(&sink);
    let d = dispatch(t);
    Subject {
        name,
        sink,
        root: Box::new(tracing_root),
        tree: Box::new(tracing_tree),
        flush: ours_flush(t),
        scope: dispatch_scope(d),
        export_threads: OURS_THREAD,
    }
}

fn subject_tracing_otel() -> Subject {
    let sink = Sink::start();
    let (p, t) = otel_sdk(&sink);
    let d = tracing_otel_layer(t);
    Subject {
        name: "tracing-otel + SDK",
        sink,
        root: Box::new(tracing_root),
        tree: Box::new(tracing_tree),
        flush: sdk_flush(p),
        scope: dispatch_scope(d),
        export_threads: SDK_THREAD,
    }
}

// ---------- measurements ----------

#[derive(Clone, Copy)]
enum Workload {
    Root,
    Tree,
}

impl Workload {
    fn spans(self) -> u64 {
        match self {
            Self::Root => 1,
            Self::Tree => 4,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Root => "root + 5 tags",
            Self::Tree => "4-span tree",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    continuous_ns: f64,
    allocs: f64,
    flood_lost_pct: f64,
    export_cpu_ns: f64,
    paced_p50: f64,
    paced_p99: f64,
}

struct Settings {
    continuous: Duration,
    paced: Duration,
    offered: Duration,
    passes: usize,
}

/// Traces back to back for `secs`, then a flush. Returns ns/span, allocations per span,
/// lost %, export CPU per delivered span.
fn continuous(s: &Subject, w: Workload, run: Duration) -> (f64, f64, f64, f64) {
    let make: &dyn Fn() = match w {
        Workload::Root => &*s.root,
        Workload::Tree => &*s.tree,
    };
    let mut out = (0.0, 0.0, 0.0, 0.0);
    s.sink.expect(w.spans());
    (s.scope)(&mut || {
        // Warm-up: pools, thread-locals, lazily created state.
        for _ in 0..20_000 {
            make();
        }
        (s.flush)();
        let delivered_before = s.delivered_spans();
        let cpu_before = threads_cpu(s.export_threads);
        let allocs_before = allocs();
        let start = Instant::now();
        let mut traces = 0u64;
        while start.elapsed() < run {
            for _ in 0..256 {
                make();
            }
            traces += 256;
        }
        let elapsed = start.elapsed();
        let app_allocs = allocs() - allocs_before;
        (s.flush)();
        let cpu = threads_cpu(s.export_threads).saturating_sub(cpu_before);
        let spans = traces * w.spans();
        let delivered = s.delivered_spans() - delivered_before;
        let lost = spans.saturating_sub(delivered) as f64 * 100.0 / spans as f64;
        out = (
            elapsed.as_nanos() as f64 / spans as f64,
            app_allocs as f64 / spans as f64,
            lost,
            cpu.as_nanos() as f64 / delivered.max(1) as f64,
        );
    });
    out
}

/// 10 k traces/s in bursts of 32; returns p50 and p99 of the ns per span of each burst.
fn paced(s: &Subject, w: Workload, run: Duration) -> (f64, f64) {
    const BURST: u32 = 32;
    let period = Duration::from_micros(3200);
    s.sink.expect(w.spans());
    let make: &dyn Fn() = match w {
        Workload::Root => &*s.root,
        Workload::Tree => &*s.tree,
    };
    let mut samples = Vec::new();
    (s.scope)(&mut || {
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < run {
            let t = Instant::now();
            for _ in 0..BURST {
                make();
            }
            samples.push(t.elapsed().as_nanos() as f64 / f64::from(BURST) / w.spans() as f64);
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        (s.flush)();
    });
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99))
}

struct Offered {
    rate: u64,
    created: u64,
    achieved: f64,
    delivered: u64,
}

/// `rate` single-span traces/s in 1 ms slots for `run`, then a flush.
fn offered(s: &Subject, rate: u64, run: Duration) -> Offered {
    let per_slot = rate / 1000;
    let slot = Duration::from_millis(1);
    s.sink.expect(1);
    let mut out = Offered {
        rate,
        created: 0,
        achieved: 0.0,
        delivered: 0,
    };
    (s.scope)(&mut || {
        let before = s.delivered_spans();
        let start = Instant::now();
        let mut next = start;
        let mut created = 0u64;
        while start.elapsed() < run {
            for _ in 0..per_slot {
                (s.root)();
            }
            created += per_slot;
            next += slot;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        let elapsed = start.elapsed();
        (s.flush)();
        out.created = created;
        out.achieved = created as f64 / elapsed.as_secs_f64();
        out.delivered = s.delivered_spans() - before;
    });
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn measure(s: &Subject, w: Workload, set: &Settings) -> Figures {
    let mut runs = Vec::new();
    for _ in 0..set.passes {
        runs.push(continuous(s, w, set.continuous));
    }
    let mut ns: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut al: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let mut lost: Vec<f64> = runs.iter().map(|r| r.2).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.3).collect();
    let (p50, p99) = paced(s, w, set.paced);
    Figures {
        continuous_ns: median(&mut ns),
        allocs: median(&mut al),
        flood_lost_pct: median(&mut lost),
        export_cpu_ns: median(&mut cpu),
        paced_p50: p50,
        paced_p99: p99,
    }
}

fn row(name: &str, f: &Figures) {
    println!(
        "| {name:<22} | {:>8.0} | {:>6.0} ({:>5.0}) | {:>6.2} | {:>6.1} | {:>8.0} |",
        f.continuous_ns, f.paced_p50, f.paced_p99, f.allocs, f.flood_lost_pct, f.export_cpu_ns
    );
}

fn ratio_row(label: &str, ours: &Figures, peer: &Figures) {
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "| {:<22} | {:>8.2} | {:>6.2} ({:>5.2}) | {:>6} | {:>6} | {:>8.2} |",
        label,
        r(ours.continuous_ns, peer.continuous_ns),
        r(ours.paced_p50, peer.paced_p50),
        r(ours.paced_p99, peer.paced_p99),
        "",
        "",
        r(ours.export_cpu_ns, peer.export_cpu_ns),
    );
}

/// `--callgrind <subject> <root|tree> <traces>`: only that subject, `traces` traces back
/// to back after a warm-up, then a flush; for `valgrind --tool=callgrind
/// --separate-threads=yes`, where two runs with different counts give the instructions
/// per trace on the application thread and on the export thread (see README).
fn callgrind(args: &[String]) {
    let subject = args.first().map_or("ours", String::as_str);
    let workload = match args.get(1).map(String::as_str) {
        Some("tree") => Workload::Tree,
        _ => Workload::Root,
    };
    let traces: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let s = subject_named(subject);
    s.sink.expect(workload.spans());
    let make: &dyn Fn() = match workload {
        Workload::Root => &*s.root,
        Workload::Tree => &*s.tree,
    };
    (s.scope)(&mut || {
        for _ in 0..1000 {
            make();
        }
        (s.flush)();
        // Small batches with a flush after each keep the queue from overflowing under
        // valgrind's serialised threads.
        let mut left = traces;
        while left > 0 {
            let n = left.min(500);
            for _ in 0..n {
                make();
            }
            (s.flush)();
            left -= n;
        }
    });
    println!(
        "{} {}: {} traces, {} spans delivered ({} traces in Datadog payloads)",
        s.name,
        workload.label(),
        traces + 1000,
        s.delivered_spans(),
        s.sink.traces()
    );
}

/// The subject a command line names (`ours` when the name is unknown).
fn subject_named(name: &str) -> Subject {
    match name {
        "bridge" => subject_bridge(),
        "layer" => subject_layer(),
        "subscriber" => subject_subscriber(),
        "sdk" => subject_sdk("OTel SDK + BSP"),
        "tracing-otel" => subject_tracing_otel(),
        "datadog" => datadog_peer::subject_datadog(),
        _ => subject_ours(),
    }
}

fn offered_row(s: &Subject, o: &Offered) {
    println!(
        "| {:<22} | {:>9} | {:>10.0} | {:>7} | {:>9} | {:>6.2} |",
        s.name,
        o.rate,
        o.achieved,
        o.created,
        o.delivered,
        o.created.saturating_sub(o.delivered) as f64 * 100.0 / o.created.max(1) as f64
    );
}

/// `--offered <subject> [seconds] [rates…]`: only the offered-load rows of one subject
/// (default 3 s per rate, at 250 k, 500 k and 1 M traces/s), for before/after comparisons
/// of the export path.
fn offered_only(args: &[String]) {
    let s = subject_named(args.first().map_or("ours", String::as_str));
    let secs = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(3.0);
    println!("| subject                | offered/s | achieved/s | created | delivered | lost % |");
    println!("|---|---|---|---|---|---|");
    (s.scope)(&mut || {
        for _ in 0..20_000 {
            (s.root)();
        }
        (s.flush)();
    });
    // Further arguments: other rates (traces/s, multiples of 1000) instead of the three.
    let mut rates: Vec<u64> = args.iter().skip(2).filter_map(|v| v.parse().ok()).collect();
    if rates.is_empty() {
        rates = vec![250_000, 500_000, 1_000_000];
    }
    for rate in rates {
        let o = offered(&s, rate, Duration::from_secs_f64(secs));
        offered_row(&s, &o);
    }
}

fn main() {
    msgpack_count::self_check();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind") {
        callgrind(args.get(i + 1..).unwrap_or_default());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--offered") {
        offered_only(args.get(i + 1..).unwrap_or_default());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick" || a == "--test")
        || std::env::var_os("SPAN_LOAD_QUICK").is_some_and(|v| v == "1");
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let set = if quick {
        Settings {
            continuous: Duration::from_millis(150),
            paced: Duration::from_millis(150),
            offered: Duration::from_millis(200),
            passes: 1,
        }
    } else {
        Settings {
            continuous: Duration::from_secs(2),
            paced: Duration::from_secs(3),
            offered: Duration::from_secs(3),
            passes: 3,
        }
    };

    // Each group: ours (one or more), then the peer; a ratio row per one of ours.
    // `--only <peer>` (`sdk`, `tracing-otel`, `datadog`): only the groups of that peer.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let groups: Vec<(Vec<Subject>, Subject)> = [
        ("sdk", vec![subject_ours as fn() -> Subject]),
        ("sdk", vec![subject_bridge]),
        ("tracing-otel", vec![subject_layer]),
        ("tracing-otel", vec![subject_subscriber]),
        ("datadog", vec![subject_ours, subject_bridge]),
    ]
    .into_iter()
    .filter(|(peer, _)| only.is_none_or(|o| o == *peer))
    .map(|(peer, ours)| (ours.iter().map(|f| f()).collect(), subject_named(peer)))
    .collect();

    let mut broken = Vec::new();
    println!(
        "span_load ({} mode): continuous {:?} x {} passes (median), paced 10 k traces/s in bursts of 32 for {:?}",
        if quick { "quick" } else { "full" },
        set.continuous,
        set.passes,
        set.paced
    );
    for w in [Workload::Root, Workload::Tree] {
        println!();
        println!("{} (ns per span; export CPU per delivered span)", w.label());
        println!("| subject                | continuous | paced p50 (p99) | allocs | lost % | export CPU |");
        println!("|---|---|---|---|---|---|");
        for (ours, peer) in &groups {
            let a: Vec<Figures> = ours.iter().map(|s| measure(s, w, &set)).collect();
            let b = measure(peer, w, &set);
            for (s, f) in ours.iter().zip(&a) {
                row(s.name, f);
            }
            row(peer.name, &b);
            for (s, f) in ours.iter().zip(&a) {
                let label = if ours.len() == 1 {
                    "  ratio ours / peer".to_owned()
                } else {
                    format!("  ratio {} / peer", s.name.strip_prefix("ours ").unwrap_or(s.name))
                };
                ratio_row(&label, f, &b);
            }
            for (s, f) in ours.iter().zip(&a).chain([(peer, &b)]) {
                if f.flood_lost_pct >= 100.0 {
                    broken.push(format!("{}: nothing reached the sink ({})", s.name, w.label()));
                }
            }
        }
    }

    println!();
    println!(
        "offered load: single-span traces (root + 5 tags) in 1 ms slots for {:?}, then flush",
        set.offered
    );
    println!("| subject                | offered/s | achieved/s | created | delivered | lost % |");
    println!("|---|---|---|---|---|---|");
    let mut done = Vec::new();
    for (ours, peer) in &groups {
        for s in ours.iter().chain([peer]) {
            if done.contains(&s.name) {
                continue;
            }
            done.push(s.name);
            for rate in [250_000, 500_000, 1_000_000] {
                let o = offered(s, rate, set.offered);
                offered_row(s, &o);
            }
        }
    }
    for s in groups.iter().flat_map(|(ours, peer)| ours.iter().chain([peer])) {
        if let Some(p) = s.sink.problems() {
            broken.push(format!("{}: the sink could not count: {p}", s.name));
        }
    }
    if !broken.is_empty() {
        println!();
        for b in &broken {
            println!("BROKEN: {b}");
        }
        std::process::exit(1);
    }
}
