//! Keys of the upstream writers (spec section 7/8): where kept traces and stats go, retries,
//! writer concurrency and queue bounds, and the optional OTLP export.

use crate::upstream::WriterLimits;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::load::{Ctx, num, string};
use super::{ConfigError, Secret, mask};

/// `apm_config` keys of the writers, as written in the file (flattened into `RawApm`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawUpstream {
    pub(crate) apm_dd_url: Option<String>,
    pub(crate) additional_endpoints: Option<BTreeMap<String, Vec<String>>>,
    pub(crate) max_sender_retries: Option<u32>,
    pub(crate) trace_writer: Option<RawWriter>,
    pub(crate) stats_writer: Option<RawWriter>,
    pub(crate) otlp_export: Option<RawOtlpExport>,
    pub(crate) spool: Option<RawSpool>,
}

/// `apm_config.spool`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawSpool {
    pub(crate) dir: Option<String>,
    pub(crate) max_size: Option<u64>,
}

/// `apm_config.trace_writer` / `apm_config.stats_writer`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawWriter {
    pub(crate) connection_limit: Option<usize>,
    pub(crate) flush_period_seconds: Option<f64>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) max_queue_bytes: Option<usize>,
}

/// `apm_config.otlp_export`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOtlpExport {
    pub(crate) endpoint: Option<String>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
}

/// Key paths of this module, for the unknown-key check.
pub(crate) const KNOWN_KEYS: &[&str] = &[
    "apm_config.apm_dd_url",
    "apm_config.additional_endpoints",
    "apm_config.max_sender_retries",
    "apm_config.trace_writer",
    "apm_config.trace_writer.connection_limit",
    "apm_config.trace_writer.flush_period_seconds",
    "apm_config.trace_writer.queue_size",
    "apm_config.trace_writer.max_queue_bytes",
    "apm_config.stats_writer",
    "apm_config.stats_writer.connection_limit",
    "apm_config.stats_writer.queue_size",
    "apm_config.stats_writer.max_queue_bytes",
    "apm_config.otlp_export",
    "apm_config.otlp_export.endpoint",
    "apm_config.otlp_export.headers",
    "apm_config.spool",
    "apm_config.spool.dir",
    "apm_config.spool.max_size",
];

/// Maps whose children are user data (URLs, header names), not keys.
pub(crate) const FREE_FORM_MAPS: &[&str] = &["apm_config.additional_endpoints", "apm_config.otlp_export.headers"];

/// Where traces also go over OTLP/HTTP (`apm_config.otlp_export`).
#[derive(Clone, PartialEq)]
pub struct OtlpExportConfig {
    /// Collector base URL; traces are POSTed to `<endpoint>/v1/traces` (a URL already ending in
    /// `/v1/traces` is used as is).
    pub endpoint: String,
    /// Extra request headers (e.g. an auth token; values never printed).
    pub headers: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for OtlpExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExportConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Configuration of the upstream writers.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `apm_config.apm_dd_url`; `None`: `https://trace.agent.<site>`.
    pub apm_dd_url: Option<String>,
    /// `apm_config.additional_endpoints`: URL → API keys; every payload also goes to each pair.
    pub additional_endpoints: BTreeMap<String, Vec<Secret>>,
    /// `apm_config.max_sender_retries`: retries of a retriable failure before the payload is
    /// dropped.
    pub max_sender_retries: u32,
    /// `apm_config.trace_writer.*`.
    pub trace_writer: WriterLimits,
    /// `apm_config.trace_writer.flush_period_seconds`: how long tracer payloads are batched.
    pub trace_flush_period: Duration,
    /// `apm_config.stats_writer.*`.
    pub stats_writer: WriterLimits,
    /// `apm_config.otlp_export.*`; `None`: no OTLP export.
    pub otlp_export: Option<OtlpExportConfig>,
    /// `apm_config.spool.*`: where undeliverable payloads wait for the next start. Off in
    /// [`Default`] (tests, embedders); a loaded configuration puts it in
    /// `<apm_config.local.data_dir>/spool`.
    pub spool: crate::upstream::SpoolConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            apm_dd_url: None,
            additional_endpoints: BTreeMap::new(),
            max_sender_retries: 4,
            trace_writer: WriterLimits {
                connection_limit: 5,
                queue_size: 64,
                max_queue_bytes: 64 << 20,
            },
            trace_flush_period: Duration::from_secs(5),
            stats_writer: WriterLimits {
                connection_limit: 5,
                queue_size: 64,
                max_queue_bytes: 32 << 20,
            },
            otlp_export: None,
            spool: crate::upstream::SpoolConfig::default(),
        }
    }
}

