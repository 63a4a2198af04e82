//! Shared harness for the workspace's end-to-end tests, benchmarks and examples:
//! free loopback ports, child processes that are always reaped, readiness probes, and
//! the real peers (the Python `ddtrace` client running `testdata/peer/flask_app.py`, and
//! `ddapm-test-agent`, installed by `scripts/peer-venv.sh`).
//!
//! Everything here talks to loopback only.

#[allow(unsafe_code)] // a GlobalAlloc impl, forwarding to the system allocator
mod alloc_count;
pub use alloc_count::{CountingAllocator, allocations};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the Python venv that holds the peer clients.
pub const PEER_VENV_ENV: &str = "APM_PEER_VENV";

/// A loopback port that was free when asked for.
///
/// # Panics
/// When the OS gives no ephemeral port (a broken test machine).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local addr").port()
}

/// The workspace root (where the root `Cargo.toml` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with `ddtrace`, `flask` and `ddapm-test-agent`.
///
/// # Panics
/// When `APM_PEER_VENV` is unset or does not hold the peers: the tests that need a real
/// peer must fail loudly rather than pass without it. `scripts/test.sh` sets it up.
pub fn peer_venv() -> PathBuf {
    let dir = std::env::var_os(PEER_VENV_ENV).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{PEER_VENV_ENV} is not set: run the tests through scripts/test.sh, which installs the real peers")
    });
    assert!(
        dir.join("bin/ddapm-test-agent").exists() && dir.join("bin/ddtrace-run").exists(),
        "{} does not hold ddapm-test-agent and ddtrace-run; run scripts/peer-venv.sh",
        dir.display()
    );
    dir
}

