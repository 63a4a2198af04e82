//! The only reader of the environment: `DD_*` variables through a [`ConfigSource`].
//!
//! Every variable is read here, `config/http.rs` included, with one set of rules:
//! - a value is trimmed, and a blank value counts as unset — except where empty has a
//!   meaning of its own (`DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP`: do not redact;
//!   `DD_TRACE_BAGGAGE_TAG_KEYS`: no keys), read with [`ConfigSource::get`] directly;
//! - booleans are `1/true/t/yes/y/on` or `0/false/f/no/n/off`, any case;
//! - a value that cannot be used is an error naming the variable, never ignored;
//! - precedence, highest first: `TracerConfig::with_*` in code (applied after reading);
//!   a specific variable over its general one (`DD_TRACE_PROPAGATION_STYLE_EXTRACT` over
//!   `DD_TRACE_PROPAGATION_STYLE` over `OTEL_PROPAGATORS`; `DD_TRACE_AGENT_URL` over
//!   `DD_AGENT_HOST` over `DD_TRACE_AGENT_HOSTNAME`, and over `DD_TRACE_AGENT_PORT`;
//!   `DD_TRACE_HTTP_URL_QUERY_STRING_DISABLED` over the query-string regex);
//!   `DD_SERVICE`/`DD_ENV`/`DD_VERSION` over the same keys inside `DD_TAGS`; then the
//!   defaults.

use std::collections::HashMap;
use std::time::Duration;

use super::{AgentEndpoint, ConfigError, TraceApi, TracerConfig};
use crate::sampling::parse_rules;

/// Names of the variables the tracer reads.
pub mod vars {
    /// Service name.
    pub const SERVICE: &str = "DD_SERVICE";
    /// Environment (`env` tag on every span).
    pub const ENV: &str = "DD_ENV";
    /// Application version (`version` tag on the service's spans).
    pub const VERSION: &str = "DD_VERSION";
    /// Tags on every span: `k:v,k2:v2` or space-separated.
    pub const TAGS: &str = "DD_TAGS";
    /// Agent host.
    pub const AGENT_HOST: &str = "DD_AGENT_HOST";
    /// Older alias of [`AGENT_HOST`].
    pub const AGENT_HOSTNAME: &str = "DD_TRACE_AGENT_HOSTNAME";
    /// Agent port.
    pub const AGENT_PORT: &str = "DD_TRACE_AGENT_PORT";
    /// Agent URL (`http://` or `unix://`); wins over host and port.
    pub const AGENT_URL: &str = "DD_TRACE_AGENT_URL";
    /// `false` turns sending off.
    pub const ENABLED: &str = "DD_TRACE_ENABLED";
    /// Global sample rate 0..=1.
    pub const SAMPLE_RATE: &str = "DD_TRACE_SAMPLE_RATE";
    /// JSON array of sampling rules.
    pub const SAMPLING_RULES: &str = "DD_TRACE_SAMPLING_RULES";
    /// Traces per second kept through rules.
    pub const RATE_LIMIT: &str = "DD_TRACE_RATE_LIMIT";
    /// Partial flush on/off.
    pub const PARTIAL_FLUSH_ENABLED: &str = "DD_TRACE_PARTIAL_FLUSH_ENABLED";
    /// Finished spans that trigger a partial flush.
    pub const PARTIAL_FLUSH_MIN_SPANS: &str = "DD_TRACE_PARTIAL_FLUSH_MIN_SPANS";
    /// Timeout of a request to the agent, in seconds.
    pub const AGENT_TIMEOUT: &str = "DD_TRACE_AGENT_TIMEOUT";
    /// `v0.4` or `v0.5`: the trace intake to use (default: v0.5 when the agent lists it).
    pub const API_VERSION: &str = "DD_TRACE_API_VERSION";
    /// `true`: compute trace stats in the tracer and drop unsampled traces (default false).
    pub const STATS_COMPUTATION_ENABLED: &str = "DD_TRACE_STATS_COMPUTATION_ENABLED";
    /// `false`: log correlation writes the low 64 bits of the trace id in decimal.
    pub const TRACE_ID_128_BIT_LOGGING: &str = "DD_TRACE_128_BIT_TRACEID_LOGGING_ENABLED";

