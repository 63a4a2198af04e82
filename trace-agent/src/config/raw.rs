//! `datadog.yaml` as written: every key optional, types checked by serde (errors carry the key
//! path and line), unknown keys reported separately as warnings.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Top level of `datadog.yaml` (only the keys the trace agent reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawFile {
    pub(crate) api_key: Option<String>,
    pub(crate) site: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) env: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) bind_host: Option<String>,
    pub(crate) apm_config: Option<RawApm>,
    pub(crate) otlp_config: Option<super::ingest::RawOtlpConfig>,
}

/// `apm_config:`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawApm {
    pub(crate) enabled: Option<bool>,
    pub(crate) env: Option<String>,
    pub(crate) receiver_port: Option<u16>,
    pub(crate) receiver_socket: Option<String>,
    pub(crate) apm_non_local_traffic: Option<bool>,
    pub(crate) receiver_timeout: Option<u64>,
    pub(crate) max_payload_size: Option<u64>,
    pub(crate) decoders: Option<usize>,
    pub(crate) decoder_timeout: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) connection_limit: Option<usize>,
    pub(crate) max_memory: Option<f64>,
    pub(crate) max_cpu_percent: Option<f64>,
    pub(crate) max_spans_per_payload: Option<usize>,
    pub(crate) max_decoded_ratio: Option<usize>,
    pub(crate) receiver_max_buffered_bytes: Option<u64>,
    pub(crate) pipeline_max_bytes: Option<u64>,
    pub(crate) extra_sample_rate: Option<f64>,
    pub(crate) max_traces_per_second: Option<f64>,
    pub(crate) target_traces_per_second: Option<f64>,
    pub(crate) errors_per_second: Option<f64>,
    pub(crate) enable_rare_sampler: Option<bool>,
    pub(crate) rare_sampler: Option<RawRareSampler>,
    pub(crate) probabilistic_sampler: Option<RawProbabilistic>,
    pub(crate) max_catalog_entries: Option<usize>,
    pub(crate) error_tracking_standalone: Option<RawEnabled>,
    pub(crate) ignore_resources: Option<Vec<String>>,
    pub(crate) filter_tags: Option<RawRequireReject>,
    pub(crate) filter_tags_regex: Option<RawRequireReject>,
    pub(crate) replace_tags: Option<Vec<RawReplaceTag>>,
    pub(crate) global_tags: Option<BTreeMap<String, String>>,
    pub(crate) features: Option<Vec<String>>,
    pub(crate) obfuscation: Option<RawObfuscation>,
    pub(crate) local: Option<RawLocal>,
    pub(crate) compute_stats_by_span_kind: Option<bool>,
    pub(crate) peer_tags_aggregation: Option<bool>,
    pub(crate) peer_tags: Option<Vec<String>>,
    pub(crate) bucket_size_seconds: Option<u64>,
    pub(crate) stats_max_groups_per_bucket: Option<usize>,
    pub(crate) evp_proxy_config: Option<super::ingest::RawEvpProxy>,
    pub(crate) telemetry: Option<super::ingest::RawTelemetry>,
    #[serde(flatten)]
    pub(crate) upstream: super::upstream::RawUpstream,
}

/// `apm_config.rare_sampler`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawRareSampler {
    pub(crate) tps: Option<f64>,
    pub(crate) cooldown: Option<RawDuration>,
    pub(crate) cardinality: Option<usize>,
}

/// A duration: a Go duration string (`5m`, `90s`, `1h30m`) or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDuration {
    Seconds(f64),
    Text(String),
}

/// `apm_config.probabilistic_sampler`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawProbabilistic {
    pub(crate) enabled: Option<bool>,
    pub(crate) sampling_percentage: Option<f32>,
    pub(crate) hash_seed: Option<u32>,
}

