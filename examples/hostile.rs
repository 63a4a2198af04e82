//! The hostile-client table of issue 10, replayed against a `trace-agent` binary (run by
//! `scripts/hostile.sh`; loopback only, every case bounded in count and time):
//!
//! ```text
//! hostile <trace-agent binary> <work dir> [case number …]
//! ```
//!
//! Each case starts its own agent (its configuration, its data and spool directories under
//! `<work dir>/<case>`), plays the hostile client, and prints the status codes it saw, the wall
//! time, the agent's peak RSS (`VmHWM` of the child) and the bound it must stay under. The exit
//! code is 1 when any bound is exceeded. Each case's agent log is `<work dir>/<case>/agent.log`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports on stdout

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The raw HTTP and msgpack bytes of a hostile client, shared with the agent's own
// `trace-agent/tests/hostile.rs`.
#[path = "../trace-agent/tests/common/raw_http.rs"]
mod raw_http;

use raw_http::{array32, distinct_services, request, str_or_str32, try_exchange};

const MB: u64 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: hostile <trace-agent binary> <work dir> [case number …]");
        std::process::exit(2);
    }
    let ctx = Ctx {
        bin: PathBuf::from(&args[1]),
        dir: PathBuf::from(&args[2]),
    };
    let only: Vec<usize> = args[3..].iter().filter_map(|a| a.parse().ok()).collect();
    let cases: Vec<(&str, Case)> = vec![
        (
            "v0.4 payload of 200 000 single-span traces, distinct services",
            case_many_services,
        ),
        (
            "10 MB body: one trace of 10 M empty spans; 10 M empty traces",
            case_empty_spans,
        ),
        ("100 concurrent 24 MB bodies to /v0.6/stats", case_stats_bodies),
        ("40 × 24 MB /v0.4/traces while the decoder is busy", case_busy_decoder),
        ("20 payloads, each with a distinct 5 MB service name", case_huge_names),
        (
            "a field name with terminal escapes, then `trace-agent status`",
            case_escapes,
        ),
        ("GET /trace-agent/status with Host: evil.example", case_rebinding),
        (
            "a mistyped additional_endpoints (env and YAML) holding the API key",
            case_secret,
        ),
        ("local mode: data directory and database file modes", case_modes),
        (
            "local size cap 16 MiB under a burst: stats kept, disk bounded",
            case_size_cap,
        ),
        ("SIGTERM while the intake hangs (Datadog mode)", case_sigterm_hang),
        ("local mode: 100 000 traces accepted, then SIGTERM", case_local_sigterm),
        (
            "local mode at saturation (1000-trace payloads, 10 s), status while writing",
            case_local_saturation,
        ),
        (
            "Datadog mode, intake down, 15 s of 1000-trace payloads",
            case_intake_down,
        ),
        (
            "8 slow clients trickling bodies while a fast tracer sends",
            case_slow_clients,
        ),
        ("OTLP/HTTP: 200 KB protobuf of 100 000 empty spans", case_otlp_bomb),
    ];
    let _ = std::fs::create_dir_all(&ctx.dir);
    println!("| # | case | status codes | wall time | peak RSS | bound | result |");
    println!("|---|---|---|---|---|---|---|");
    let mut failed = 0;
    for (i, (name, run)) in cases.iter().enumerate() {
        let n = i + 1;
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        let started = Instant::now();
        let o = run(&ctx);
        let wall = o.wall.unwrap_or_else(|| started.elapsed());
        let codes = if o.codes.is_empty() {
            "—".to_owned()
        } else {
            o.codes
                .iter()
                .map(|(c, n)| format!("{c}×{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let peak = o.peak.map_or_else(|| "—".to_owned(), |p| format!("{} MB", p / MB));
        let result = if o.ok {
            "ok".to_owned()
        } else {
            format!("**FAIL** {}", o.note)
        };
        if !o.ok {
            failed += 1;
        }
        println!(
            "| {n} | {name} | {codes} | {:.1} s | {peak} | {} | {result} |",
            wall.as_secs_f64(),
            o.bound
        );
        if o.ok && !o.note.is_empty() {
            eprintln!("   case {n}: {}", o.note);
        }
    }
    if failed > 0 {
        eprintln!("hostile: {failed} case(s) over their bound");
        std::process::exit(1);
    }
}

/// One case of the table: plays the client against agents it starts.
type Case = fn(&Ctx) -> Outcome;

struct Ctx {
    bin: PathBuf,
    dir: PathBuf,
}

#[derive(Default)]
struct Outcome {
    codes: BTreeMap<u16, u64>,
    wall: Option<Duration>,
    peak: Option<u64>,
    bound: String,
    ok: bool,
    note: String,
}

impl Outcome {
    fn code(&mut self, c: u16) {
        *self.codes.entry(c).or_default() += 1;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running agent, killed on drop.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
    bin: PathBuf,
}

impl Agent {
    /// `trace-agent run` with `env` (on top of: no socket, local mode off, a spool under the
    /// case's directory); waits until it listens.
    fn start(ctx: &Ctx, case: &str, env: &[(&str, String)]) -> Self {
        let dir = ctx.dir.join(case);
        let _ = std::fs::create_dir_all(&dir);
        let port = free_port();
        let log = dir.join("agent.log");
        let mut cmd = Command::new(&ctx.bin);
        cmd.args(["run", "--port", &port.to_string()])
            .env_clear()
            .env("DD_APM_RECEIVER_SOCKET", "")
            .env("DD_APM_LOCAL_ENABLED", "false")
            .env("DD_HOSTNAME", "hostile")
            .env("DD_APM_SPOOL_DIR", dir.join("spool"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the agent");
        let agent = Self {
            child,
            port,
            log,
            bin: ctx.bin.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&agent.addr(), Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the agent did not listen on {}",
                agent.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn proc_kb(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    }

    /// Peak resident memory so far (bytes).
    fn peak(&self) -> u64 {
        self.proc_kb("VmHWM:")
    }

    fn rss(&self) -> u64 {
        self.proc_kb("VmRSS:")
    }

    fn status(&self) -> serde_json::Value {
        let (_, _, body) = exchange(self.addr(), &request("GET", "/trace-agent/status", &[], b""));
        serde_json::from_slice(&body).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .args(["--port", &self.port.to_string()])
            .env_clear()
            .output()
            .expect("run the CLI")
    }

    /// SIGTERM, then the time until the process exited (`None`: still alive after `limit`,
    /// then killed) and its exit status.
    fn terminate(&mut self, limit: Duration) -> (Option<Duration>, Option<i32>) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (Some(started.elapsed()), st.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (None, None)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `raw` and reads the whole reply: status (0: no reply), head, body.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, Vec<u8>) {
    try_exchange(addr, raw).unwrap_or_default()
}

const MSGPACK: (&str, &str) = ("Content-Type", "application/msgpack");
const REAL_STATUS: (&str, &str) = ("Datadog-Send-Real-Http-Status", "true");

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0))
}

/// One kept span `{service, name, resource, trace_id, span_id, parent_id, start, duration,
/// metrics: {_sampling_priority_v1: 2}}`.
fn span(buf: &mut Vec<u8>, service: &[u8], trace_id: u64, span_id: u64, parent: u64, start: u64) {
    buf.push(0x89);
    for (k, v) in [
        (&b"service"[..], service),
        (b"name", b"hostile.op"),
        (b"resource", b"GET /h"),
    ] {
        str_or_str32(buf, k);
        str_or_str32(buf, v);
    }
    for (k, v) in [
        (&b"trace_id"[..], trace_id),
        (b"span_id", span_id),
        (b"parent_id", parent),
        (b"start", start),
        (b"duration", 1_000_000),
    ] {
        str_or_str32(buf, k);
        buf.push(0xcf);
        buf.extend_from_slice(&v.to_be_bytes());
    }
    str_or_str32(buf, b"metrics");
    buf.push(0x81);
    str_or_str32(buf, b"_sampling_priority_v1");
    buf.push(0xcb);
    buf.extend_from_slice(&2.0f64.to_be_bytes());
}

/// `n` two-span traces (ids from `first`) over 50 services.
fn traces(first: u64, n: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(usize::try_from(n).unwrap_or(0) * 320);
    array32(&mut b, usize::try_from(n).unwrap_or(0));
    let start = now_ns();
    for t in first..first + n {
        b.push(0x92);
        let service = format!("svc-{}", t % 50);
        span(&mut b, service.as_bytes(), t, t * 2, 0, start);
        span(&mut b, service.as_bytes(), t, t * 2 + 1, t * 2, start);
    }
    b
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    exchange(addr, &request("POST", path, headers, body)).0
}

/// `clients` concurrent requests of the same `body`; their status codes.
fn concurrent(
    addr: SocketAddr,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    clients: usize,
    body: &Arc<Vec<u8>>,
) -> Vec<u16> {
    let raw = Arc::new(request("POST", path, &headers, body));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let raw = Arc::clone(&raw);
            std::thread::spawn(move || exchange(addr, &raw).0)
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).collect()
}

fn bound(o: &mut Outcome, ok: bool, why: impl Into<String>) {
    if !ok {
        o.ok = false;
        let why = why.into();
        if !o.note.is_empty() {
            o.note.push_str("; ");
        }
        o.note.push_str(&why);
    }
}

fn outcome(bound_text: &str) -> Outcome {
    Outcome {
        bound: bound_text.to_owned(),
        ok: true,
        ..Outcome::default()
    }
}

fn case_many_services(ctx: &Ctx) -> Outcome {
    let mut o = outcome("200, ≤ 10 s, ≤ 512 MB");
    let agent = Agent::start(ctx, "01-many-services", &[]);
    let body = distinct_services(200_000);
    let started = Instant::now();
    let code = post(agent.addr(), "/v0.4/traces", &[MSGPACK, REAL_STATUS], &body);
    let took = started.elapsed();
    o.code(code);
    o.wall = Some(took);
    o.peak = Some(agent.peak());
    bound(&mut o, code == 200, format!("status {code}"));
    bound(&mut o, took <= Duration::from_secs(10), format!("took {took:?}"));
    bound(&mut o, agent.peak() <= 512 * MB, "peak RSS");
    o
}

fn case_empty_spans(ctx: &Ctx) -> Outcome {
    let mut o = outcome("413 ×2, ≤ 150 MB");
    let agent = Agent::start(ctx, "02-empty-spans", &[]);
    let n = 10_000_000;
    let mut one_trace = vec![0x91];
    array32(&mut one_trace, n);
    one_trace.resize(one_trace.len() + n, 0x80);
    let mut empty_traces = Vec::new();
    array32(&mut empty_traces, n);
    empty_traces.resize(empty_traces.len() + n, 0x90);
    for body in [one_trace, empty_traces] {
        let code = post(agent.addr(), "/v0.4/traces", &[MSGPACK, REAL_STATUS], &body);
        o.code(code);
        bound(&mut o, code == 413, format!("status {code}"));
    }
    o.peak = Some(agent.peak());
    bound(&mut o, agent.peak() <= 150 * MB, "peak RSS");
    o
}

fn case_stats_bodies(ctx: &Ctx) -> Outcome {
    let mut o = outcome("4xx each, ≤ 300 MB");
    let agent = Agent::start(ctx, "03-stats-bodies", &[]);
    let body = Arc::new(vec![0xc1u8; 24_000_000]);
    for c in concurrent(agent.addr(), "/v0.6/stats", vec![MSGPACK], 100, &body) {
        o.code(c);
        bound(&mut o, (400..500).contains(&c), format!("status {c}"));
    }
    o.peak = Some(agent.peak());
    bound(&mut o, agent.peak() <= 300 * MB, "peak RSS");
    o
}

fn case_busy_decoder(ctx: &Ctx) -> Outcome {
    let mut o = outcome("200/429/400, ≤ 400 MB");
    let agent = Agent::start(ctx, "04-busy-decoder", &[("DD_APM_DECODERS", "1".to_owned())]);
    let addr = agent.addr();
    let busy = std::thread::spawn(move || {
        post(
            addr,
            "/v0.4/traces",
            &[MSGPACK, REAL_STATUS],
            &distinct_services(200_000),
        )
    });
    let body = Arc::new(vec![0xc1u8; 24_000_000]);
    for c in concurrent(addr, "/v0.4/traces", vec![MSGPACK, REAL_STATUS], 40, &body) {
        o.code(c);
        bound(&mut o, matches!(c, 400 | 429), format!("status {c}"));
    }
    let c = busy.join().unwrap_or(0);
    o.code(c);
    bound(&mut o, matches!(c, 200 | 429), format!("the busy payload: {c}"));
    o.peak = Some(agent.peak());
    bound(&mut o, agent.peak() <= 400 * MB, "peak RSS");
    o
}

fn case_huge_names(ctx: &Ctx) -> Outcome {
    let mut o = outcome("200 ×20, RSS after ≤ 120 MB, status answers");
    let agent = Agent::start(ctx, "05-huge-names", &[]);
    for i in 0..20u8 {
        let mut name = vec![b'a' + i; 5 << 20];
        name[0] = b'x';
        let mut body = vec![0x91, 0x91];
        span(&mut body, &name, 1, 1, 0, now_ns());
        o.code(post(agent.addr(), "/v0.4/traces", &[MSGPACK], &body));
    }
    o.peak = Some(agent.peak());
    let all = o.codes.get(&200) == Some(&20);
    bound(&mut o, all, "not all 200");
    let rss = agent.rss();
    bound(&mut o, rss <= 120 * MB, format!("RSS after {} MB", rss / MB));
    let out = agent.cli(&["status"]);
    bound(&mut o, out.status.success(), "`trace-agent status` failed");
    o.note.push_str(&format!("RSS after: {} MB", rss / MB));
    o
}

fn case_escapes(ctx: &Ctx) -> Outcome {
    let mut o = outcome("400, no raw ESC/BEL in `status`");
    let agent = Agent::start(ctx, "06-escapes", &[]);
    let key = b"\x1b]0;pwned\x07\x1b[2Jk";
    let mut body = vec![0x91, 0x91, 0x81];
    str_or_str32(&mut body, b"meta");
    body.push(0x81);
    str_or_str32(&mut body, key);
    body.extend_from_slice(&[0x92, 0x01, 0x02]);
    let code = post(agent.addr(), "/v0.4/traces", &[MSGPACK], &body);
    o.code(code);
    let out = agent.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    bound(&mut o, code == 400, format!("status {code}"));
    bound(&mut o, text.contains("pwned"), "the error is not shown");
    bound(
        &mut o,
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control characters printed",
    );
    o.peak = Some(agent.peak());
    o
}

fn case_rebinding(ctx: &Ctx) -> Outcome {
    let mut o = outcome("403 (evil Host), 200 (localhost)");
    let agent = Agent::start(ctx, "07-rebinding", &[]);
    let get = |host: &str| {
        exchange(
            agent.addr(),
            &request("GET", "/trace-agent/status", &[("Host", host)], b""),
        )
        .0
    };
    let evil = get("evil.example");
    let good = get("localhost");
    o.code(evil);
    o.code(good);
    bound(&mut o, evil == 403 && good == 200, format!("{evil} / {good}"));
    o.peak = Some(agent.peak());
    o
}

fn case_secret(ctx: &Ctx) -> Outcome {
    let mut o = outcome("config error, key never printed");
    let key = "0123456789abcdefSECRETKEY98765432";
    let dir = ctx.dir.join("08-secret");
    let _ = std::fs::create_dir_all(&dir);
    let yaml = dir.join("datadog.yaml");
    let _ = std::fs::write(
        &yaml,
        format!("api_key: {key}\napm_config:\n  additional_endpoints:\n    \"https://intake.example\": {key}\n"),
    );
    let runs = [
        Command::new(&ctx.bin)
            .args(["config"])
            .env_clear()
            .env("DD_API_KEY", key)
            .env(
                "DD_APM_ADDITIONAL_ENDPOINTS",
                format!("{{\"https://intake.example\": \"{key}\"}}"),
            )
            .output(),
        Command::new(&ctx.bin)
            .args(["config", "--config"])
            .arg(&yaml)
            .env_clear()
            .output(),
    ];
    for run in runs {
        let Ok(out) = run else {
            bound(&mut o, false, "cannot run `trace-agent config`");
            continue;
        };
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bound(&mut o, !out.status.success(), "a mistyped value was accepted");
        bound(
            &mut o,
            !all.contains(key) && !all.contains("SECRETKEY"),
            format!("the key was printed: {all}"),
        );
    }
    o
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
}

fn local_env(dir: &Path, max_size_mb: Option<u64>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DD_APM_LOCAL_ENABLED", "true".to_owned()),
        ("DD_APM_LOCAL_DATA_DIR", dir.display().to_string()),
        ("DD_APM_LOCAL_WEB_PORT", free_port().to_string()),
    ];
    if let Some(mb) = max_size_mb {
        env.push(("DD_APM_LOCAL_MAX_SIZE_MB", mb.to_string()));
    }
    env
}

/// Polls `ready` every 50 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn store(agent: &Agent) -> serde_json::Value {
    agent.status()["local"]["store"].clone()
}

fn case_modes(ctx: &Ctx) -> Outcome {
    let mut o = outcome("dir 0700, files 0600");
    let data = ctx.dir.join("09-modes").join("data");
    let _ = std::fs::remove_dir_all(&data);
    let agent = Agent::start(ctx, "09-modes", &local_env(&data, None));
    o.code(post(agent.addr(), "/v0.4/traces", &[MSGPACK], &traces(1, 10)));
    let written = wait_for(Duration::from_secs(20), || {
        store(&agent)["chunks_written"].as_u64() == Some(10)
    });
    bound(&mut o, written, "the traces were not written");
    let dir_mode = mode(&data);
    bound(&mut o, dir_mode == 0o700, format!("dir {dir_mode:o}"));
    for entry in std::fs::read_dir(&data).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_file() {
            let m = mode(&p);
            bound(&mut o, m == 0o600, format!("{} {m:o}", p.display()));
        }
    }
    o.peak = Some(agent.peak());
    o
}

fn disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("local.sqlite3"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn case_size_cap(ctx: &Ctx) -> Outcome {
    let mut o = outcome("disk ≤ cap + 8 MiB batch; services listed");
    let data = ctx.dir.join("10-size-cap").join("data");
    let _ = std::fs::remove_dir_all(&data);
    let env = local_env(&data, Some(16));
    let web = env
        .iter()
        .find(|(k, _)| *k == "DD_APM_LOCAL_WEB_PORT")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let agent = Agent::start(ctx, "10-size-cap", &env);
    let mut max_disk = 0;
    for p in 0..120u64 {
        o.code(post(
            agent.addr(),
            "/v0.4/traces",
            &[MSGPACK, REAL_STATUS],
            &traces(1 + p * 1000, 1000),
        ));
        max_disk = max_disk.max(disk(&data));
    }
    wait_for(Duration::from_secs(60), || {
        max_disk = max_disk.max(disk(&data));
        store(&agent)["pending_payloads"].as_u64() == Some(0)
    });
    max_disk = max_disk.max(disk(&data));
    let web_addr: SocketAddr = format!("127.0.0.1:{web}").parse().unwrap_or_else(|_| agent.addr());
    // Stats buckets reach the store every second in local mode.
    let mut services = 0;
    wait_for(Duration::from_secs(15), || {
        let (_, _, body) = exchange(
            web_addr,
            &request("GET", "/api/v1/services?window=1h", &[("Host", "127.0.0.1")], b""),
        );
        services = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        services > 0
    });
    o.peak = Some(agent.peak());
    let end_disk = disk(&data);
    bound(
        &mut o,
        max_disk <= 24 * MB,
        format!(
            "disk {:.1} MB (after the burst: {:.1} MB)",
            max_disk as f64 / MB as f64,
            end_disk as f64 / MB as f64
        ),
    );
    bound(&mut o, services > 0, "services page empty");
    o.note = format!(
        "largest DB+WAL seen {:.1} MB, {:.1} MB after the burst, {services} services listed",
        max_disk as f64 / MB as f64,
        end_disk as f64 / MB as f64
    );
    o
}

/// A fake intake that accepts connections and never answers.
fn hanging_intake() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = listener.set_nonblocking(true);
        let mut held = Vec::new();
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, stop)
}