    /// Propagation styles, both directions (`datadog,tracecontext,baggage`).
    pub const PROPAGATION_STYLE: &str = "DD_TRACE_PROPAGATION_STYLE";
    /// Propagation styles read from incoming requests (wins over [`PROPAGATION_STYLE`]).
    pub const PROPAGATION_STYLE_EXTRACT: &str = "DD_TRACE_PROPAGATION_STYLE_EXTRACT";
    /// Propagation styles written to outgoing requests (wins over [`PROPAGATION_STYLE`]).
    pub const PROPAGATION_STYLE_INJECT: &str = "DD_TRACE_PROPAGATION_STYLE_INJECT";
    /// Stop at the first style that yields a context.
    pub const PROPAGATION_EXTRACT_FIRST: &str = "DD_TRACE_PROPAGATION_EXTRACT_FIRST";
    /// OpenTelemetry's propagator list, used when no `DD_TRACE_PROPAGATION_STYLE*` is set.
    pub const OTEL_PROPAGATORS: &str = "OTEL_PROPAGATORS";
    /// Statuses that make a server span an error (`500-599`).
    pub const HTTP_SERVER_ERROR_STATUSES: &str = "DD_TRACE_HTTP_SERVER_ERROR_STATUSES";
    /// Statuses that make a client span an error (`400-499`).
    pub const HTTP_CLIENT_ERROR_STATUSES: &str = "DD_TRACE_HTTP_CLIENT_ERROR_STATUSES";
    /// Tag server spans with the client IP.
    pub const CLIENT_IP_ENABLED: &str = "DD_TRACE_CLIENT_IP_ENABLED";
    /// The header holding the client IP (default: the usual forwarding headers).
    pub const CLIENT_IP_HEADER: &str = "DD_TRACE_CLIENT_IP_HEADER";
    /// Regex of what to redact in `http.url` query strings; empty: redact nothing.
    pub const QUERY_STRING_REGEXP: &str = "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP";
    /// `true`: leave query strings out of `http.url`.
    pub const HTTP_URL_QUERY_STRING_DISABLED: &str = "DD_TRACE_HTTP_URL_QUERY_STRING_DISABLED";
    /// `header` or `header:tag` items (comma- or space-separated): request and response
    /// headers copied to HTTP spans as tags.
    pub const HEADER_TAGS: &str = "DD_TRACE_HEADER_TAGS";
    /// Baggage keys copied to server spans as `baggage.<key>` (`*`: all).
    pub const BAGGAGE_TAG_KEYS: &str = "DD_TRACE_BAGGAGE_TAG_KEYS";
}

/// Where configuration values come from.
pub trait ConfigSource {
    /// The value of a variable, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl ConfigSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl ConfigSource for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

impl ConfigSource for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
    }
}

impl<const N: usize> ConfigSource for [(&str, &str); N] {
    fn get(&self, key: &str) -> Option<String> {
        ConfigSource::get(self.as_slice(), key)
    }
}