/// `apm_config.local` (local mode: embedded store + web view).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawLocal {
    /// `auto`, `true` or `false`.
    pub(crate) enabled: Option<RawScalar>,
    pub(crate) data_dir: Option<String>,
    /// Seconds, or `90m`, `24h`, `7d`.
    pub(crate) retention: Option<RawScalar>,
    pub(crate) max_size_mb: Option<u64>,
    pub(crate) web_port: Option<u16>,
    /// Monitors of local mode (checked in `local::monitor::config`).
    pub(crate) monitors: Option<Vec<crate::local::monitor::config::RawMonitor>>,
    /// `{name: url}` notified by `@webhook-NAME` in monitor messages.
    pub(crate) webhooks: Option<BTreeMap<String, String>>,
    pub(crate) downtimes: Option<Vec<crate::local::monitor::config::RawDowntime>>,
    /// Seconds, or `5s`, `1m`.
    pub(crate) monitor_interval: Option<RawScalar>,
}

/// A YAML scalar read as text (`true`, `auto`, `3600`, `24h` all fit).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawScalar {
    Bool(bool),
    Int(u64),
    Text(String),
}

impl RawScalar {
    pub(crate) fn text(self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(n) => n.to_string(),
            Self::Text(s) => s,
        }
    }
}

/// `{require: [], reject: []}`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct RawRequireReject {
    pub(crate) require: Vec<String>,
    pub(crate) reject: Vec<String>,
}

/// One `replace_tags` entry.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct RawReplaceTag {
    /// `*`, `resource.name` or a tag key.
    pub name: String,
    /// Regex.
    pub pattern: String,
    /// Replacement.
    #[serde(default)]
    pub repl: String,
}

/// `apm_config.obfuscation`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawObfuscation {
    pub(crate) http: Option<RawHttp>,
    pub(crate) redis: Option<RawRedis>,
    pub(crate) memcached: Option<RawMemcached>,
    pub(crate) credit_cards: Option<RawCreditCards>,
    pub(crate) remove_stack_traces: Option<bool>,
    pub(crate) mongodb: Option<RawEnabled>,
    pub(crate) elasticsearch: Option<RawEnabled>,
    pub(crate) opensearch: Option<RawEnabled>,
    pub(crate) cache: Option<RawCache>,
}

/// `apm_config.obfuscation.cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawCache {
    pub(crate) enabled: Option<bool>,
    pub(crate) max_size: Option<usize>,
}

