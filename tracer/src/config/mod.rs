//! Tracer configuration: typed, validated once, from the standard `DD_*` variables and
//! overridable in code (code > env > default).

mod env;
mod http;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::propagation::PropagationSettings;
pub use env::{ConfigSource, ProcessEnv, vars};
pub use http::{HeaderTag, HttpSettings, QueryStringMode, StatusRanges};

use crate::sampling::SamplingRule;

/// A configuration value that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable (or code value) has a value the tracer cannot use.
    #[error("invalid {key}={value:?}: {reason}")]
    Invalid {
        /// The variable, e.g. `DD_TRACE_SAMPLE_RATE`.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// HTTP over TCP to `host:port`.
    Http {
        /// `host:port` (IPv6 hosts in brackets).
        authority: String,
    },
    /// HTTP over a Unix domain socket.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
}

impl AgentEndpoint {
    /// `http://127.0.0.1:8126`.
    pub fn default_http() -> Self {
        Self::Http {
            authority: "127.0.0.1:8126".to_owned(),
        }
    }

    /// Parses `http://host:port`, `unix:///path/to/socket`.
    ///
    /// # Errors
    /// Other schemes (https is not supported yet), empty hosts, bad ports.
    pub fn parse_url(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path, e.g. unix:///var/run/datadog/apm.socket".into());
            }
            return Ok(Self::Unix {
                path: PathBuf::from(path),
            });
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err("expected http://HOST:PORT or unix:///PATH".into());
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err("expected http://HOST:PORT with no path".into());
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority.get(end + 1..).is_some_and(|p| p.starts_with(':')),
            None => authority.contains(':'),
        };
        if has_port {
            let port = authority.rsplit(':').next().unwrap_or("");
            port.parse::<u16>()
                .map_err(|_| format!("port {port:?} is not a number in 1..=65535"))?;
            Ok(Self::Http {
                authority: authority.to_owned(),
            })
        } else {
            Ok(Self::Http {
                authority: format!("{authority}:8126"),
            })
        }
    }

    /// A human-readable URL.
    pub fn url(&self) -> String {
        match self {
            Self::Http { authority } => format!("http://{authority}"),
            Self::Unix { path } => format!("unix://{}", path.display()),
        }
    }
}

/// Which trace intake of the agent to use (`DD_TRACE_API_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceApi {
    /// v0.5 when the agent's `/info` lists `/v0.5/traces`, else v0.4.
    #[default]
    Auto,
    /// Always `/v0.4/traces`.
    V04,
    /// Always `/v0.5/traces`.
    V05,
}

/// Everything the tracer needs, validated.
#[derive(Debug, Clone)]
pub struct TracerConfig {
    pub(crate) service: String,
    pub(crate) env: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) global_tags: Vec<(String, String)>,
    pub(crate) agent: AgentEndpoint,
    pub(crate) enabled: bool,
    pub(crate) sample_rate: Option<f64>,
    pub(crate) sampling_rules: Vec<SamplingRule>,
    pub(crate) rate_limit: f64,
    pub(crate) partial_flush_min_spans: Option<usize>,
    pub(crate) agent_timeout: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) flush_size: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) max_spans_per_trace: usize,
    pub(crate) send_retries: u32,
    pub(crate) trace_api: TraceApi,
    pub(crate) stats_computation: bool,
    pub(crate) log_128bit_trace_id: bool,
    pub(crate) propagation: PropagationSettings,
    pub(crate) http: HttpSettings,
}

/// The service used when neither code nor `DD_SERVICE` names one and the executable's
/// name is unknown.
pub const DEFAULT_SERVICE: &str = "unnamed-rust-service";

