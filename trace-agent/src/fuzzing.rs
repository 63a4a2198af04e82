//! Entry points of the coverage-guided fuzz targets (`trace-agent/fuzz`, run by
//! `scripts/fuzz.sh`) and of their regression test (`tests/fuzz_regressions.rs`, which replays
//! `trace-agent/fuzz/regressions/<target>/*` on stable): one function per target, so a finding
//! is replayed through exactly the code that found it.
//!
//! Every target must return normally on any input: a panic, an abort, a hang or an allocation
//! past libFuzzer's `-rss_limit_mb` is a finding.
// A harness, not an input path: failing loudly (panic) is how it reports a finding, and its
// table lookups are modulo the table length.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::OnceLock;
use std::time::Duration;

use crate::config::AgentConfig;
use crate::decode::{self, ApiVersion, Encoding};
use crate::process::obfuscate::{ObfuscationConfig, obfuscate_span};
use crate::process::{self, ProcessConfig, RequestFacts};
use crate::span::{Span, Str};
use crate::stats::client::{ClientStatsFacts, process_client_stats};

/// The fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/v0.4/traces` msgpack: decode, process, convert to protobuf.
    DecodeV04,
    /// `/v0.5/traces` msgpack (string table).
    DecodeV05,
    /// `/v0.7/traces` msgpack.
    DecodeV07,
    /// JSON bodies of v0.1–v0.4 (the first byte picks the version).
    DecodeJson,
    /// `/v0.6/stats` msgpack: decode and process the client stats.
    DecodeStats,
    /// The span obfuscators (SQL, Redis, Memcached, HTTP, MongoDB/Elasticsearch JSON, credit
    /// cards, URL credentials): the first byte picks the span type.
    Obfuscate,
    /// The receiver end to end, in-process: method, path, headers and body from the input.
    HttpHandler,
}

impl Target {
    /// Every target.
    pub const ALL: [Self; 7] = [
        Self::DecodeV04,
        Self::DecodeV05,
        Self::DecodeV07,
        Self::DecodeJson,
        Self::DecodeStats,
        Self::Obfuscate,
        Self::HttpHandler,
    ];

    /// The cargo-fuzz target name (`fuzz_targets/<name>.rs`).
    pub fn name(self) -> &'static str {
        match self {
            Self::DecodeV04 => "decode_v04",
            Self::DecodeV05 => "decode_v05",
            Self::DecodeV07 => "decode_v07",
            Self::DecodeJson => "decode_json",
            Self::DecodeStats => "decode_stats",
            Self::Obfuscate => "obfuscate",
            Self::HttpHandler => "http_handler",
        }
    }

    /// Runs the target on `data`.
    pub fn run(self, data: &[u8]) {
        match self {
            Self::DecodeV04 => decode_and_process(ApiVersion::V04, Encoding::Msgpack, data),
            Self::DecodeV05 => decode_and_process(ApiVersion::V05, Encoding::Msgpack, data),
            Self::DecodeV07 => decode_and_process(ApiVersion::V07, Encoding::Msgpack, data),
            Self::DecodeJson => {
                let Some((first, rest)) = data.split_first() else {
                    return;
                };
                let version =
                    [ApiVersion::V01, ApiVersion::V02, ApiVersion::V03, ApiVersion::V04][usize::from(*first) % 4];
                decode_and_process(version, Encoding::Json, rest);
            }
            Self::DecodeStats => stats(data),
            Self::Obfuscate => obfuscate(data),
            Self::HttpHandler => http(data),
        }
    }
}

fn process_config() -> &'static ProcessConfig {
    static CONFIG: OnceLock<ProcessConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = AgentConfig::default();
        c.obfuscation.http_remove_query_string = true;
        c.obfuscation.http_remove_paths_with_digits = true;
        crate::config::compile::process(&c).unwrap_or_else(|e| panic!("default config: {e}"))
    })
}

fn decode_and_process(version: ApiVersion, encoding: Encoding, data: &[u8]) {
    let Ok(mut p) = decode::decode_payload(version, encoding, data) else {
        return;
    };
    let facts = RequestFacts {
        lang: "fuzz",
        client_computed_top_level: data.first().is_some_and(|b| b & 1 == 1),
    };
    process::process_payload(&mut p, &facts, process_config(), 1_700_000_000_000_000_000);
    let _ = crate::upstream::convert::tracer_payload(&p);
}

fn stats(data: &[u8]) {
    let Ok(mut p) = decode::decode_client_stats(data) else {
        return;
    };
    let facts = ClientStatsFacts {
        lang: "fuzz",
        tracer_version: "1",
        container_id: "",
        tracer_obfuscated: data.first().is_some_and(|b| b & 1 == 1),
    };
    process_client_stats(&mut p, &facts, process_config(), &crate::stats::StatsConfig::default());
}