/// `{enabled: bool}` sections.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawEnabled {
    pub(crate) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawHttp {
    pub(crate) remove_query_string: Option<bool>,
    pub(crate) remove_paths_with_digits: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawRedis {
    pub(crate) enabled: Option<bool>,
    pub(crate) remove_all_args: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawMemcached {
    pub(crate) enabled: Option<bool>,
    pub(crate) keep_command: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawCreditCards {
    pub(crate) enabled: Option<bool>,
    pub(crate) luhn: Option<bool>,
    pub(crate) keep_values: Option<Vec<String>>,
}

/// Every key path this agent understands; anything else in the file is warned about.
pub(crate) const KNOWN_KEYS: &[&str] = &[
    "api_key",
    "site",
    "hostname",
    "env",
    "tags",
    "bind_host",
    "apm_config",
    "apm_config.enabled",
    "apm_config.env",
    "apm_config.receiver_port",
    "apm_config.receiver_socket",
    "apm_config.apm_non_local_traffic",
    "apm_config.receiver_timeout",
    "apm_config.max_payload_size",
    "apm_config.decoders",
    "apm_config.decoder_timeout",
    "apm_config.max_connections",
    "apm_config.connection_limit",
    "apm_config.max_memory",
    "apm_config.max_cpu_percent",
    "apm_config.max_spans_per_payload",
    "apm_config.max_decoded_ratio",
    "apm_config.receiver_max_buffered_bytes",
    "apm_config.pipeline_max_bytes",
    "apm_config.extra_sample_rate",
    "apm_config.max_traces_per_second",
    "apm_config.target_traces_per_second",
    "apm_config.errors_per_second",
    "apm_config.enable_rare_sampler",
    "apm_config.rare_sampler",
    "apm_config.rare_sampler.tps",
    "apm_config.rare_sampler.cooldown",
    "apm_config.rare_sampler.cardinality",
    "apm_config.probabilistic_sampler",
    "apm_config.probabilistic_sampler.enabled",
    "apm_config.probabilistic_sampler.sampling_percentage",
    "apm_config.probabilistic_sampler.hash_seed",
    "apm_config.max_catalog_entries",
    "apm_config.error_tracking_standalone",
    "apm_config.error_tracking_standalone.enabled",
    "apm_config.ignore_resources",
    "apm_config.filter_tags",
    "apm_config.filter_tags.require",
    "apm_config.filter_tags.reject",
    "apm_config.filter_tags_regex",
    "apm_config.filter_tags_regex.require",
    "apm_config.filter_tags_regex.reject",
    "apm_config.replace_tags",
    "apm_config.global_tags",
    "apm_config.features",
    "apm_config.obfuscation",
    "apm_config.obfuscation.http",
    "apm_config.obfuscation.http.remove_query_string",
    "apm_config.obfuscation.http.remove_paths_with_digits",
    "apm_config.obfuscation.redis",
    "apm_config.obfuscation.redis.enabled",
    "apm_config.obfuscation.redis.remove_all_args",
    "apm_config.obfuscation.memcached",
    "apm_config.obfuscation.memcached.enabled",
    "apm_config.obfuscation.memcached.keep_command",
    "apm_config.obfuscation.credit_cards",
    "apm_config.obfuscation.credit_cards.enabled",
    "apm_config.obfuscation.credit_cards.luhn",
    "apm_config.obfuscation.credit_cards.keep_values",
    "apm_config.obfuscation.remove_stack_traces",
    "apm_config.obfuscation.mongodb",
    "apm_config.obfuscation.mongodb.enabled",
    "apm_config.obfuscation.elasticsearch",
    "apm_config.obfuscation.elasticsearch.enabled",
    "apm_config.obfuscation.opensearch",
    "apm_config.obfuscation.opensearch.enabled",
    "apm_config.obfuscation.cache",
    "apm_config.obfuscation.cache.enabled",
    "apm_config.obfuscation.cache.max_size",
    "apm_config.local",
    "apm_config.local.enabled",
    "apm_config.local.data_dir",
    "apm_config.local.retention",
    "apm_config.local.max_size_mb",
    "apm_config.local.web_port",
    "apm_config.local.monitors",
    "apm_config.local.webhooks",
    "apm_config.local.downtimes",
    "apm_config.local.monitor_interval",
    "apm_config.compute_stats_by_span_kind",
    "apm_config.peer_tags_aggregation",
    "apm_config.peer_tags",
    "apm_config.bucket_size_seconds",
    "apm_config.stats_max_groups_per_bucket",
];

/// Key paths in `value` not in [`KNOWN_KEYS`] (maps are walked only below known maps).
pub(crate) fn unknown_keys(value: &serde_norway::Value) -> Vec<String> {
    fn walk(prefix: &str, v: &serde_norway::Value, out: &mut Vec<String>) {
        let serde_norway::Value::Mapping(m) = v else {
            return;
        };
        for (k, child) in m {
            let key = match k {
                serde_norway::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let path = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            if path == "apm_config.global_tags"
                || path == "apm_config.local.webhooks"
                || super::upstream::FREE_FORM_MAPS.contains(&path.as_str())
                || super::ingest::FREE_FORM_MAPS.contains(&path.as_str())
            {
                continue;
            }
            if KNOWN_KEYS.contains(&path.as_str())
                || super::upstream::KNOWN_KEYS.contains(&path.as_str())
                || super::ingest::KNOWN_KEYS.contains(&path.as_str())
            {
                walk(&path, child, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}