impl Default for TracerConfig {
    /// Defaults only; no environment is read.
    fn default() -> Self {
        Self {
            service: default_service(),
            env: None,
            version: None,
            global_tags: Vec::new(),
            agent: AgentEndpoint::default_http(),
            enabled: true,
            sample_rate: None,
            sampling_rules: Vec::new(),
            rate_limit: 100.0,
            partial_flush_min_spans: None,
            agent_timeout: Duration::from_secs(2),
            flush_interval: Duration::from_secs(1),
            flush_size: 2 * 1024 * 1024,
            queue_capacity: 16 * 1024,
            max_spans_per_trace: 100_000,
            send_retries: 2,
            trace_api: TraceApi::Auto,
            stats_computation: false,
            log_128bit_trace_id: true,
            propagation: PropagationSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

fn default_service() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE.to_owned())
}

impl TracerConfig {
    /// Reads the standard `DD_*` variables of the process environment.
    ///
    /// # Errors
    /// The first variable whose value cannot be used, named with its value and the reason.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// Reads the `DD_*` variables from any source (tests pass a map).
    ///
    /// # Errors
    /// As [`TracerConfig::from_env`].
    pub fn from_source<S: ConfigSource + ?Sized>(source: &S) -> Result<Self, ConfigError> {
        env::read(source, Self::default())
    }

    /// Sets the service (`DD_SERVICE`).
    #[must_use]
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Sets the environment (`DD_ENV`).
    #[must_use]
    pub fn with_env(mut self, env: impl Into<String>) -> Self {
        self.env = Some(env.into());
        self
    }

    /// Sets the version (`DD_VERSION`).
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Adds a tag put on every span (`DD_TAGS`).
    #[must_use]
    pub fn with_global_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.global_tags.push((key.into(), value.into()));
        self
    }

    /// Sets the agent endpoint (`DD_TRACE_AGENT_URL`).
    #[must_use]
    pub fn with_agent(mut self, agent: AgentEndpoint) -> Self {
        self.agent = agent;
        self
    }

    /// Sets the agent URL (`http://host:port` or `unix:///path`).
    ///
    /// # Errors
    /// When the URL is not one of those forms.
    pub fn with_agent_url(self, url: &str) -> Result<Self, ConfigError> {
        let agent = AgentEndpoint::parse_url(url).map_err(|reason| ConfigError::Invalid {
            key: vars::AGENT_URL,
            value: url.to_owned(),
            reason,
        })?;
        Ok(self.with_agent(agent))
    }

