//! Keys of the OTLP receivers (`otlp_config.receiver.protocols.*`, the Datadog agent's names)
//! and of the proxy routes (`apm_config.evp_proxy_config.*`, `apm_config.telemetry.*`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::load::{Ctx, boolean, num, string};
use super::{ConfigError, Secret};

/// `otlp_config:` (top level of `datadog.yaml`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOtlpConfig {
    pub(crate) receiver: Option<RawOtlpReceiver>,
}

/// `otlp_config.receiver`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOtlpReceiver {
    pub(crate) protocols: Option<RawOtlpProtocols>,
}

/// `otlp_config.receiver.protocols`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOtlpProtocols {
    pub(crate) grpc: Option<RawOtlpProtocol>,
    pub(crate) http: Option<RawOtlpProtocol>,
}

/// `otlp_config.receiver.protocols.grpc` / `.http`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOtlpProtocol {
    pub(crate) endpoint: Option<String>,
    pub(crate) max_recv_msg_size_mib: Option<u64>,
}

/// `apm_config.evp_proxy_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawEvpProxy {
    pub(crate) enabled: Option<bool>,
    pub(crate) dd_url: Option<String>,
    pub(crate) max_payload_size: Option<u64>,
    pub(crate) receiver_timeout: Option<u64>,
    pub(crate) api_key: Option<String>,
    pub(crate) additional_endpoints: Option<BTreeMap<String, Vec<String>>>,
}

/// `apm_config.telemetry`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawTelemetry {
    pub(crate) enabled: Option<bool>,
    pub(crate) dd_url: Option<String>,
}

/// Key paths of this module, for the unknown-key check.
pub(crate) const KNOWN_KEYS: &[&str] = &[
    "otlp_config",
    "otlp_config.receiver",
    "otlp_config.receiver.protocols",
    "otlp_config.receiver.protocols.grpc",
    "otlp_config.receiver.protocols.grpc.endpoint",
    "otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib",
    "otlp_config.receiver.protocols.http",
    "otlp_config.receiver.protocols.http.endpoint",
    "apm_config.evp_proxy_config",
    "apm_config.evp_proxy_config.enabled",
    "apm_config.evp_proxy_config.dd_url",
    "apm_config.evp_proxy_config.max_payload_size",
    "apm_config.evp_proxy_config.receiver_timeout",
    "apm_config.evp_proxy_config.api_key",
    "apm_config.evp_proxy_config.additional_endpoints",
    "apm_config.telemetry",
    "apm_config.telemetry.enabled",
    "apm_config.telemetry.dd_url",
];

/// Maps whose children are user data (hosts), not keys.
pub(crate) const FREE_FORM_MAPS: &[&str] = &["apm_config.evp_proxy_config.additional_endpoints"];

/// Most bytes of a telemetry body (the Datadog agent's in-flight bound); the receivers' body
/// budget is never below it.
pub const TELEMETRY_MAX_BODY: u64 = 5 << 20;

/// Default gRPC endpoint when the `grpc` section is present without an endpoint.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "localhost:4317";
/// Default HTTP endpoint when the `http` section is present without an endpoint.
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "localhost:4318";

/// The OTLP receivers: off unless an endpoint is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpReceiverConfig {
    /// `otlp_config.receiver.protocols.grpc.endpoint` (`host:port`); `None`: no gRPC receiver.
    pub grpc_endpoint: Option<String>,
    /// `otlp_config.receiver.protocols.http.endpoint` (`host:port`); `None`: no HTTP receiver.
    pub http_endpoint: Option<String>,
    /// `otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib`, in bytes (default 4 MiB,
    /// the OpenTelemetry Collector's): larger gRPC messages are refused with `OUT_OF_RANGE` (tonic's code for it).
    pub grpc_max_recv_msg_size: usize,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_endpoint: None,
            http_endpoint: None,
            grpc_max_recv_msg_size: 4 << 20,
        }
    }
}

impl OtlpReceiverConfig {
    /// Whether any OTLP receiver is on.
    pub fn enabled(&self) -> bool {
        self.grpc_endpoint.is_some() || self.http_endpoint.is_some()
    }
}

