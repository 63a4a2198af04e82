//! Agent configuration: `datadog.yaml` and `DD_*` environment variables, typed and validated
//! once at startup (env over file over default), remembering where each value came from.

pub mod compile;
mod ingest;
mod key;
mod load;
mod table;
#[cfg(test)]
mod tests;
mod upstream;

pub use crate::env::{EnvSource, ProcessEnv, parse_bool, parse_csv, parse_list};
pub use crate::secret::{Secret, mask};
pub use crate::text::escape_control;
pub use ingest::{
    DEFAULT_OTLP_GRPC_ENDPOINT, DEFAULT_OTLP_HTTP_ENDPOINT, OtlpReceiverConfig, ProxyConfig, TELEMETRY_MAX_BODY,
};
pub use load::{ConfigError, load};
pub use upstream::{OtlpExportConfig, UpstreamConfig};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::process::obfuscate::ObfuscationConfig;

/// One `apm_config.replace_tags` entry.
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct RawReplaceTag {
    /// `*`, `resource.name` or a tag key.
    pub name: String,
    /// Regex.
    pub pattern: String,
    /// Replacement.
    #[serde(default)]
    pub repl: String,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// The YAML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
        }
    }
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `api_key` (masked when printed).
    pub api_key: Option<Secret>,
    /// `site`.
    pub site: String,
    /// `hostname` (empty: not set).
    pub hostname: String,
    /// Default env for traces without one (`apm_config.env` > `env` > `tags: env:x` > `none`).
    pub default_env: String,
    /// `tags`.
    pub tags: Vec<String>,
    /// `apm_config.enabled`.
    pub enabled: bool,
    /// Host the TCP receiver binds (`127.0.0.1`, `bind_host`, or `0.0.0.0` with non-local traffic).
    pub receiver_host: String,
    /// `apm_config.receiver_port` (0 disables TCP).
    pub receiver_port: u16,
    /// `apm_config.receiver_socket` (Unix socket; `None` disables it).
    pub receiver_socket: Option<PathBuf>,
    /// `apm_config.receiver_timeout`: time allowed to read a request.
    pub receiver_timeout: Duration,
    /// `apm_config.max_payload_size` in bytes.
    pub max_payload_size: u64,
    /// `apm_config.decoders`: payloads decoded at once.
    pub decoders: usize,
    /// `apm_config.decoder_timeout`: wait for a decoder slot before answering "overloaded".
    pub decoder_timeout: Duration,
    /// `apm_config.max_connections`.
    pub max_connections: usize,
    /// `apm_config.connection_limit`: TCP connections accepted per 30 s lease (0: no limit);
    /// beyond it new connections are closed at once until the lease renews.
    pub connection_limit: usize,
    /// `apm_config.max_memory` in bytes (0: off): while the process RSS is above it, payloads
    /// are refused with 429 (bodies drained, not read).
    pub max_memory: u64,
    /// `apm_config.max_cpu_percent` (0: off; 100 = one core): while the agent's CPU use over
    /// the last seconds is above it, payloads are refused with 429.
    pub max_cpu_percent: f64,
    /// `apm_config.max_spans_per_payload`: a payload with more spans is refused (413).
    pub max_spans_per_payload: usize,
    /// `apm_config.max_decoded_ratio`: decoded memory allowed per body byte (at least
    /// 4 MiB per payload); a payload that would need more is refused (413).
    pub max_decoded_ratio: usize,
    /// `apm_config.receiver_max_buffered_bytes`: request bodies held at once by the receivers
    /// (being read, decompressed or decoded; every trace, stats, OTLP/HTTP and proxy route),
    /// in bytes. At least `max_payload_size` is used (one largest body must fit).
    pub receiver_max_buffered_bytes: u64,
    /// `apm_config.pipeline_max_bytes`: estimated bytes of processed payloads waiting for the
    /// forwarding stage (next to `pipeline_capacity` items); when full, payloads get 429.
    pub pipeline_max_bytes: u64,
    /// `apm_config.extra_sample_rate`.
    pub extra_sample_rate: f64,
    /// `apm_config.target_traces_per_second` (or the deprecated `max_traces_per_second`):
    /// target of the priority and no-priority samplers.
    pub max_traces_per_second: f64,
    /// Sampler keys: `errors_per_second`, rare and probabilistic samplers, catalog size, ETS.
    pub sampler: crate::sample::SamplerConfig,
    /// `apm_config.ignore_resources` (regexes).
    pub ignore_resources: Vec<String>,
    /// `apm_config.filter_tags.require`.
    pub filter_tags_require: Vec<String>,
    /// `apm_config.filter_tags.reject`.
    pub filter_tags_reject: Vec<String>,
    /// `apm_config.filter_tags_regex.require`.
    pub filter_tags_regex_require: Vec<String>,
    /// `apm_config.filter_tags_regex.reject`.
    pub filter_tags_regex_reject: Vec<String>,
    /// `apm_config.replace_tags`.
    pub replace_tags: Vec<RawReplaceTag>,
    /// `apm_config.global_tags`: added to every span.
    pub global_tags: BTreeMap<String, String>,
    /// `apm_config.features`.
    pub features: Vec<String>,
    /// `apm_config.obfuscation.*`.
    pub obfuscation: ObfuscationConfig,
    /// `apm_config.obfuscation.cache.enabled`: memoize SQL obfuscation.
    pub obfuscation_cache_enabled: bool,
    /// `apm_config.obfuscation.cache.max_size` in bytes.
    pub obfuscation_cache_max_size: usize,
    /// Capacity of the receiver → next-stage channel, in payloads (each at most
    /// `max_payload_size`; a full channel makes handlers wait, which holds their decoder slot
    /// and turns into 429/overload replies).
    pub pipeline_capacity: usize,
    /// `apm_config.local.*`: local mode (embedded store + web view).
    pub local: crate::local::LocalConfig,
    /// Upstream writers: intake URL, extra endpoints, retries, writer limits, OTLP export.
    pub upstream: UpstreamConfig,
    /// Stats concentrator and client-stats settings (`apm_config.compute_stats_by_span_kind`,
    /// `peer_tags_aggregation`, `peer_tags`, `bucket_size_seconds`,
    /// `stats_max_groups_per_bucket`; container id dimension from `features`).
    pub stats: crate::stats::StatsConfig,
    /// `otlp_config.receiver.protocols.*`: the OTLP receivers (off unless an endpoint is set).
    pub otlp_receiver: OtlpReceiverConfig,
    /// `apm_config.evp_proxy_config.*`, `apm_config.telemetry.*`: the proxy routes.
    pub proxy: ProxyConfig,
    /// Where each value came from, by key path.
    pub origins: BTreeMap<String, Origin>,
    /// Warnings found while loading (unknown keys…), logged at start.
    pub warnings: Vec<String>,
}

