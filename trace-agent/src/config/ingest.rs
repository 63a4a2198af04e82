//! Keys of the OTLP receivers (`otlp_config.receiver.protocols.*`, the Datadog agent's names)
//! and of the proxy routes (`apm_config.evp_proxy_config.*`, `apm_config.telemetry.*`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::key::{Key, Kind, Secrecy, Value};
use super::load::Scratch;
use super::{AgentConfig, Secret};

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

/// An OTLP receiver's endpoint key; empty turns it off even when its section is present.
macro_rules! otlp_endpoint {
    ($proto:literal, $upper:literal, $field:ident, $set:ident) => {
        Key::new(
            concat!("otlp_config.receiver.protocols.", $proto, ".endpoint"),
            Kind::Text,
            |l, v| {
                let v = v.text()?;
                if !v.is_empty() {
                    l.config.otlp_receiver.$field = Some(endpoint(&v)?);
                }
                l.scratch.$set = true;
                Ok(())
            },
        )
        .env(&[concat!("DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_", $upper, "_ENDPOINT")])
        .example("127.0.0.1:14317")
        .show(|c| c.otlp_receiver.$field.clone().unwrap_or_else(|| "(off)".to_owned()))
    };
}

/// The OTLP receivers' and the proxies' keys.
pub(crate) static KEYS: &[Key] = &[
    otlp_endpoint!("grpc", "GRPC", grpc_endpoint, grpc_set),
    otlp_endpoint!("http", "HTTP", http_endpoint, http_set),
    Key::new(
        "otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib",
        Kind::U64,
        |l, v| {
            let mib: u64 = v.int()?;
            if !(1..=1024).contains(&mib) {
                return Err(format!("{mib} is not within 1..=1024"));
            }
            l.config.otlp_receiver.grpc_max_recv_msg_size = usize::try_from(mib << 20).unwrap_or(usize::MAX);
            Ok(())
        },
    )
    .env(&["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_MAX_RECV_MSG_SIZE_MIB"])
    .show(|c| (c.otlp_receiver.grpc_max_recv_msg_size >> 20).to_string()),
    Key::new("apm_config.evp_proxy_config.enabled", Kind::Bool, |l, v| {
        l.config.proxy.evp_enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_EVP_PROXY_CONFIG_ENABLED"])
    .example("false")
    .show(|c| c.proxy.evp_enabled.to_string()),
    Key::new("apm_config.evp_proxy_config.dd_url", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.config.proxy.evp_dd_url = Some(url_or_host(&v)?);
        }
        Ok(())
    })
    .env(&["DD_APM_EVP_PROXY_CONFIG_DD_URL"])
    .example("datadoghq.eu")
    .show(|c| c.proxy.evp_dd_url.clone().unwrap_or_else(|| "(site)".to_owned())),
    Key::new("apm_config.evp_proxy_config.api_key", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.config.proxy.evp_api_key = Some(Secret::new(v));
        }
        Ok(())
    })
    .env(&["DD_APM_EVP_PROXY_CONFIG_API_KEY"])
    .secret(Secrecy::Masked)
    .show(|c| {
        c.proxy
            .evp_api_key
            .as_ref()
            .map_or_else(|| "(api_key)".to_owned(), Secret::masked)
    }),
    Key::new(
        "apm_config.evp_proxy_config.additional_endpoints",
        Kind::ListMap,
        |l, v| {
            l.config.proxy.evp_additional_endpoints =
                super::upstream::endpoint_keys(v.list_map()?, url_or_host, false)?;
            Ok(())
        },
    )
    .env(&["DD_APM_EVP_PROXY_CONFIG_ADDITIONAL_ENDPOINTS"])
    .parse_env(|v| {
        serde_json::from_str(v)
            .map(Value::ListMap)
            .map_err(|e| format!("not a JSON map of host to a list of API keys: {e}"))
    })
    .secret(Secrecy::Hidden)
    .show(|c| super::upstream::masked_map(&c.proxy.evp_additional_endpoints)),
    Key::new("apm_config.evp_proxy_config.max_payload_size", Kind::U64, |l, v| {
        let v: u64 = v.int()?;
        if v == 0 {
            return Err("must be at least 1".to_owned());
        }
        l.config.proxy.evp_max_payload_size = v;
        Ok(())
    })
    .env(&["DD_APM_EVP_PROXY_CONFIG_MAX_PAYLOAD_SIZE"])
    .show(|c| c.proxy.evp_max_payload_size.to_string()),
    Key::new("apm_config.evp_proxy_config.receiver_timeout", Kind::U64, |l, v| {
        let v: u64 = v.int()?;
        if v == 0 {
            return Err("must be at least 1 (seconds)".to_owned());
        }
        l.config.proxy.evp_timeout = Duration::from_secs(v);
        Ok(())
    })
    .env(&["DD_APM_EVP_PROXY_CONFIG_RECEIVER_TIMEOUT"])
    .show(|c| c.proxy.evp_timeout.as_secs().to_string()),
    Key::new("apm_config.telemetry.enabled", Kind::Bool, |l, v| {
        l.config.proxy.telemetry_enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_TELEMETRY_ENABLED"])
    .example("false")
    .show(|c| c.proxy.telemetry_enabled.to_string()),
    Key::new("apm_config.telemetry.dd_url", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            let v = url_or_host(&v)?;
            if !v.starts_with("http") {
                return Err(format!("{v:?} is not an http(s):// URL"));
            }
            l.config.proxy.telemetry_dd_url = Some(v);
        }
        Ok(())
    })
    .env(&["DD_APM_TELEMETRY_DD_URL"])
    .example("http://127.0.0.1:9")
    .show(|c| {
        c.proxy
            .telemetry_dd_url
            .clone()
            .unwrap_or_else(|| "(instrumentation-telemetry-intake.<site>)".to_owned())
    }),
];

/// An OTLP receiver section present without an endpoint listens on its default endpoint.
pub(super) fn finish(c: &mut AgentConfig, s: &Scratch, sections: &BTreeSet<String>) {
    let present = |proto: &str| sections.contains(&format!("otlp_config.receiver.protocols.{proto}"));
    if !s.grpc_set && present("grpc") {
        c.otlp_receiver.grpc_endpoint = Some(DEFAULT_OTLP_GRPC_ENDPOINT.to_owned());
    }
    if !s.http_set && present("http") {
        c.otlp_receiver.http_endpoint = Some(DEFAULT_OTLP_HTTP_ENDPOINT.to_owned());
    }
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