/// The proxy routes (`/evp_proxy/v1..v4/`, `/telemetry/proxy/`).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `apm_config.evp_proxy_config.enabled` (default true).
    pub evp_enabled: bool,
    /// `apm_config.evp_proxy_config.dd_url`: a host (`datadoghq.eu`: requests go to
    /// `https://<X-Datadog-EVP-Subdomain>.<host>`) or a full `http(s)://` URL used as is.
    pub evp_dd_url: Option<String>,
    /// `apm_config.evp_proxy_config.api_key`: the key of the main EVP endpoint (default: `api_key`).
    pub evp_api_key: Option<Secret>,
    /// `apm_config.evp_proxy_config.additional_endpoints`: host (or URL) → API keys; every
    /// request also goes to each pair, their answers are not relayed.
    pub evp_additional_endpoints: BTreeMap<String, Vec<Secret>>,
    /// `apm_config.evp_proxy_config.max_payload_size` (default 5 MiB).
    pub evp_max_payload_size: u64,
    /// `apm_config.evp_proxy_config.receiver_timeout` (default 30 s): the whole exchange.
    pub evp_timeout: Duration,
    /// `apm_config.telemetry.enabled` (default true).
    pub telemetry_enabled: bool,
    /// `apm_config.telemetry.dd_url` (default `https://instrumentation-telemetry-intake.<site>`).
    pub telemetry_dd_url: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            evp_enabled: true,
            evp_dd_url: None,
            evp_api_key: None,
            evp_additional_endpoints: BTreeMap::new(),
            evp_max_payload_size: 5 << 20,
            evp_timeout: Duration::from_secs(30),
            telemetry_enabled: true,
            telemetry_dd_url: None,
        }
    }
}

/// `key = value` pairs for `trace-agent config`.
pub(super) fn describe(otlp: &OtlpReceiverConfig, proxy: &ProxyConfig) -> Vec<(&'static str, String)> {
    let off = |v: &Option<String>| v.clone().unwrap_or_else(|| "(off)".to_owned());
    let default = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
    vec![
        ("otlp_config.receiver.protocols.grpc.endpoint", off(&otlp.grpc_endpoint)),
        ("otlp_config.receiver.protocols.http.endpoint", off(&otlp.http_endpoint)),
        (
            "otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib",
            (otlp.grpc_max_recv_msg_size >> 20).to_string(),
        ),
        ("apm_config.evp_proxy_config.enabled", proxy.evp_enabled.to_string()),
        (
            "apm_config.evp_proxy_config.dd_url",
            default(&proxy.evp_dd_url, "(site)"),
        ),
        (
            "apm_config.evp_proxy_config.api_key",
            proxy
                .evp_api_key
                .as_ref()
                .map_or_else(|| "(api_key)".to_owned(), Secret::masked),
        ),
        (
            "apm_config.evp_proxy_config.additional_endpoints",
            format!(
                "{:?}",
                proxy
                    .evp_additional_endpoints
                    .iter()
                    .map(|(h, keys)| (h, keys.iter().map(Secret::masked).collect::<Vec<_>>()))
                    .collect::<BTreeMap<_, _>>()
            ),
        ),
        (
            "apm_config.evp_proxy_config.max_payload_size",
            proxy.evp_max_payload_size.to_string(),
        ),
        (
            "apm_config.evp_proxy_config.receiver_timeout",
            proxy.evp_timeout.as_secs().to_string(),
        ),
        ("apm_config.telemetry.enabled", proxy.telemetry_enabled.to_string()),
        (
            "apm_config.telemetry.dd_url",
            default(&proxy.telemetry_dd_url, "(instrumentation-telemetry-intake.<site>)"),
        ),
    ]
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("evp_enabled", &self.evp_enabled)
            .field("evp_dd_url", &self.evp_dd_url)
            .field("evp_api_key", &self.evp_api_key.as_ref().map(Secret::masked))
            .field(
                "evp_additional_endpoints",
                &self.evp_additional_endpoints.keys().collect::<Vec<_>>(),
            )
            .field("evp_max_payload_size", &self.evp_max_payload_size)
            .field("evp_timeout", &self.evp_timeout)
            .field("telemetry_enabled", &self.telemetry_enabled)
            .field("telemetry_dd_url", &self.telemetry_dd_url)
            .finish()
    }
}

fn endpoint(v: &str) -> Result<String, String> {
    let v = v.trim();
    let (host, port) = v.rsplit_once(':').ok_or_else(|| format!("{v:?} is not host:port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{v:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{v:?}: the host must be an IP address or localhost"));
    }
    Ok(v.to_owned())
}

fn url_or_host(v: &str) -> Result<String, String> {
    let v = v.trim().trim_end_matches('/');
    if v.starts_with("http://") || v.starts_with("https://") {
        let uri: http::Uri = v.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err("expected an http:// or https:// URL with a host".to_owned());
        }
        return Ok(v.to_owned());
    }
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
        return Err(format!("{v:?} is neither a host name nor an http(s):// URL"));
    }
    Ok(v.to_owned())
}