/// Default receiver port.
pub const DEFAULT_RECEIVER_PORT: u16 = 8126;
/// Default `max_payload_size` (25 MiB).
pub const DEFAULT_MAX_PAYLOAD_SIZE: u64 = 26_214_400;
/// Default `apm_config.receiver_max_buffered_bytes` (64 MiB).
pub const DEFAULT_RECEIVER_MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// Default `apm_config.pipeline_max_bytes` (128 MiB).
pub const DEFAULT_PIPELINE_MAX_BYTES: u64 = 128 << 20;
/// Default Unix socket path (started only when its directory exists).
pub const DEFAULT_RECEIVER_SOCKET: &str = "/var/run/datadog/apm.socket";

impl Default for AgentConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            api_key: None,
            site: "datadoghq.com".to_owned(),
            hostname: String::new(),
            default_env: "none".to_owned(),
            tags: Vec::new(),
            enabled: true,
            receiver_host: "127.0.0.1".to_owned(),
            receiver_port: DEFAULT_RECEIVER_PORT,
            receiver_socket: None,
            receiver_timeout: Duration::from_secs(5),
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            decoders: (cpus / 2).max(1),
            decoder_timeout: Duration::from_millis(1000),
            max_connections: 1000,
            connection_limit: 0,
            max_memory: 0,
            max_cpu_percent: 0.0,
            max_spans_per_payload: crate::decode::DEFAULT_MAX_SPANS_PER_PAYLOAD,
            max_decoded_ratio: crate::decode::DEFAULT_MAX_DECODED_RATIO,
            receiver_max_buffered_bytes: DEFAULT_RECEIVER_MAX_BUFFERED_BYTES,
            pipeline_max_bytes: DEFAULT_PIPELINE_MAX_BYTES,
            extra_sample_rate: 1.0,
            max_traces_per_second: 10.0,
            sampler: crate::sample::SamplerConfig::default(),
            ignore_resources: Vec::new(),
            filter_tags_require: Vec::new(),
            filter_tags_reject: Vec::new(),
            filter_tags_regex_require: Vec::new(),
            filter_tags_regex_reject: Vec::new(),
            replace_tags: Vec::new(),
            global_tags: BTreeMap::new(),
            features: Vec::new(),
            obfuscation: ObfuscationConfig::default(),
            obfuscation_cache_enabled: true,
            obfuscation_cache_max_size: crate::process::sql_cache::DEFAULT_MAX_BYTES,
            pipeline_capacity: 32,
            local: crate::local::LocalConfig::default(),
            upstream: UpstreamConfig::default(),
            stats: crate::stats::StatsConfig::default(),
            otlp_receiver: OtlpReceiverConfig::default(),
            proxy: ProxyConfig::default(),
            origins: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

