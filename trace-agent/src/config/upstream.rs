//! Keys of the upstream writers (spec section 7/8): where kept traces and stats go, retries,
//! writer concurrency and queue bounds, and the optional OTLP export.

use crate::upstream::WriterLimits;
use std::collections::BTreeMap;
use std::time::Duration;

use super::key::{Key, Kind, Secrecy, Value};
use super::load::Scratch;
use super::{AgentConfig, ConfigError, Secret, mask};

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
}

fn positive(v: usize) -> Result<usize, String> {
    if v == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(v)
}

pub(super) fn url(v: &str) -> Result<String, String> {
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

/// `{url: ["***…abcde"]}`: endpoint keys masked.
pub(super) fn masked_map(m: &BTreeMap<String, Vec<Secret>>) -> String {
    format!(
        "{:?}",
        m.iter()
            .map(|(u, keys)| (u.as_str(), keys.iter().map(Secret::masked).collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>()
    )
}

/// `{url or host: [keys]}` with each URL checked by `check`, blank keys dropped, hosts without
/// keys dropped.
pub(super) fn endpoint_keys(
    map: BTreeMap<String, Vec<String>>,
    check: fn(&str) -> Result<String, String>,
    with_url: bool,
) -> Result<BTreeMap<String, Vec<Secret>>, String> {
    let mut out = BTreeMap::new();
    for (u, keys) in map {
        let u = check(&u).map_err(|m| if with_url { format!("{u}: {m}") } else { m })?;
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
    Ok(out)
}

/// A writer key: `apm_config.<writer>.<field>`, `DD_APM_<WRITER>_<FIELD>`, at least 1.
macro_rules! writer_limit {
    ($writer:ident, $upper:literal, $field:ident, $field_upper:literal) => {
        Key::new(
            concat!("apm_config.", stringify!($writer), ".", stringify!($field)),
            Kind::Usize,
            |l, v| {
                l.config.upstream.$writer.$field = positive(v.int()?)?;
                Ok(())
            },
        )
        .env(&[concat!("DD_APM_", $upper, "_", $field_upper)])
        .show(|c| c.upstream.$writer.$field.to_string())
    };
}

/// The writers' keys.
pub(crate) static KEYS: &[Key] = &[
    Key::new("apm_config.apm_dd_url", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.config.upstream.apm_dd_url = Some(url(&v)?);
        }
        Ok(())
    })
    .env(&["DD_APM_DD_URL"])
    .example("http://127.0.0.1:9")
    .show(|c| c.upstream.dd_url(&c.site)),
    Key::new("apm_config.additional_endpoints", Kind::ListMap, |l, v| {
        l.config.upstream.additional_endpoints = endpoint_keys(v.list_map()?, url, true)?;
        Ok(())
    })
    .env(&["DD_APM_ADDITIONAL_ENDPOINTS"])
    .parse_env(|v| endpoints_json(v).map(Value::ListMap))
    .secret(Secrecy::Hidden)
    .show(|c| masked_map(&c.upstream.additional_endpoints)),
    Key::new("apm_config.max_sender_retries", Kind::U32, |l, v| {
        l.config.upstream.max_sender_retries = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_MAX_SENDER_RETRIES"])
    .show(|c| c.upstream.max_sender_retries.to_string()),
    writer_limit!(trace_writer, "TRACE_WRITER", connection_limit, "CONNECTION_LIMIT"),
    Key::new("apm_config.trace_writer.flush_period_seconds", Kind::F64, |l, v| {
        let v = v.float()?;
        if !(v > 0.0 && v <= 3600.0) {
            return Err(format!("{v} is not within (0, 3600]"));
        }
        l.config.upstream.trace_flush_period = Duration::from_secs_f64(v);
        Ok(())
    })
    .env(&["DD_APM_TRACE_WRITER_FLUSH_PERIOD_SECONDS"])
    .show(|c| c.upstream.trace_flush_period.as_secs_f64().to_string()),
    writer_limit!(trace_writer, "TRACE_WRITER", queue_size, "QUEUE_SIZE"),
    writer_limit!(trace_writer, "TRACE_WRITER", max_queue_bytes, "MAX_QUEUE_BYTES"),
    writer_limit!(stats_writer, "STATS_WRITER", connection_limit, "CONNECTION_LIMIT"),
    writer_limit!(stats_writer, "STATS_WRITER", queue_size, "QUEUE_SIZE"),
    writer_limit!(stats_writer, "STATS_WRITER", max_queue_bytes, "MAX_QUEUE_BYTES"),
    Key::new("apm_config.spool.dir", Kind::Text, |l, v| {
        l.scratch.spool_dir = Some(v.text()?);
        Ok(())
    })
    .env(&["DD_APM_SPOOL_DIR"])
    .show(|c| {
        c.upstream
            .spool
            .dir
            .as_ref()
            .map_or_else(|| "(off)".to_owned(), |d| d.display().to_string())
    }),
    Key::new("apm_config.spool.max_size", Kind::U64, |l, v| {
        l.config.upstream.spool.max_bytes = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_SPOOL_MAX_SIZE"])
    .show(|c| c.upstream.spool.max_bytes.to_string()),
    Key::new("apm_config.otlp_export.endpoint", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.scratch.otlp_export_endpoint = Some(url(&v)?);
        }
        Ok(())
    })
    .env(&["DD_APM_OTLP_EXPORT_ENDPOINT"])
    .example("http://127.0.0.1:9")
    .show(|c| {
        c.upstream
            .otlp_export
            .as_ref()
            .map_or_else(|| "(off)".to_owned(), |o| o.endpoint.clone())
    }),
    Key::new("apm_config.otlp_export.headers", Kind::StrMap, |l, v| {
        let headers = v.str_map()?;
        for name in headers.keys() {
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
        }
        l.scratch.otlp_export_headers = Some(headers);
        Ok(())
    })
    .env(&["DD_APM_OTLP_EXPORT_HEADERS"])
    .parse_env(|v| headers_list(v).map(Value::StrMap))
    .secret(Secrecy::Hidden)
    .env_example("a=b")
    .show(|c| {
        c.upstream.otlp_export.as_ref().map_or_else(String::new, |o| {
            format!(
                "{:?}",
                o.headers.iter().map(|(k, v)| (k, v.masked())).collect::<Vec<_>>()
            )
        })
    }),
];

/// The spool directory (default `<local data dir>/spool`, empty: off) and the OTLP export
/// (on when an endpoint is set).
pub(super) fn finish(c: &mut AgentConfig, s: &mut Scratch) -> Result<(), ConfigError> {
    c.upstream.spool.dir = match s.spool_dir.take() {
        // An empty value turns the spool off.
        Some(v) => (!v.trim().is_empty()).then(|| std::path::PathBuf::from(v.trim())),
        None => Some(c.local.data_dir.join("spool")),
    };
    if let Some(endpoint) = s.otlp_export_endpoint.take() {
        let headers = s.otlp_export_headers.take().unwrap_or_default();
        c.upstream.otlp_export = Some(OtlpExportConfig {
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