impl UpstreamConfig {
    /// The Datadog intake base URL for `site`.
    pub fn dd_url(&self, site: &str) -> String {
        self.apm_dd_url
            .clone()
            .unwrap_or_else(|| format!("https://trace.agent.{site}"))
    }

    /// `key = value` pairs for `trace-agent config` (secrets masked).
    pub(crate) fn describe(&self, site: &str) -> Vec<(&'static str, String)> {
        let limits = |l: &WriterLimits| {
            (
                l.connection_limit.to_string(),
                l.queue_size.to_string(),
                l.max_queue_bytes.to_string(),
            )
        };
        let (tc, tq, tb) = limits(&self.trace_writer);
        let (sc, sq, sb) = limits(&self.stats_writer);
        let endpoints: BTreeMap<&str, Vec<String>> = self
            .additional_endpoints
            .iter()
            .map(|(u, keys)| (u.as_str(), keys.iter().map(Secret::masked).collect()))
            .collect();
        vec![
            ("apm_config.apm_dd_url", self.dd_url(site)),
            ("apm_config.additional_endpoints", format!("{endpoints:?}")),
            ("apm_config.max_sender_retries", self.max_sender_retries.to_string()),
            ("apm_config.trace_writer.connection_limit", tc),
            (
                "apm_config.trace_writer.flush_period_seconds",
                self.trace_flush_period.as_secs_f64().to_string(),
            ),
            ("apm_config.trace_writer.queue_size", tq),
            ("apm_config.trace_writer.max_queue_bytes", tb),
            ("apm_config.stats_writer.connection_limit", sc),
            ("apm_config.stats_writer.queue_size", sq),
            ("apm_config.stats_writer.max_queue_bytes", sb),
            (
                "apm_config.spool.dir",
                self.spool
                    .dir
                    .as_ref()
                    .map_or_else(|| "(off)".to_owned(), |d| d.display().to_string()),
            ),
            ("apm_config.spool.max_size", self.spool.max_bytes.to_string()),
            (
                "apm_config.otlp_export.endpoint",
                self.otlp_export
                    .as_ref()
                    .map_or_else(|| "(off)".to_owned(), |o| o.endpoint.clone()),
            ),
            (
                "apm_config.otlp_export.headers",
                self.otlp_export.as_ref().map_or_else(String::new, |o| {
                    format!(
                        "{:?}",
                        o.headers.iter().map(|(k, v)| (k, v.masked())).collect::<Vec<_>>()
                    )
                }),
            ),
        ]
    }
}

fn positive(v: usize, key: &str) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: "must be at least 1".to_owned(),
        });
    }
    Ok(v)
}

fn url(v: &str) -> Result<String, String> {
    let v = v.trim().trim_end_matches('/');
    let uri: http::Uri = v.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(v.to_owned()),
        _ => Err("expected an http:// or https:// URL with a host".to_owned()),
    }
}

/// `DD_APM_ADDITIONAL_ENDPOINTS`: `{"https://url": ["key1", "key2"]}`.
fn endpoints_json(v: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    serde_json::from_str(v).map_err(|e| format!("not a JSON map of URL to a list of API keys: {e}"))
}

/// `DD_APM_OTLP_EXPORT_HEADERS`: `name=value,name2=value2` (as `OTEL_EXPORTER_OTLP_HEADERS`).
fn headers_list(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, val) = item
            .split_once('=')
            .ok_or_else(|| format!("'{}' is not name=value", mask(item)))?;
        out.insert(k.trim().to_owned(), val.trim().to_owned());
    }
    Ok(out)
}