/// Reads the OTLP receiver keys (top-level `otlp_config`) into `c.config.otlp_receiver`.
pub(super) fn load_otlp(c: &mut Ctx<'_>, raw: Option<RawOtlpConfig>) -> Result<(), ConfigError> {
    let protocols = raw
        .and_then(|r| r.receiver)
        .and_then(|r| r.protocols)
        .unwrap_or_default();
    let grpc_present = protocols.grpc.is_some();
    let http_present = protocols.http.is_some();
    let grpc = protocols.grpc.unwrap_or_default();
    let http = protocols.http.unwrap_or_default();
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.to_owned(),
        message,
    };
    let grpc_key = "otlp_config.receiver.protocols.grpc.endpoint";
    let http_key = "otlp_config.receiver.protocols.http.endpoint";
    let g = c.pick(
        grpc_key,
        &["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_ENDPOINT"],
        grpc.endpoint,
        string,
    )?;
    let g = g.or_else(|| grpc_present.then(|| DEFAULT_OTLP_GRPC_ENDPOINT.to_owned()));
    if let Some(v) = g.filter(|v| !v.is_empty()) {
        c.config.otlp_receiver.grpc_endpoint = Some(endpoint(&v).map_err(|m| invalid(grpc_key, m))?);
    }
    let h = c.pick(
        http_key,
        &["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT"],
        http.endpoint,
        string,
    )?;
    let h = h.or_else(|| http_present.then(|| DEFAULT_OTLP_HTTP_ENDPOINT.to_owned()));
    if let Some(v) = h.filter(|v| !v.is_empty()) {
        c.config.otlp_receiver.http_endpoint = Some(endpoint(&v).map_err(|m| invalid(http_key, m))?);
    }
    let size_key = "otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib";
    if let Some(mib) = c.pick(
        size_key,
        &["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_MAX_RECV_MSG_SIZE_MIB"],
        grpc.max_recv_msg_size_mib,
        num::<u64>,
    )? {
        if !(1..=1024).contains(&mib) {
            return Err(invalid(size_key, format!("{mib} is not within 1..=1024")));
        }
        c.config.otlp_receiver.grpc_max_recv_msg_size = usize::try_from(mib << 20).unwrap_or(usize::MAX);
    }
    Ok(())
}