/// A fresh, unique directory under `target/test-runs/` for one test's outputs.
pub fn run_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = workspace_root()
        .join("target")
        .join("test-runs")
        .join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create test run dir");
    dir
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`, with stdout and stderr appended to `log`.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("create child log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; kills after that.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_and_wait("TERM", timeout)
    }

    /// Sends `signal` (`"INT"`, `"TERM"`, …) and waits up to `timeout` for the exit status;
    /// kills after that.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        // `kill` through the command line keeps this crate free of `unsafe`.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Polls until something accepts TCP connections on `addr` (a readiness probe).
///
/// # Panics
/// When nothing listens within `timeout`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A minimal blocking HTTP/1.1 exchange for tests: returns status and body.
///
/// # Errors
/// On any I/O error or a reply that is not HTTP.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

/// `GET path` on `addr`, returning status and body as text.
///
/// # Panics
/// On I/O errors (the peer is expected to be up).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) =
        http_request(addr, "GET", path, &[], &[]).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Datadog's reference test agent (`ddapm-test-agent` from PyPI) on a free loopback port.
#[derive(Debug)]
pub struct TestAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    child: ChildGuard,
    /// Its log file.
    pub log: PathBuf,
}

impl TestAgent {
    /// The checks every test runs with, as the tracer issue asks.
    pub const CHECKS: &'static str = "trace_count_header,meta_tracer_version_header,trace_content_length";

    /// Starts it with [`Self::CHECKS`] enabled and failures pooled, and waits until `/info` answers.
    ///
    /// # Panics
    /// When the venv is missing or the agent does not come up.
    pub fn start(dir: &Path) -> Self {
        let venv = peer_venv();
        let port = free_port();
        let otlp_http = free_port();
        let otlp_grpc = free_port();
        let log = dir.join("test-agent.log");
        let mut cmd = Command::new(venv.join("bin/ddapm-test-agent"));
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--otlp-http-port")
            .arg(otlp_http.to_string())
            .arg("--otlp-grpc-port")
            .arg(otlp_grpc.to_string())
            .arg("--pool-trace-check-failures=1")
            .env("ENABLED_CHECKS", Self::CHECKS)
            .current_dir(dir);
        let child = ChildGuard::spawn("ddapm-test-agent", cmd, &log);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_request(addr, "GET", "/info", &[], &[]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ddapm-test-agent did not answer /info on {addr}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { addr, child, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GET on the test agent, returning status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    /// Stops it.
    pub fn stop(mut self) {
        self.child.terminate(Duration::from_secs(5));
    }
}

/// Decodes standard base64 (characters outside the alphabet, such as padding, are skipped): the
/// test agent's `/test/session/requests` returns request bodies so.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Outcome of one [`run_flask_demo`] run.
#[derive(Debug)]
pub struct FlaskDemoRun {
    /// Output directory (app.log, requests.tsv, env.txt, summary.txt).
    pub dir: PathBuf,
    /// `summary.txt`: statuses per route, the app's exit, the tracer's send errors.
    pub summary: String,
    /// Lines of `app.log` where the tracer says it could not send.
    pub send_errors: usize,
}

/// `testdata/` of the workspace: captured payloads and the peer harness's data.
pub fn testdata_dir() -> PathBuf {
    workspace_root().join("testdata")
}

/// Runs the Flask demo (`testdata/peer/flask_app.py`) under the real Python `ddtrace`
/// (`ddtrace-run`) against an agent on `127.0.0.1:agent_port`, fires `requests` GETs over
/// `/`, `/api/apm`, `/api/trace`, `/api/error` in turn (every 4th answers 500), then stops the
/// app with SIGINT (ddtrace flushes on exit) and writes `app.log`, `requests.tsv`, `env.txt`
/// and `summary.txt` into `dir`.
///
/// `env` adds variables for the app (any `DD_*`, e.g. `("DD_TRACE_API_VERSION", "v0.4")`),
/// plus two knobs: `STATS=true` (`DD_TRACE_STATS_COMPUTATION_ENABLED`) and `REQ_INTERVAL`
/// (seconds between requests, to spread them over several tracer flushes).
///
/// # Panics
/// When the venv is missing or the app does not come up.
pub fn run_flask_demo(agent_port: u16, dir: &Path, requests: usize, env: &[(&str, &str)]) -> FlaskDemoRun {
    const ROUTES: [&str; 4] = ["/", "/api/apm", "/api/trace", "/api/error"];
    let venv = peer_venv();
    std::fs::create_dir_all(dir).expect("create the run dir");
    let app_port = free_port();
    let mut vars: Vec<(String, String)> = vec![
        ("DD_SERVICE".into(), "flask-demo".into()),
        ("DD_ENV".into(), "demo".into()),
        ("DD_VERSION".into(), "1.0".into()),
        ("DD_AGENT_HOST".into(), "127.0.0.1".into()),
        ("DD_TRACE_AGENT_PORT".into(), agent_port.to_string()),
        ("DD_TRACE_STATS_COMPUTATION_ENABLED".into(), "false".into()),
        ("DD_INSTRUMENTATION_TELEMETRY_ENABLED".into(), "false".into()),
        ("PORT".into(), app_port.to_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    let mut interval = Duration::ZERO;
    for (k, v) in env {
        match *k {
            "STATS" => vars.push(("DD_TRACE_STATS_COMPUTATION_ENABLED".into(), (*v).into())),
            "REQ_INTERVAL" => {
                interval = Duration::from_secs_f64(v.parse().expect("REQ_INTERVAL is a number of seconds"));
            }
            _ => vars.push(((*k).into(), (*v).into())),
        }
    }
    let mut cmd = Command::new(venv.join("bin/ddtrace-run"));
    cmd.arg(venv.join("bin/python"))
        .arg(testdata_dir().join("peer/flask_app.py"))
        .env_remove("DD_TRACE_AGENT_URL");
    let mut env_txt = String::new();
    for (k, v) in &vars {
        cmd.env(k, v);
    }
    let mut sorted: Vec<_> = vars.iter().rev().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0); // the last value given for a name wins, as in `cmd.env`
    for (k, v) in sorted {
        env_txt.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(dir.join("env.txt"), env_txt).expect("write env.txt");
    let log = dir.join("app.log");
    let mut app = ChildGuard::spawn("ddtrace-run flask_app.py", cmd, &log);
    let addr: SocketAddr = ([127, 0, 0, 1], app_port).into();
    // Readiness: a TCP connect, not an HTTP request (which would make a trace of its own).
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            app.is_running() && Instant::now() < deadline,
            "the Flask demo did not come up on {addr}; app.log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tsv = String::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..requests {
        let route = ROUTES[i % ROUTES.len()];
        let status = http_request(addr, "GET", route, &[], &[]).map_or(0, |(s, _)| s);
        tsv.push_str(&format!("{route}\t{status}\n"));
        *counts.entry(format!("{route} -> {status}")).or_default() += 1;
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    std::fs::write(dir.join("requests.tsv"), &tsv).expect("write requests.tsv");
    // SIGINT, not SIGTERM: Python turns it into KeyboardInterrupt, so the interpreter exits
    // normally and ddtrace's exit hook flushes every trace (and client stats) it holds.
    let exit = app.signal_and_wait("INT", Duration::from_secs(20));
    let app_log = std::fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = app_log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("failed to send") || l.contains("unsupported endpoint") || l.contains("connection refused")
        })
        .collect();
    let mut summary = format!("agent: 127.0.0.1:{agent_port}\napp: {addr}, exit {exit:?}\nrequests: {requests}\n");
    for (k, n) in &counts {
        summary.push_str(&format!("  {k} x{n}\n"));
    }
    summary.push_str(&format!("tracer send errors in app.log: {}\n", errors.len()));
    for e in errors.iter().take(5) {
        summary.push_str(&format!("  {e}\n"));
    }
    std::fs::write(dir.join("summary.txt"), &summary).expect("write summary.txt");
    FlaskDemoRun {
        dir: dir.to_path_buf(),
        summary,
        send_errors: errors.len(),
    }
}

/// A trace-agent stand-in on loopback for benchmarks: reads every request (keep-alive) and
/// answers `200 {}`, on its own threads. Returns its URL.
///
/// # Panics
/// When no loopback port can be bound.
pub fn sink_agent() -> String {
    sink_agent_with_info("{}")
}

/// [`sink_agent`] whose `GET /info` answers `info` (a JSON document), e.g. one listing
/// `/v0.6/stats` so a tracer turns client-side stats on; everything else gets `200 {}`.
///
/// # Panics
/// When no loopback port can be bound.
pub fn sink_agent_with_info(info: &'static str) -> String {
    use std::io::{BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while let Some(head) = read_request_head(&mut r, &mut line, |_| {}) {
                    let mut body = vec![0; head.content_length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = if head.is_info { info } else { "{}" };
                    let ok = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{reply}",
                        reply.len()
                    );
                    if r.get_mut().write_all(ok.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// What a sink agent needs from a request's head.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    /// The request is `GET /info`.
    pub is_info: bool,
    /// `Content-Length` (0 when absent or not a number).
    pub content_length: usize,
}

/// Reads one HTTP/1.1 request head from `r` up to its blank line (`line` is the reused line
/// buffer), calling `header` with every line lower-cased and trimmed; `None` at the end of
/// the stream (the peer closed the connection).
pub fn read_request_head(
    r: &mut impl std::io::BufRead,
    line: &mut String,
    mut header: impl FnMut(&str),
) -> Option<RequestHead> {
    let mut head = RequestHead {
        is_info: false,
        content_length: 0,
    };
    loop {
        line.clear();
        if r.read_line(line).unwrap_or(0) == 0 {
            return None;
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            return Some(head);
        }
        if l.starts_with("get /info ") {
            head.is_info = true;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            head.content_length = v.trim().parse().unwrap_or(0);
        }
        header(&l);
    }
}

/// A protobuf length-delimited field: the key of `field` (wire type 2), the varint length of
/// `inner`, then `inner` (hand-built protobuf bodies for decoder limits).
pub fn pb_field(field: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    let mut n = inner.len();
    loop {
        let b = u8::try_from(n & 0x7f).unwrap_or(0);
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(inner);
    out
}

/// The 4-span trace the client-stats bench and example make: an HTTP server root (`resource`,
/// type `web`, status 200) with a handler, a measured SQL query under the handler and a
/// render span; the three children are finished, the root is returned open.
pub fn four_span_trace(t: &tracer::Tracer, resource: &'static str) -> tracer::Span {
    let root = t
        .span("http.request")
        .resource(resource)
        .span_type("web")
        .tag("http.method", "GET")
        .tag("span.kind", "server")
        .tag("http.status_code", "200")
        .start();
    {
        let child = root.child("handler").start();
        drop(
            child
                .child("db.query")
                .resource("SELECT 1")
                .span_type("sql")
                .measured()
                .start(),
        );
    }
    drop(root.child("render").start());
    root
}

/// A tracer configuration for the client-stats bench and example: a [`sink_agent_with_info`]
/// answering `info`, a queue that does not fill, no timed flush (the caller flushes), sample
/// rate `rate` without a rate limit, client-side stats `stats`.
///
/// # Panics
/// When no loopback port can be bound.
pub fn sink_tracer_config(info: &'static str, stats: bool, rate: f64) -> tracer::TracerConfig {
    tracer::TracerConfig::default()
        .with_agent_url(&sink_agent_with_info(info))
        .expect("a loopback URL")
        .with_queue_capacity(64 * 1024)
        .with_flush_interval(std::time::Duration::from_secs(3600))
        .with_sample_rate(rate)
        .with_rate_limit(1e12)
        .with_stats_computation(stats)
}