    /// Turns tracing on or off (`DD_TRACE_ENABLED`); off, spans are created but never sent.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the global sample rate (`DD_TRACE_SAMPLE_RATE`), clamped to 0..=1.
    #[must_use]
    pub fn with_sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = Some(if rate.is_nan() { 1.0 } else { rate.clamp(0.0, 1.0) });
        self
    }

    /// Sets the sampling rules (`DD_TRACE_SAMPLING_RULES`).
    #[must_use]
    pub fn with_sampling_rules(mut self, rules: Vec<SamplingRule>) -> Self {
        self.sampling_rules = rules;
        self
    }

    /// Sets the rule rate limit in traces per second (`DD_TRACE_RATE_LIMIT`).
    #[must_use]
    pub fn with_rate_limit(mut self, per_second: f64) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// Enables partial flush at `min_spans` finished spans (`DD_TRACE_PARTIAL_FLUSH_*`).
    #[must_use]
    pub fn with_partial_flush(mut self, min_spans: Option<usize>) -> Self {
        self.partial_flush_min_spans = min_spans.map(|n| n.max(1));
        self
    }

    /// Sets the timeout of each request to the agent (`DD_TRACE_AGENT_TIMEOUT`).
    #[must_use]
    pub fn with_agent_timeout(mut self, timeout: Duration) -> Self {
        self.agent_timeout = timeout;
        self
    }

    /// Sets how often finished traces are sent (default 1 s).
    #[must_use]
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sends as soon as the encoded payload passes this many bytes (default 2 MiB).
    #[must_use]
    pub fn with_flush_size(mut self, bytes: usize) -> Self {
        self.flush_size = bytes.max(1);
        self
    }

    /// Sets how many finished trace chunks may wait for the export worker (default 16 384,
    /// about 16 ms of 1 M traces/s, under 1 MiB of queue); when full, new chunks are dropped
    /// and counted.
    #[must_use]
    pub fn with_queue_capacity(mut self, chunks: usize) -> Self {
        self.queue_capacity = chunks.max(1);
        self
    }

    /// Caps the spans one trace may hold before its new spans are dropped (default 100 000).
    #[must_use]
    pub fn with_max_spans_per_trace(mut self, spans: usize) -> Self {
        self.max_spans_per_trace = spans.max(1);
        self
    }

    /// Retries of a failed send (network error, 408, 429, 5xx); default 2.
    #[must_use]
    pub fn with_send_retries(mut self, retries: u32) -> Self {
        self.send_retries = retries;
        self
    }

    /// Chooses the trace intake format (`DD_TRACE_API_VERSION`); by default v0.5 when the
    /// agent lists it.
    #[must_use]
    pub fn with_trace_api(mut self, api: TraceApi) -> Self {
        self.trace_api = api;
        self
    }

    /// Computes trace stats in the tracer (`DD_TRACE_STATS_COMPUTATION_ENABLED`, default
    /// off): when the agent's `/info` lists `/v0.6/stats`, the export worker aggregates
    /// top-level and measured spans before sampling and sends them there, and, when `/info`
    /// also says `client_drop_p0s`, does not send traces the sampler rejected (those with
    /// no error and no single-span-sampled span), counting them.
    #[must_use]
    pub fn with_stats_computation(mut self, enabled: bool) -> Self {
        self.stats_computation = enabled;
        self
    }

    /// Whether client-side stats are on.
    pub fn stats_computation(&self) -> bool {
        self.stats_computation
    }

    /// Whether log correlation writes `dd.trace_id` as 32 hex digits (the full 128-bit
    /// id) rather than the low 64 bits in decimal
    /// (`DD_TRACE_128_BIT_TRACEID_LOGGING_ENABLED`, default true).
    #[must_use]
    pub fn with_128bit_trace_id_logging(mut self, enabled: bool) -> Self {
        self.log_128bit_trace_id = enabled;
        self
    }

    /// Whether log correlation writes 128-bit trace ids.
    pub fn logs_128bit_trace_id(&self) -> bool {
        self.log_128bit_trace_id
    }

    /// Sets the propagation styles (`DD_TRACE_PROPAGATION_STYLE_EXTRACT` / `_INJECT`).
    #[must_use]
    pub fn with_propagation_styles(
        mut self,
        extract: Vec<crate::propagation::Style>,
        inject: Vec<crate::propagation::Style>,
    ) -> Self {
        self.propagation.extract = extract;
        self.propagation.inject = inject;
        self
    }

    /// Sets the settings of the HTTP middleware (`DD_TRACE_HTTP_*`, `DD_TRACE_CLIENT_IP_*`, …).
    #[must_use]
    pub fn with_http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// Propagation styles.
    pub fn propagation(&self) -> &PropagationSettings {
        &self.propagation
    }

    /// Settings of the HTTP middleware.
    pub fn http(&self) -> &HttpSettings {
        &self.http
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The environment.
    pub fn env(&self) -> Option<&str> {
        self.env.as_deref()
    }

    /// The version.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The agent endpoint.
    pub fn agent(&self) -> &AgentEndpoint {
        &self.agent
    }

    /// Whether spans are sent.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Tags put on every span.
    pub fn global_tags(&self) -> &[(String, String)] {
        &self.global_tags
    }

    /// The partial-flush threshold, when enabled.
    pub fn partial_flush_min_spans(&self) -> Option<usize> {
        self.partial_flush_min_spans
    }

    /// The global sample rate.
    pub fn sample_rate(&self) -> Option<f64> {
        self.sample_rate
    }

    /// The rule rate limit.
    pub fn rate_limit(&self) -> f64 {
        self.rate_limit
    }

    /// The sampling rules.
    pub fn sampling_rules(&self) -> &[SamplingRule] {
        &self.sampling_rules
    }
}

impl crate::propagation::Propagator {
    /// The propagator `config` describes (`DD_TRACE_PROPAGATION_STYLE[_EXTRACT|_INJECT]`,
    /// `DD_TRACE_PROPAGATION_EXTRACT_FIRST`).
    pub fn from_config(config: &TracerConfig) -> Self {
        Self::from_settings(config.propagation())
    }
}