/// Reads the proxy keys (`apm_config.evp_proxy_config`, `apm_config.telemetry`).
pub(super) fn load_proxy(
    c: &mut Ctx<'_>,
    evp: Option<RawEvpProxy>,
    telemetry: Option<RawTelemetry>,
) -> Result<(), ConfigError> {
    let evp = evp.unwrap_or_default();
    let telemetry = telemetry.unwrap_or_default();
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.to_owned(),
        message,
    };
    let p = &mut c.config.proxy.clone();
    if let Some(v) = c.pick(
        "apm_config.evp_proxy_config.enabled",
        &["DD_APM_EVP_PROXY_CONFIG_ENABLED"],
        evp.enabled,
        boolean,
    )? {
        p.evp_enabled = v;
    }
    let key = "apm_config.evp_proxy_config.dd_url";
    if let Some(v) = c.pick(key, &["DD_APM_EVP_PROXY_CONFIG_DD_URL"], evp.dd_url, string)?
        && !v.is_empty()
    {
        p.evp_dd_url = Some(url_or_host(&v).map_err(|m| invalid(key, m))?);
    }
    if let Some(v) = c.pick(
        "apm_config.evp_proxy_config.api_key",
        &["DD_APM_EVP_PROXY_CONFIG_API_KEY"],
        evp.api_key,
        string,
    )? && !v.is_empty()
    {
        p.evp_api_key = Some(Secret::new(v));
    }
    let key = "apm_config.evp_proxy_config.additional_endpoints";
    if let Some(map) = c.pick(
        key,
        &["DD_APM_EVP_PROXY_CONFIG_ADDITIONAL_ENDPOINTS"],
        evp.additional_endpoints,
        |v| {
            serde_json::from_str::<BTreeMap<String, Vec<String>>>(v)
                .map_err(|e| format!("not a JSON map of host to a list of API keys: {e}"))
        },
    )? {
        let mut out = BTreeMap::new();
        for (host, keys) in map {
            let host = url_or_host(&host).map_err(|m| invalid(key, m))?;
            let keys: Vec<Secret> = keys
                .into_iter()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect();
            if !keys.is_empty() {
                out.insert(host, keys);
            }
        }
        p.evp_additional_endpoints = out;
    }
    let key = "apm_config.evp_proxy_config.max_payload_size";
    if let Some(v) = c.pick(
        key,
        &["DD_APM_EVP_PROXY_CONFIG_MAX_PAYLOAD_SIZE"],
        evp.max_payload_size,
        num::<u64>,
    )? {
        if v == 0 {
            return Err(invalid(key, "must be at least 1".to_owned()));
        }
        p.evp_max_payload_size = v;
    }
    let key = "apm_config.evp_proxy_config.receiver_timeout";
    if let Some(v) = c.pick(
        key,
        &["DD_APM_EVP_PROXY_CONFIG_RECEIVER_TIMEOUT"],
        evp.receiver_timeout,
        num::<u64>,
    )? {
        if v == 0 {
            return Err(invalid(key, "must be at least 1 (seconds)".to_owned()));
        }
        p.evp_timeout = Duration::from_secs(v);
    }
    if let Some(v) = c.pick(
        "apm_config.telemetry.enabled",
        &["DD_APM_TELEMETRY_ENABLED"],
        telemetry.enabled,
        boolean,
    )? {
        p.telemetry_enabled = v;
    }
    let key = "apm_config.telemetry.dd_url";
    if let Some(v) = c.pick(key, &["DD_APM_TELEMETRY_DD_URL"], telemetry.dd_url, string)?
        && !v.is_empty()
    {
        let v = url_or_host(&v).map_err(|m| invalid(key, m))?;
        if !v.starts_with("http") {
            return Err(invalid(key, format!("{v:?} is not an http(s):// URL")));
        }
        p.telemetry_dd_url = Some(v);
    }
    c.config.proxy = p.clone();
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
    fn otlp_receivers_are_off_unless_set() {
        let c = load(None, &env(&[])).unwrap();
        assert!(!c.otlp_receiver.enabled());
        let c = load(
            None,
            &env(&[
                ("DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_ENDPOINT", "127.0.0.1:14317"),
                ("DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT", "localhost:14318"),
                ("DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_MAX_RECV_MSG_SIZE_MIB", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(c.otlp_receiver.grpc_endpoint.as_deref(), Some("127.0.0.1:14317"));
        assert_eq!(c.otlp_receiver.http_endpoint.as_deref(), Some("localhost:14318"));
        assert_eq!(c.otlp_receiver.grpc_max_recv_msg_size, 8 << 20);
        let c = load(
            None,
            &env(&[
                ("DD_APM_EVP_PROXY_CONFIG_API_KEY", "evpkey123456"),
                (
                    "DD_APM_EVP_PROXY_CONFIG_ADDITIONAL_ENDPOINTS",
                    r#"{"datadoghq.eu": ["k1", " "], "http://127.0.0.1:9": ["k2"]}"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.proxy.evp_api_key.as_ref().unwrap().expose(), "evpkey123456");
        assert_eq!(c.proxy.evp_additional_endpoints["datadoghq.eu"].len(), 1);
        assert_eq!(c.proxy.evp_additional_endpoints.len(), 2);
        assert!(!c.describe().contains("evpkey123456"));
        let bad = load(
            None,
            &env(&[("DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT", "collector:4318")]),
        );
        assert!(bad.unwrap_err().to_string().contains("IP address or localhost"));
    }

    #[test]
    fn a_section_without_endpoint_listens_on_loopback_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datadog.yaml");
        std::fs::write(
            &path,
            "otlp_config:\n  receiver:\n    protocols:\n      grpc: {}\n      http:\n        endpoint: 127.0.0.1:5318\n\
             apm_config:\n  evp_proxy_config:\n    dd_url: http://127.0.0.1:9\n  telemetry:\n    enabled: false\n",
        )
        .unwrap();
        let c = load(Some(&path), &env(&[])).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.otlp_receiver.grpc_endpoint.as_deref(), Some("localhost:4317"));
        assert_eq!(c.otlp_receiver.http_endpoint.as_deref(), Some("127.0.0.1:5318"));
        assert_eq!(c.proxy.evp_dd_url.as_deref(), Some("http://127.0.0.1:9"));
        assert!(!c.proxy.telemetry_enabled);
        assert_eq!(c.proxy.evp_max_payload_size, 5 << 20);
        let described = c.describe();
        assert!(
            described.contains("otlp_config.receiver.protocols.grpc.endpoint") && described.contains("localhost:4317"),
            "{described}"
        );
    }
}