/// `(payloads, items, dropped)` summed over the trace writers' shutdown lines ("…: shutdown
/// deadline passed with payloads undelivered: N payloads (M items) spooled to … , K items dropped").
fn spooled_from_log(log: &str) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for line in log.lines().filter(|l| l.contains("traces: shutdown deadline passed")) {
        let Some((_, rest)) = line.split_once("undelivered: ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.0 += num(0);
        out.1 += num(2);
        if let Some(i) = words.iter().position(|w| w.starts_with("dropped")) {
            out.2 += num(i.saturating_sub(2));
        }
    }
    out
}

fn case_sigterm_hang(ctx: &Ctx) -> Outcome {
    let mut o = outcome("exit ≤ 15 s, every accepted trace spooled, 0 dropped");
    let (intake, stop) = hanging_intake();
    let mut agent = Agent::start(
        ctx,
        "11-sigterm-hang",
        &[
            ("DD_API_KEY", "hostile0000000000000000000000000".to_owned()),
            ("DD_APM_DD_URL", format!("http://127.0.0.1:{intake}")),
        ],
    );
    let mut accepted = 0;
    for p in 0..30u64 {
        let c = post(
            agent.addr(),
            "/v0.4/traces",
            &[MSGPACK, REAL_STATUS],
            &traces(1 + p * 100, 100),
        );
        o.code(c);
        if c == 200 {
            accepted += 100;
        }
    }
    o.peak = Some(agent.peak());
    let (took, _) = agent.terminate(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    o.wall = took;
    let (payloads, items, dropped) = spooled_from_log(&agent.log_text());
    bound(
        &mut o,
        took.is_some_and(|t| t <= Duration::from_secs(15)),
        format!("exit after {took:?}"),
    );
    bound(
        &mut o,
        items == accepted && dropped == 0,
        format!("{accepted} accepted, {items} spooled, {dropped} dropped"),
    );
    o.note = format!("{accepted} traces accepted; {payloads} payloads ({items} traces) spooled, {dropped} dropped");
    o
}

fn case_local_sigterm(ctx: &Ctx) -> Outcome {
    let mut o = outcome("exit ≤ 15 s (rc 0), a shutdown line, 0 lost");
    let data = ctx.dir.join("12-local-sigterm").join("data");
    let _ = std::fs::remove_dir_all(&data);
    let mut agent = Agent::start(ctx, "12-local-sigterm", &local_env(&data, None));
    let mut accepted = 0;
    for p in 0..100u64 {
        let c = post(
            agent.addr(),
            "/v0.4/traces",
            &[MSGPACK, REAL_STATUS],
            &traces(1 + p * 1000, 1000),
        );
        o.code(c);
        if c == 200 {
            accepted += 1000;
        }
    }
    o.peak = Some(agent.peak());
    let (took, rc) = agent.terminate(Duration::from_secs(60));
    o.wall = took;
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("local store: shutdown wrote"))
        .unwrap_or("")
        .to_owned();
    let lost = line
        .split("; ")
        .find_map(|p| p.strip_suffix(" lost"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    bound(
        &mut o,
        took.is_some_and(|t| t <= Duration::from_secs(15)) && rc == Some(0),
        format!("exit {took:?} rc {rc:?}"),
    );
    bound(&mut o, !line.is_empty(), "no shutdown line in the log");
    bound(&mut o, lost == 0, format!("{lost} lost"));
    let tail = line.find("local store").map_or(line.as_str(), |i| &line[i..]);
    o.note = format!("{accepted} traces accepted (200); log: {tail}");
    o
}

/// Senders of 1000-trace payloads for `secs` seconds; returns the codes.
fn flood(addr: SocketAddr, secs: u64, senders: u64, real_status: bool, sample: impl FnMut()) -> BTreeMap<u16, u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let codes = Arc::new(std::sync::Mutex::new(BTreeMap::<u16, u64>::new()));
    let threads: Vec<_> = (0..senders)
        .map(|i| {
            let (stop, next, codes) = (Arc::clone(&stop), Arc::clone(&next), Arc::clone(&codes));
            std::thread::spawn(move || {
                let mut headers = vec![MSGPACK];
                if real_status || i % 2 == 0 {
                    headers.push(REAL_STATUS);
                }
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(1000, Ordering::Relaxed);
                    let c = post(addr, "/v0.4/traces", &headers, &traces(first, 1000));
                    if let Ok(mut m) = codes.lock() {
                        *m.entry(c).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    let mut sample = sample;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        sample();
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    codes.lock().map(|m| m.clone()).unwrap_or_default()
}

fn case_local_saturation(ctx: &Ctx) -> Outcome {
    let mut o = outcome("≤ 512 MB; status shows what is not yet written");
    let data = ctx.dir.join("13-local-saturation").join("data");
    let _ = std::fs::remove_dir_all(&data);
    let agent = Agent::start(ctx, "13-local-saturation", &local_env(&data, None));
    let mut max_pending = 0;
    let addr = agent.addr();
    o.codes = flood(addr, 10, 3, true, || {
        let s = store(&agent);
        max_pending = max_pending.max(s["pending_chunks"].as_u64().unwrap_or(0));
    });
    o.peak = Some(agent.peak());
    let after = agent.rss();
    bound(&mut o, agent.peak() <= 512 * MB, "peak RSS");
    bound(&mut o, max_pending > 0, "status never showed pending traces");
    o.note = format!(
        "most traces accepted and not yet written seen in status: {max_pending}; RSS after {} MB",
        after / MB
    );
    o
}

fn case_intake_down(ctx: &Ctx) -> Outcome {
    let mut o = outcome("429s (not only 200), ≤ 800 MB");
    let closed = free_port();
    let agent = Agent::start(
        ctx,
        "14-intake-down",
        &[
            ("DD_API_KEY", "hostile0000000000000000000000000".to_owned()),
            ("DD_APM_DD_URL", format!("http://127.0.0.1:{closed}")),
            ("DD_APM_SPOOL_MAX_SIZE", (32 * MB).to_string()),
        ],
    );
    o.codes = flood(agent.addr(), 15, 3, false, || {});
    o.peak = Some(agent.peak());
    let pushed_back = o.codes.get(&429).copied().unwrap_or(0) > 0;
    bound(&mut o, pushed_back, "never pushed back");
    bound(&mut o, agent.peak() <= 800 * MB, "peak RSS");
    o
}

fn case_slow_clients(ctx: &Ctx) -> Outcome {
    let mut o = outcome("fast tracer: 200 ×20");
    let agent = Agent::start(
        ctx,
        "15-slow-clients",
        &[
            ("DD_APM_DECODERS", "1".to_owned()),
            ("DD_APM_RECEIVER_TIMEOUT", "30".to_owned()),
        ],
    );
    let slow: Vec<TcpStream> = (0..8)
        .filter_map(|_| {
            let mut s = TcpStream::connect(agent.addr()).ok()?;
            let _ = s.write_all(
                b"POST /v0.4/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\nContent-Length: 1048576\r\n\r\n\x91",
            );
            Some(s)
        })
        .collect();
    wait_for(Duration::from_secs(10), || {
        agent.status()["in_flight"].as_u64().unwrap_or(0) >= 9
    });
    let started = Instant::now();
    for i in 0..20 {
        o.code(post(
            agent.addr(),
            "/v0.4/traces",
            &[MSGPACK, REAL_STATUS],
            &traces(1 + i * 10, 10),
        ));
    }
    o.wall = Some(started.elapsed());
    o.peak = Some(agent.peak());
    let all = o.codes.get(&200) == Some(&20);
    bound(&mut o, all, "the fast tracer was refused");
    drop(slow);
    o
}

fn case_otlp_bomb(ctx: &Ctx) -> Outcome {
    let mut o = outcome("413 naming the limit, ≤ 100 MB");
    let port = free_port();
    let agent = Agent::start(
        ctx,
        "16-otlp-bomb",
        &[(
            "DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT",
            format!("127.0.0.1:{port}"),
        )],
    );
    let field = apm::pb_field;
    let spans = [0x12u8, 0x00].repeat(100_000);
    let body = field(1, &field(2, &spans));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (code, _, reply) = exchange(
        addr,
        &request(
            "POST",
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &body,
        ),
    );
    o.code(code);
    o.peak = Some(agent.peak());
    bound(&mut o, code == 413, format!("status {code}"));
    bound(
        &mut o,
        String::from_utf8_lossy(&reply).contains("apm_config.max_decoded_ratio"),
        "the limit is not named",
    );
    bound(&mut o, agent.peak() <= 100 * MB, "peak RSS");
    o
}