impl AgentConfig {
    /// The TCP address to bind, or `None` when `receiver_port` is 0.
    ///
    /// # Errors
    /// When `receiver_host` is not an IP address or `localhost`.
    pub fn tcp_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.receiver_port == 0 {
            return Ok(None);
        }
        let host = if self.receiver_host == "localhost" {
            "127.0.0.1"
        } else {
            self.receiver_host.as_str()
        };
        let ip: std::net::IpAddr = host.parse().map_err(|_| ConfigError::Invalid {
            key: "bind_host".to_owned(),
            message: format!("{:?} is not an IP address", self.receiver_host),
        })?;
        Ok(Some(SocketAddr::new(ip, self.receiver_port)))
    }

    /// Whether local mode runs: `apm_config.local.enabled`, where `auto` means "no API key and
    /// no OTLP endpoint".
    pub fn local_mode_active(&self) -> bool {
        self.local
            .mode
            .is_active(self.api_key.is_some(), self.upstream.otlp_export.is_some())
    }

    /// A loopback config on `port` for tests and embedding.
    ///
    /// Local mode (store + web view) is off here, so tests and embedders that start several
    /// agents do not share a data directory or web port; set `local.mode` to turn it on.
    pub fn local(port: u16) -> Self {
        let mut c = Self {
            receiver_port: port,
            ..Self::default()
        };
        c.local.mode = crate::local::LocalMode::Off;
        c
    }

    /// The receivers' shared body budget in bytes: `receiver_max_buffered_bytes`, raised to
    /// `max_payload_size` (and the proxies' body limits) so that one largest body always fits.
    pub fn body_budget_bytes(&self) -> u64 {
        self.receiver_max_buffered_bytes
            .max(self.max_payload_size)
            .max(self.proxy.evp_max_payload_size)
            .max(ingest::TELEMETRY_MAX_BODY)
    }

    /// The decoding limits for a body of `body_len` bytes.
    pub fn decode_limits(&self, body_len: usize) -> crate::decode::DecodeLimits {
        crate::decode::DecodeLimits::new(body_len, self.max_spans_per_payload, self.max_decoded_ratio)
    }

    /// `key = value  (origin)` lines for `trace-agent config`, secrets masked and control
    /// characters escaped.
    pub fn describe(&self) -> String {
        // The env comes from apm_config.env, else env, else an env: tag: show where.
        let env_origin = ["apm_config.env", "env"]
            .iter()
            .find_map(|k| self.origins.get(*k).cloned())
            .or_else(|| {
                self.tags
                    .iter()
                    .any(|t| t.starts_with("env:"))
                    .then(|| self.origins.get("tags").cloned())
                    .flatten()
            })
            .unwrap_or(Origin::Default);
        let origin = |k: &str| {
            if k == "apm_config.env" {
                return env_origin.clone();
            }
            self.origins.get(k).cloned().unwrap_or(Origin::Default)
        };
        let mut out = String::new();
        for key in key::all() {
            let Some(show) = key.show else { continue };
            let shown = show(self);
            let v = escape_control(&shown);
            let o = origin(key.path).to_string();
            out.push_str(&format!("{:<48} = {v:<30} ({})\n", key.path, escape_control(&o)));
        }
        out
    }
}