/// Reads the writer keys into `c.config.upstream`.
pub(super) fn load(c: &mut Ctx<'_>, raw: RawUpstream) -> Result<(), ConfigError> {
    let key_err = |key: &str, message: String| ConfigError::Invalid {
        key: key.to_owned(),
        message,
    };
    if let Some(v) = c.pick("apm_config.apm_dd_url", &["DD_APM_DD_URL"], raw.apm_dd_url, string)?
        && !v.is_empty()
    {
        c.config.upstream.apm_dd_url = Some(url(&v).map_err(|m| key_err("apm_config.apm_dd_url", m))?);
    }
    if let Some(map) = c.pick(
        "apm_config.additional_endpoints",
        &["DD_APM_ADDITIONAL_ENDPOINTS"],
        raw.additional_endpoints,
        endpoints_json,
    )? {
        let mut out = BTreeMap::new();
        for (u, keys) in map {
            let u = url(&u).map_err(|m| key_err("apm_config.additional_endpoints", format!("{u}: {m}")))?;
            let keys: Vec<Secret> = keys
                .into_iter()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect();
            if !keys.is_empty() {
                out.insert(u, keys);
            }
        }
        c.config.upstream.additional_endpoints = out;
    }
    if let Some(v) = c.pick(
        "apm_config.max_sender_retries",
        &["DD_APM_MAX_SENDER_RETRIES"],
        raw.max_sender_retries,
        num,
    )? {
        c.config.upstream.max_sender_retries = v;
    }
    for (section, raw_writer) in [("trace_writer", raw.trace_writer), ("stats_writer", raw.stats_writer)] {
        let w = raw_writer.unwrap_or_default();
        let env = |field: &str| format!("DD_APM_{}_{}", section.to_uppercase(), field.to_uppercase());
        let key = |field: &str| format!("apm_config.{section}.{field}");
        let mut limits = if section == "trace_writer" {
            c.config.upstream.trace_writer.clone()
        } else {
            c.config.upstream.stats_writer.clone()
        };
        if let Some(v) = c.pick(
            &key("connection_limit"),
            &[&env("connection_limit")],
            w.connection_limit,
            num,
        )? {
            limits.connection_limit = positive(v, &key("connection_limit"))?;
        }
        if let Some(v) = c.pick(&key("queue_size"), &[&env("queue_size")], w.queue_size, num)? {
            limits.queue_size = positive(v, &key("queue_size"))?;
        }
        if let Some(v) = c.pick(
            &key("max_queue_bytes"),
            &[&env("max_queue_bytes")],
            w.max_queue_bytes,
            num,
        )? {
            limits.max_queue_bytes = positive(v, &key("max_queue_bytes"))?;
        }
        if section == "trace_writer" {
            if let Some(v) = c.pick(
                &key("flush_period_seconds"),
                &[&env("flush_period_seconds")],
                w.flush_period_seconds,
                num::<f64>,
            )? {
                if !(v > 0.0 && v <= 3600.0) {
                    return Err(key_err(
                        &key("flush_period_seconds"),
                        format!("{v} is not within (0, 3600]"),
                    ));
                }
                c.config.upstream.trace_flush_period = Duration::from_secs_f64(v);
            }
            c.config.upstream.trace_writer = limits;
        } else {
            c.config.upstream.stats_writer = limits;
        }
    }
    let spool = raw.spool.unwrap_or_default();
    c.config.upstream.spool.dir = Some(c.config.local.data_dir.join("spool"));
    if let Some(v) = c.pick("apm_config.spool.dir", &["DD_APM_SPOOL_DIR"], spool.dir, string)? {
        // An empty value turns the spool off.
        c.config.upstream.spool.dir = (!v.trim().is_empty()).then(|| std::path::PathBuf::from(v.trim()));
    }
    if let Some(v) = c.pick(
        "apm_config.spool.max_size",
        &["DD_APM_SPOOL_MAX_SIZE"],
        spool.max_size,
        num,
    )? {
        c.config.upstream.spool.max_bytes = v;
    }
    let otlp = raw.otlp_export.unwrap_or_default();
    if let Some(endpoint) = c.pick(
        "apm_config.otlp_export.endpoint",
        &["DD_APM_OTLP_EXPORT_ENDPOINT"],
        otlp.endpoint,
        string,
    )? && !endpoint.is_empty()
    {
        let endpoint = url(&endpoint).map_err(|m| key_err("apm_config.otlp_export.endpoint", m))?;
        let headers = c
            .pick(
                "apm_config.otlp_export.headers",
                &["DD_APM_OTLP_EXPORT_HEADERS"],
                otlp.headers,
                headers_list,
            )?
            .unwrap_or_default();
        for name in headers.keys() {
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                key_err(
                    "apm_config.otlp_export.headers",
                    format!("{name:?} is not a header name"),
                )
            })?;
        }
        c.config.upstream.otlp_export = Some(OtlpExportConfig {
            endpoint,
            headers: headers.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::load;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_follow_the_go_agent() {
        let c = load(None, &env(&[])).unwrap();
        let u = &c.upstream;
        assert_eq!(u.dd_url(&c.site), "https://trace.agent.datadoghq.com");
        assert_eq!(u.max_sender_retries, 4);
        assert_eq!(u.trace_writer.connection_limit, 5);
        assert_eq!(u.stats_writer.connection_limit, 5);
        assert_eq!(u.trace_flush_period.as_secs(), 5);
        assert!(u.otlp_export.is_none());
    }

    #[test]
    fn env_sets_every_writer_key() {
        let vars = [
            ("DD_SITE", "datadoghq.eu"),
            ("DD_APM_DD_URL", "http://127.0.0.1:9/"),
            (
                "DD_APM_ADDITIONAL_ENDPOINTS",
                r#"{"https://other.example": ["k1", "k2"]}"#,
            ),
            ("DD_APM_MAX_SENDER_RETRIES", "7"),
            ("DD_APM_TRACE_WRITER_CONNECTION_LIMIT", "3"),
            ("DD_APM_TRACE_WRITER_FLUSH_PERIOD_SECONDS", "0.5"),
            ("DD_APM_TRACE_WRITER_QUEUE_SIZE", "9"),
            ("DD_APM_STATS_WRITER_MAX_QUEUE_BYTES", "1000"),
            ("DD_APM_OTLP_EXPORT_ENDPOINT", "http://collector:4318"),
            (
                "DD_APM_OTLP_EXPORT_HEADERS",
                "authorization=Bearer abcdefgh, x-team=apm",
            ),
        ];
        let c = load(None, &env(&vars)).unwrap();
        let u = &c.upstream;
        assert_eq!(u.dd_url(&c.site), "http://127.0.0.1:9");
        assert_eq!(u.additional_endpoints["https://other.example"].len(), 2);
        assert_eq!(u.max_sender_retries, 7);
        assert_eq!(u.trace_writer.connection_limit, 3);
        assert_eq!(u.trace_flush_period.as_millis(), 500);
        assert_eq!(u.trace_writer.queue_size, 9);
        assert_eq!(u.stats_writer.max_queue_bytes, 1000);
        let o = u.otlp_export.as_ref().unwrap();
        assert_eq!(o.endpoint, "http://collector:4318");
        assert_eq!(o.headers["authorization"].expose(), "Bearer abcdefgh");
        let described = c.describe();
        assert!(
            !described.contains("abcdefgh") && !described.contains("\"k1\""),
            "{described}"
        );
        assert!(described.contains("apm_config.otlp_export.endpoint"));
    }

    #[test]
    fn file_keys_are_known_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datadog.yaml");
        std::fs::write(
            &path,
            "apm_config:\n  apm_dd_url: https://intake.example\n  additional_endpoints:\n    \
             https://b.example: [key]\n  trace_writer:\n    connection_limit: 2\n  otlp_export:\n    \
             endpoint: http://c:4318\n    headers:\n      x-a: b\n",
        )
        .unwrap();
        let c = load(Some(&path), &env(&[])).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.upstream.trace_writer.connection_limit, 2);
        assert_eq!(c.upstream.additional_endpoints.len(), 1);
        let bad = [("DD_APM_DD_URL", "ftp://x")];
        assert!(
            load(None, &env(&bad))
                .unwrap_err()
                .to_string()
                .contains("apm_config.apm_dd_url")
        );
        let zero = [("DD_APM_TRACE_WRITER_CONNECTION_LIMIT", "0")];
        assert!(load(None, &env(&zero)).is_err());
    }
}