pub(super) fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A set, non-blank value, trimmed.
pub(super) fn get<S: ConfigSource + ?Sized>(src: &S, key: &str) -> Option<String> {
    src.get(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

/// A boolean variable, if set.
pub(super) fn bool_var<S: ConfigSource + ?Sized>(src: &S, key: &'static str) -> Result<Option<bool>, ConfigError> {
    get(src, key).map(|v| parse_bool(key, &v)).transpose()
}

fn parse_f64(key: &'static str, v: &str) -> Result<f64, ConfigError> {
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| invalid(key, v, "expected a number"))
}

/// Parses `DD_TAGS`: `k:v` pairs separated by commas or, when there is no comma, by
/// spaces; a key without value gets an empty value; the value keeps any further `:`.
pub(crate) fn parse_tags(v: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = if v.contains(',') {
        v.split(',').collect()
    } else {
        v.split(' ').collect()
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once(':').unwrap_or((p, ""));
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

pub(super) fn read<S: ConfigSource + ?Sized>(src: &S, mut cfg: TracerConfig) -> Result<TracerConfig, ConfigError> {
    // DD_TAGS first: env/version/service inside it have the lowest precedence.
    if let Some(tags) = get(src, vars::TAGS) {
        for (k, v) in parse_tags(&tags) {
            match k.as_str() {
                "env" => cfg.env = Some(v),
                "version" => cfg.version = Some(v),
                "service" => cfg.service = v,
                _ => cfg.global_tags.push((k, v)),
            }
        }
    }
    if let Some(v) = get(src, vars::SERVICE) {
        cfg.service = v;
    }
    if let Some(v) = get(src, vars::ENV) {
        cfg.env = Some(v);
    }
    if let Some(v) = get(src, vars::VERSION) {
        cfg.version = Some(v);
    }

    if let Some(url) = get(src, vars::AGENT_URL) {
        cfg.agent = AgentEndpoint::parse_url(&url).map_err(|r| invalid(vars::AGENT_URL, &url, r))?;
    } else {
        let host = get(src, vars::AGENT_HOST).or_else(|| get(src, vars::AGENT_HOSTNAME));
        let port = match get(src, vars::AGENT_PORT) {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid(vars::AGENT_PORT, &p, "expected a port in 1..=65535"))?,
            ),
            None => None,
        };
        if host.is_some() || port.is_some() {
            let host = host.unwrap_or_else(|| "127.0.0.1".to_owned());
            if host.contains('/') || host.contains(' ') {
                return Err(invalid(vars::AGENT_HOST, &host, "expected a host name or IP address"));
            }
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            cfg.agent = AgentEndpoint::Http {
                authority: format!("{host}:{}", port.unwrap_or(8126)),
            };
        }
    }

    if let Some(enabled) = bool_var(src, vars::ENABLED)? {
        cfg.enabled = enabled;
    }
    if let Some(v) = get(src, vars::SAMPLE_RATE) {
        let rate = parse_f64(vars::SAMPLE_RATE, &v)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(vars::SAMPLE_RATE, &v, "expected a rate within 0..=1"));
        }
        cfg.sample_rate = Some(rate);
    }
    if let Some(v) = get(src, vars::SAMPLING_RULES) {
        cfg.sampling_rules = parse_rules(&v).map_err(|r| invalid(vars::SAMPLING_RULES, &v, r))?;
    }
    if let Some(v) = get(src, vars::RATE_LIMIT) {
        let limit = parse_f64(vars::RATE_LIMIT, &v)?;
        if limit < 0.0 {
            return Err(invalid(vars::RATE_LIMIT, &v, "expected traces per second ≥ 0"));
        }
        cfg.rate_limit = limit;
    }
    let partial = bool_var(src, vars::PARTIAL_FLUSH_ENABLED)?.unwrap_or(false);
    let min_spans = match get(src, vars::PARTIAL_FLUSH_MIN_SPANS) {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..100_000).contains(n))
            .ok_or_else(|| invalid(vars::PARTIAL_FLUSH_MIN_SPANS, &v, "expected a span count in 1..100000"))?,
        None => 300,
    };
    cfg.partial_flush_min_spans = partial.then_some(min_spans);
    if let Some(v) = get(src, vars::API_VERSION) {
        cfg.trace_api = match v.to_ascii_lowercase().as_str() {
            "v0.4" | "0.4" => TraceApi::V04,
            "v0.5" | "0.5" => TraceApi::V05,
            _ => return Err(invalid(vars::API_VERSION, &v, "expected v0.4 or v0.5")),
        };
    }
    if let Some(v) = get(src, vars::AGENT_TIMEOUT) {
        let secs = parse_f64(vars::AGENT_TIMEOUT, &v)?;
        if !(secs > 0.0 && secs <= 3600.0) {
            return Err(invalid(vars::AGENT_TIMEOUT, &v, "expected seconds in (0, 3600]"));
        }
        cfg.agent_timeout = Duration::from_secs_f64(secs);
    }
    if let Some(on) = bool_var(src, vars::STATS_COMPUTATION_ENABLED)? {
        cfg.stats_computation = on;
    }
    if let Some(on) = bool_var(src, vars::TRACE_ID_128_BIT_LOGGING)? {
        cfg.log_128bit_trace_id = on;
    }
    cfg.propagation = super::http::read_propagation(src)?;
    cfg.http = super::http::read_http(src)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<TracerConfig, ConfigError> {
        TracerConfig::from_source(vars)
    }

    #[test]
    fn defaults_without_variables() {
        let c = cfg(&[]).unwrap_or_default();
        assert_eq!(
            c.agent,
            AgentEndpoint::Http {
                authority: "127.0.0.1:8126".into()
            }
        );
        assert!(c.enabled);
        assert!(!c.stats_computation, "off by default, as in the other tracers");
        assert!(cfg(&[("DD_TRACE_STATS_COMPUTATION_ENABLED", "true")]).is_ok_and(|c| c.stats_computation));
        assert!(cfg(&[("DD_TRACE_STATS_COMPUTATION_ENABLED", "maybe")]).is_err());
        assert_eq!(c.rate_limit, 100.0);
        assert_eq!(c.partial_flush_min_spans, None);
        assert!(!c.service.is_empty());
    }

    #[test]
    fn unified_service_tagging_precedence() {
        let c = cfg(&[
            ("DD_TAGS", "env:from-tags, team:apm,version:0.9,owner"),
            ("DD_SERVICE", "web"),
            ("DD_ENV", "prod"),
        ])
        .unwrap_or_default();
        assert_eq!(c.service, "web");
        assert_eq!(c.env.as_deref(), Some("prod"), "DD_ENV wins over env: in DD_TAGS");
        assert_eq!(
            c.version.as_deref(),
            Some("0.9"),
            "version: in DD_TAGS used when DD_VERSION unset"
        );
        assert_eq!(
            c.global_tags,
            vec![("team".into(), "apm".into()), ("owner".into(), String::new())]
        );
        let spaces = parse_tags("a:1 b:2:3");
        assert_eq!(spaces, vec![("a".into(), "1".into()), ("b".into(), "2:3".into())]);
    }

    #[test]
    fn agent_address_resolution() {
        let url = |v: &[(&str, &str)]| cfg(v).map(|c| c.agent.url());
        assert_eq!(
            url(&[("DD_AGENT_HOST", "agent"), ("DD_TRACE_AGENT_PORT", "9126")]),
            Ok("http://agent:9126".into())
        );
        assert_eq!(
            url(&[("DD_TRACE_AGENT_PORT", "9126")]),
            Ok("http://127.0.0.1:9126".into())
        );
        assert_eq!(url(&[("DD_AGENT_HOST", "::1")]), Ok("http://[::1]:8126".into()));
        assert_eq!(url(&[("DD_TRACE_AGENT_HOSTNAME", "old")]), Ok("http://old:8126".into()));
        assert_eq!(
            url(&[
                ("DD_TRACE_AGENT_URL", "unix:///var/run/datadog/apm.socket"),
                ("DD_AGENT_HOST", "ignored")
            ]),
            Ok("unix:///var/run/datadog/apm.socket".into())
        );
        assert_eq!(
            url(&[("DD_TRACE_AGENT_URL", "http://[::1]:1234/")]),
            Ok("http://[::1]:1234".into())
        );
        assert_eq!(url(&[("DD_TRACE_AGENT_URL", "http://h")]), Ok("http://h:8126".into()));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let cases: &[(&str, &str)] = &[
            ("DD_TRACE_AGENT_PORT", "80a"),
            ("DD_TRACE_AGENT_PORT", "0"),
            ("DD_TRACE_AGENT_PORT", "70000"),
            ("DD_TRACE_AGENT_URL", "https://agent:8126"),
            ("DD_TRACE_AGENT_URL", "agent:8126"),
            ("DD_TRACE_AGENT_URL", "http://agent:x"),
            ("DD_TRACE_AGENT_URL", "unix://"),
            ("DD_TRACE_ENABLED", "maybe"),
            ("DD_TRACE_SAMPLE_RATE", "1.5"),
            ("DD_TRACE_SAMPLE_RATE", "half"),
            ("DD_TRACE_SAMPLE_RATE", "NaN"),
            ("DD_TRACE_SAMPLING_RULES", "[{"),
            ("DD_TRACE_SAMPLING_RULES", r#"[{"sample_rate":-1}]"#),
            ("DD_TRACE_RATE_LIMIT", "-5"),
            ("DD_TRACE_PARTIAL_FLUSH_ENABLED", "2"),
            ("DD_TRACE_PARTIAL_FLUSH_MIN_SPANS", "0"),
            ("DD_TRACE_PARTIAL_FLUSH_MIN_SPANS", "100000"),
            ("DD_TRACE_AGENT_TIMEOUT", "0"),
            ("DD_TRACE_API_VERSION", "v1.0"),
        ];
        for (key, value) in cases {
            match cfg(&[(key, value)]) {
                Err(ConfigError::Invalid {
                    key: k,
                    value: v,
                    reason,
                }) => {
                    assert_eq!((k, v.as_str()), (*key, *value));
                    assert!(!reason.is_empty());
                }
                Ok(_) => panic!("{key}={value:?} was accepted"),
            }
        }
        let msg = cfg(&[("DD_TRACE_SAMPLE_RATE", "1.5")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            msg,
            "invalid DD_TRACE_SAMPLE_RATE=\"1.5\": expected a rate within 0..=1"
        );
    }

    #[test]
    fn good_values_are_read() {
        let c = cfg(&[
            ("DD_TRACE_ENABLED", "false"),
            ("DD_TRACE_SAMPLE_RATE", "0.25"),
            ("DD_TRACE_SAMPLING_RULES", r#"[{"service":"web","sample_rate":0.5}]"#),
            ("DD_TRACE_RATE_LIMIT", "10"),
            ("DD_TRACE_PARTIAL_FLUSH_ENABLED", "true"),
            ("DD_TRACE_PARTIAL_FLUSH_MIN_SPANS", "50"),
            ("DD_TRACE_AGENT_TIMEOUT", "0.5"),
            ("DD_VERSION", " "),
            ("DD_TRACE_API_VERSION", "v0.4"),
            ("DD_TRACE_128_BIT_TRACEID_LOGGING_ENABLED", "false"),
        ])
        .unwrap_or_default();
        assert!(!c.enabled);
        assert!(!c.log_128bit_trace_id);
        assert!(TracerConfig::default().log_128bit_trace_id);
        assert_eq!(c.sample_rate, Some(0.25));
        assert_eq!(c.sampling_rules.len(), 1);
        assert_eq!(c.rate_limit, 10.0);
        assert_eq!(c.partial_flush_min_spans, Some(50));
        assert_eq!(c.agent_timeout, Duration::from_millis(500));
        assert_eq!(c.version, None, "blank is unset");
        assert_eq!(c.trace_api, TraceApi::V04);
    }

    #[test]
    fn code_overrides_env() {
        let c = cfg(&[("DD_SERVICE", "env-svc")])
            .unwrap_or_default()
            .with_service("code-svc");
        assert_eq!(c.service(), "code-svc");
    }
}
