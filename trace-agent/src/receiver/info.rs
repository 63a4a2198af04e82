//! The `/info` discovery document (spec section 9), built once at start; its SHA-256 is the
//! `Datadog-Agent-State` header of every response.

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::AgentConfig;
use crate::identity::AGENT_VERSION;

/// Routes listed in `/info` `endpoints` whatever the configuration.
pub const ENDPOINTS: &[&str] = &[
    "/v0.3/traces",
    "/v0.3/services",
    "/v0.4/traces",
    "/v0.4/services",
    "/v0.5/traces",
    "/v0.7/traces",
    "/v0.6/stats",
];

/// The EVP proxy routes, listed only when they forward (an API key, not disabled).
pub const EVP_ENDPOINTS: &[&str] = &["/evp_proxy/v1/", "/evp_proxy/v2/", "/evp_proxy/v3/", "/evp_proxy/v4/"];
/// The telemetry proxy route, listed only when it forwards.
pub const TELEMETRY_ENDPOINT: &str = "/telemetry/proxy/";

/// The routes `/info` lists for `config`: `/v0.7/config` never (no Remote Config client), the
/// proxies only when they can deliver (so tracers fall back instead of losing data).
pub fn endpoints(config: &AgentConfig) -> Vec<&'static str> {
    let mut out = ENDPOINTS.to_vec();
    let keyed = config.api_key.is_some();
    if keyed && config.proxy.telemetry_enabled {
        out.push(TELEMETRY_ENDPOINT);
    }
    if keyed && config.proxy.evp_enabled {
        out.extend_from_slice(EVP_ENDPOINTS);
    }
    out
}

/// The serialized `/info` body and its hash.
#[derive(Debug, Clone)]
pub struct InfoDoc {
    /// Exact body bytes served.
    pub body: Bytes,
    /// Lower-case hex SHA-256 of `body`.
    pub state: String,
}

impl InfoDoc {
    /// Builds the document for `config`.
    pub fn new(config: &AgentConfig) -> Self {
        let o = &config.obfuscation;
        let doc = json!({
            "version": AGENT_VERSION,
            "git_commit": concat!("trace-agent-rs-", env!("CARGO_PKG_VERSION")),
            "endpoints": endpoints(config),
            "feature_flags": config.features,
            "client_drop_p0s": true,
            "span_meta_structs": true,
            "long_running_spans": true,
            "span_events": false,
            "evp_proxy_allowed_headers": super::proxy::EVP_ALLOWED_HEADERS,
            "config": {
                "default_env": config.default_env,
                "target_tps": config.max_traces_per_second,
                "max_eps": 200,
                "receiver_port": config.receiver_port,
                "receiver_socket": config.receiver_socket.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "connection_limit": config.connection_limit,
                "receiver_timeout": config.receiver_timeout.as_secs(),
                "max_request_bytes": config.max_payload_size,
                "statsd_port": 8125,
                "max_memory": config.max_memory,
                "max_cpu": config.max_cpu_percent / 100.0,
                "analyzed_spans_by_service": {},
                "obfuscation": {
                    "elastic_search": true,
                    "mongo": true,
                    "sql_exec_plan": false,
                    "sql_exec_plan_normalize": false,
                    "http": {"remove_query_string": o.http_remove_query_string, "remove_path_digits": o.http_remove_paths_with_digits},
                    "remove_stack_traces": o.remove_stack_traces,
                    "redis": {"Enabled": o.redis_enabled, "RemoveAllArgs": o.redis_remove_all_args},
                    "memcached": {"Enabled": o.memcached_enabled, "KeepCommand": o.memcached_keep_command},
                    "credit_cards": {"Enabled": o.credit_cards_enabled, "Luhn": o.credit_cards_luhn},
                },
            },
            "peer_tags": if config.stats.peer_tags_aggregation { json!(config.stats.peer_tag_keys()) } else { serde_json::Value::Null },
            "span_kinds_stats_computed": if config.stats.compute_stats_by_span_kind { json!(["server", "consumer", "client", "producer"]) } else { json!([]) },
            "obfuscation_version": 1,
            "filter_tags": {"require": config.filter_tags_require, "reject": config.filter_tags_reject},
            "filter_tags_regex": {"require": config.filter_tags_regex_require, "reject": config.filter_tags_regex_reject},
            "ignore_resources": config.ignore_resources,
        });
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        if doc.serialize(&mut ser).is_err() {
            out = doc.to_string().into_bytes();
        }
        let state = hex(&Sha256::digest(&out));
        Self {
            body: Bytes::from(out),
            state,
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