fn obfuscate(data: &[u8]) {
    const TYPES: [&str; 9] = [
        "sql",
        "cassandra",
        "redis",
        "valkey",
        "memcached",
        "http",
        "web",
        "mongodb",
        "elasticsearch",
    ];
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\u{1}');
    let resource = parts.next().unwrap_or_default().to_owned();
    let value = parts.next().unwrap_or(&resource).to_owned();
    let mut span = Span {
        r#type: Str::from(TYPES[usize::from(*first) % TYPES.len()]),
        resource: Str::from(resource),
        ..Span::default()
    };
    for key in [
        "sql.query",
        "db.statement",
        "redis.raw_command",
        "valkey.raw_command",
        "memcached.command",
        "http.url",
        "mongodb.query",
        "elasticsearch.body",
        "opensearch.body",
        "card.number",
        "error.stack",
        "out.host",
    ] {
        span.meta.push((Str::from(key), Str::from(value.clone())));
    }
    let config = ObfuscationConfig {
        http_remove_query_string: first & 0x10 != 0,
        http_remove_paths_with_digits: first & 0x20 != 0,
        redis_remove_all_args: first & 0x40 != 0,
        credit_cards_luhn: first & 0x80 != 0,
        remove_stack_traces: true,
        ..ObfuscationConfig::default()
    };
    obfuscate_span(&mut span, &config);
}

/// The agent the HTTP target talks to: one per process, on its own runtime, with the real
/// forwarding stage (samplers, stats) and no writer.
fn agent() -> &'static (tokio::runtime::Runtime, crate::Agent) {
    static AGENT: OnceLock<(tokio::runtime::Runtime, crate::Agent)> = OnceLock::new();
    AGENT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let dir = std::env::temp_dir().join(format!("trace-agent-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut config = AgentConfig::local(0);
        config.receiver_socket = Some(dir.join("apm.socket"));
        config.receiver_timeout = Duration::from_secs(1);
        config.decoder_timeout = Duration::from_millis(500);
        let agent = rt
            .block_on(crate::start_with_upstreams(
                config,
                Vec::new(),
                crate::forward::StatsFlush::Standard,
            ))
            .unwrap_or_else(|e| panic!("agent: {e}"));
        (rt, agent)
    })
}

const METHODS: [&str; 5] = ["POST", "PUT", "GET", "DELETE", "OPTIONS"];
const PATHS: [&str; 16] = [
    "/v0.4/traces",
    "/v0.5/traces",
    "/v0.7/traces",
    "/v0.3/traces",
    "/v0.2/traces",
    "/v0.1/spans",
    "/spans",
    "/v0.6/stats",
    "/info",
    "/v0.7/config",
    "/v0.4/services",
    "/telemetry/proxy/api/v2/apmtelemetry",
    "/evp_proxy/v2/api/v2/exposures",
    "/trace-agent/status",
    "/unknown",
    "/v0.4/traces?x=1",
];
const HEADERS: [&str; 12] = [
    "content-type: application/msgpack",
    "content-type: application/json",
    "content-type: text/plain",
    "datadog-meta-lang: ",
    "datadog-meta-tracer-version: ",
    "datadog-client-computed-stats: ",
    "datadog-client-computed-top-level: ",
    "datadog-container-id: ",
    "x-datadog-trace-count: ",
    "datadog-send-real-http-status: ",
    "datadog-rates-payload-version: ",
    "x-datadog-process-tags: ",
];

/// Input layout: method byte, path byte, header count byte, then per header a selector byte
/// and its value up to `\n`, then the body. The request is sent with a correct
/// `Content-Length`, then the client half-closes; the reply must come, and never be a 500.
fn http(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let [m, p, n, rest @ ..] = data else {
        return;
    };
    let mut rest = rest;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: localhost\r\n",
        METHODS[usize::from(*m) % METHODS.len()],
        PATHS[usize::from(*p) % PATHS.len()]
    );
    for _ in 0..(n % 8) {
        let Some((sel, tail)) = rest.split_first() else {
            break;
        };
        let end = tail.iter().position(|b| *b == b'\n').unwrap_or(tail.len()).min(200);
        let value: String = String::from_utf8_lossy(&tail[..end])
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let h = HEADERS[usize::from(*sel) % HEADERS.len()];
        if h.ends_with(": ") {
            head.push_str(&format!("{h}{value}\r\n"));
        } else {
            head.push_str(&format!("{h}\r\n"));
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    let body = rest;
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let (rt, agent) = agent();
    let reply = rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serve = agent.serve_io(server);
        let talk = async {
            client.write_all(head.as_bytes()).await?;
            client.write_all(body).await?;
            client.shutdown().await?;
            let mut out = Vec::new();
            client.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let (_, out) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(serve, talk) })
            .await
            .unwrap_or_else(|_| panic!("no reply within 10 s to {head:?}"));
        out.unwrap_or_default()
    });
    let status = reply.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
    assert!(
        reply.starts_with(b"HTTP/1.1 ") && status.is_some(),
        "not an HTTP reply to {head:?}: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
    assert_ne!(status, Some("500"), "500 to {head:?}");
}
