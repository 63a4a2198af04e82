//! Building [`AgentConfig`] from the file, the environment and the defaults.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::raw::{RawDuration, RawFile, RawProbabilistic, RawRareSampler, RawReplaceTag, unknown_keys};
use super::{AgentConfig, Origin, Secret, mask};
use crate::env::{EnvSource, parse_bool, parse_csv, parse_list};
use crate::process::normalize::normalize_tag_value;

/// A configuration that cannot be used; the agent does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML or a key has the wrong type (message names key and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// serde's message: key path, problem, line and column.
        message: String,
    },
    /// An environment variable has an unusable value.
    #[error("environment variable {var}={value}: {message}")]
    Env {
        /// Variable name.
        var: String,
        /// Value (masked for secrets).
        value: String,
        /// Problem.
        message: String,
    },
    /// A value is well-typed but invalid (bad regex, bad address).
    #[error("{key}: {message}")]
    Invalid {
        /// Key path.
        key: String,
        /// Problem.
        message: String,
    },
}

pub(super) struct Ctx<'a> {
    pub(super) env: &'a dyn EnvSource,
    pub(super) file: Option<PathBuf>,
    pub(super) config: AgentConfig,
}

impl Ctx<'_> {
    /// Env (first set variable of `vars`) over file over nothing; records the origin.
    pub(super) fn pick<T>(
        &mut self,
        key: &str,
        vars: &[&str],
        file: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        for var in vars {
            // An empty variable counts as unset.
            if let Some(v) = self.env.get(var).filter(|v| !v.trim().is_empty()) {
                let parsed = parse(&v).map_err(|message| ConfigError::Env {
                    var: (*var).to_owned(),
                    value: shown_env_value(var, &v),
                    message,
                })?;
                self.config
                    .origins
                    .insert(key.to_owned(), Origin::Env((*var).to_owned()));
                return Ok(Some(parsed));
            }
        }
        if let (Some(value), Some(path)) = (file, &self.file) {
            self.config.origins.insert(key.to_owned(), Origin::File(path.clone()));
            return Ok(Some(value));
        }
        Ok(None)
    }
}

/// How an environment variable's value appears in an error: API keys masked, variables that
/// may hold keys or credentials (endpoint maps, header lists) not shown at all.
fn shown_env_value(var: &str, v: &str) -> String {
    if var.contains("KEY") {
        mask(v)
    } else if ["ENDPOINTS", "HEADERS", "TOKEN", "SECRET", "PASSWORD"]
        .iter()
        .any(|w| var.contains(w))
    {
        format!("<{} characters, not shown: may hold API keys>", v.chars().count())
    } else {
        v.to_owned()
    }
}

impl ConfigError {
    /// The same error with every occurrence of each of `secrets` masked (all but the last 5
    /// characters), in every text it carries.
    fn scrub(self, secrets: &[String]) -> Self {
        let clean = |s: String| {
            secrets.iter().fold(s, |acc, secret| {
                if acc.contains(secret.as_str()) {
                    acc.replace(secret.as_str(), &mask(secret))
                } else {
                    acc
                }
            })
        };
        match self {
            Self::Read { path, source } => Self::Read { path, source },
            Self::Parse { path, message } => Self::Parse {
                path,
                message: clean(message),
            },
            Self::Env { var, value, message } => Self::Env {
                var,
                value: clean(value),
                message: clean(message),
            },
            Self::Invalid { key, message } => Self::Invalid {
                key: clean(key),
                message: clean(message),
            },
        }
    }
}

/// Shortest text treated as a secret when scrubbing errors (shorter values would mask
/// ordinary words).
const MIN_SECRET_LEN: usize = 6;

/// Every value that is or may be a secret, from the environment and from the file's YAML tree:
/// `api_key`/`DD_API_KEY`, everything under `additional_endpoints` that is not a URL (the API
/// keys, and keys typed where a URL belongs), OTLP export header values, and values of keys
/// named like a credential.
fn secrets_of(path: Option<&Path>, env: &dyn EnvSource) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &str| {
        let s = s.trim();
        if s.chars().count() >= MIN_SECRET_LEN && !out.iter().any(|o: &String| o == s) {
            out.push(s.to_owned());
        }
    };
    if let Some(k) = env.get("DD_API_KEY") {
        add(&k);
    }
    if let Some(v) = env.get("DD_APM_ADDITIONAL_ENDPOINTS") {
        match serde_json::from_str::<serde_json::Value>(&v) {
            Ok(json) => json_strings(&json, &mut |s| {
                if !looks_like_url(s) {
                    add(s);
                }
            }),
            // Unparsable: any word in it may be a key.
            Err(_) => v
                .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                .for_each(&mut add),
        }
    }
    if let Some(v) = env.get("DD_APM_OTLP_EXPORT_HEADERS") {
        for item in v.split(',') {
            add(item.split_once('=').map_or(item, |(_, v)| v));
        }
    }
    let text = path.and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(value) = text.and_then(|t| serde_norway::from_str::<serde_norway::Value>(&t).ok()) {
        yaml_secrets(&value, false, &mut add);
    }
    // Longest first, so a key containing another is masked whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn looks_like_url(s: &str) -> bool {
    let s = s.trim();
    s.starts_with("http://") || s.starts_with("https://")
}

fn json_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, f)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            f(k);
            json_strings(x, f);
        }),
        _ => {}
    }
}

/// Walks the YAML tree; `secret` is true below a key that holds secrets.
fn yaml_secrets(v: &serde_norway::Value, secret: bool, add: &mut dyn FnMut(&str)) {
    use serde_norway::Value as Y;
    match v {
        Y::String(s) if secret && !looks_like_url(s) => add(s),
        Y::Number(n) if secret => add(&n.to_string()),
        Y::Sequence(items) => items.iter().for_each(|x| yaml_secrets(x, secret, add)),
        Y::Mapping(m) => {
            for (k, x) in m {
                let name = k.as_str().unwrap_or("");
                if secret && !looks_like_url(name) {
                    add(name);
                }
                let lower = name.to_ascii_lowercase();
                let holds = secret
                    || [
                        "api_key",
                        "additional_endpoints",
                        "headers",
                        "token",
                        "secret",
                        "password",
                    ]
                    .iter()
                    .any(|w| lower.contains(w));
                yaml_secrets(x, holds, add);
            }
        }
        Y::Tagged(t) => yaml_secrets(&t.value, secret, add),
        _ => {}
    }
}

pub(super) fn num<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| format!("not a valid number: {e}"))
}

pub(super) fn boolean(v: &str) -> Result<bool, String> {
    parse_bool(v).ok_or_else(|| "not a boolean (true/false/1/0)".to_owned())
}

pub(super) fn string(v: &str) -> Result<String, String> {
    Ok(v.trim().to_owned())
}

fn list(v: &str) -> Result<Vec<String>, String> {
    parse_list(v)
}

fn csv(v: &str) -> Result<Vec<String>, String> {
    Ok(parse_csv(v))
}

/// `apm_config.local.*` and its `DD_APM_LOCAL_*` variables.
fn load_local(c: &mut Ctx<'_>, raw: super::raw::RawLocal) -> Result<(), ConfigError> {
    use crate::local::{LocalMode, parse_duration};
    let mut local = crate::local::LocalConfig::with_env_defaults(c.env);
    let enabled = raw.enabled.map(super::raw::RawScalar::text);
    if let Some(v) = c.pick("apm_config.local.enabled", &["DD_APM_LOCAL_ENABLED"], enabled, string)? {
        local.mode = LocalMode::parse(&v).map_err(|message| ConfigError::Invalid {
            key: "apm_config.local.enabled".to_owned(),
            message: format!("{v:?}: {message}"),
        })?;
    }
    if let Some(v) = c.pick(
        "apm_config.local.data_dir",
        &["DD_APM_LOCAL_DATA_DIR"],
        raw.data_dir,
        string,
    )? && !v.is_empty()
    {
        local.data_dir = PathBuf::from(v);
    }
    let retention = raw.retention.map(super::raw::RawScalar::text);
    if let Some(v) = c.pick(
        "apm_config.local.retention",
        &["DD_APM_LOCAL_RETENTION"],
        retention,
        string,
    )? {
        local.retention = parse_duration(&v).map_err(|message| ConfigError::Invalid {
            key: "apm_config.local.retention".to_owned(),
            message,
        })?;
    }
    if let Some(v) = c.pick(
        "apm_config.local.max_size_mb",
        &["DD_APM_LOCAL_MAX_SIZE_MB"],
        raw.max_size_mb,
        num::<u64>,
    )? {
        if v == 0 {
            return Err(ConfigError::Invalid {
                key: "apm_config.local.max_size_mb".to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        local.max_size_bytes = v.saturating_mul(1_048_576);
    }
    if let Some(v) = c.pick(
        "apm_config.local.web_port",
        &["DD_APM_LOCAL_WEB_PORT"],
        raw.web_port,
        num,
    )? {
        local.web_port = v;
    }
    let interval = raw
        .monitor_interval
        .map(|v| {
            parse_duration(&v.text()).map_err(|message| ConfigError::Invalid {
                key: "apm_config.local.monitor_interval".to_owned(),
                message,
            })
        })
        .transpose()?;
    local.monitors = crate::local::monitor::MonitorConfig::from_raw(
        raw.monitors.unwrap_or_default(),
        raw.webhooks.unwrap_or_default(),
        raw.downtimes.unwrap_or_default(),
        interval,
    )
    .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
    c.config.local = local;
    Ok(())
}

/// Loads the configuration: `path` (if any) and `env`, over the defaults.
///
/// # Errors
/// A [`ConfigError`] naming the file line, variable or key that is wrong; API keys and other
/// secrets found in the file or the environment are masked wherever they appear in it.
pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<AgentConfig, ConfigError> {
    load_unscrubbed(path, env).map_err(|e| e.scrub(&secrets_of(path, env)))
}

fn load_unscrubbed(path: Option<&Path>, env: &dyn EnvSource) -> Result<AgentConfig, ConfigError> {
    let mut warnings = Vec::new();
    let raw = match path {
        None => RawFile::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            let parse_err = |e: serde_norway::Error| ConfigError::Parse {
                path: p.to_owned(),
                message: e.to_string(),
            };
            if text.trim().is_empty() {
                RawFile::default()
            } else {
                let value: serde_norway::Value = serde_norway::from_str(&text).map_err(parse_err)?;
                for key in unknown_keys(&value) {
                    warnings.push(format!("{}: unknown key '{key}' ignored", p.display()));
                }
                serde_norway::from_str::<Option<RawFile>>(&text)
                    .map_err(parse_err)?
                    .unwrap_or_default()
            }
        }
    };
    let mut c = Ctx {
        env,
        file: path.map(Path::to_owned),
        config: AgentConfig::default(),
    };
    let apm = raw.apm_config.unwrap_or_default();
    let obf = apm.obfuscation.unwrap_or_default();
    let mut apm_sampler = SamplerRaw {
        errors_per_second: apm.errors_per_second,
        enable_rare_sampler: apm.enable_rare_sampler,
        rare: apm.rare_sampler.unwrap_or_default(),
        probabilistic: apm.probabilistic_sampler.unwrap_or_default(),
        max_catalog_entries: apm.max_catalog_entries,
        ets: apm.error_tracking_standalone.and_then(|e| e.enabled),
        deprecated_tps: apm.target_traces_per_second.is_none() && apm.max_traces_per_second.is_some(),
    };

    if let Some(k) = c.pick("api_key", &["DD_API_KEY"], raw.api_key, string)? {
        c.config.api_key = Some(Secret::new(k));
    }
    if let Some(v) = c.pick("site", &["DD_SITE"], raw.site, string)? {
        c.config.site = v;
    }
    if let Some(v) = c.pick("hostname", &["DD_HOSTNAME"], raw.hostname, string)? {
        c.config.hostname = v;
    }
    if let Some(v) = c.pick("tags", &["DD_TAGS"], raw.tags, |v| {
        Ok(v.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    })? {
        c.config.tags = v;
    }
    let top_env = c.pick("env", &["DD_ENV"], raw.env, string)?;
    let apm_env = c.pick("apm_config.env", &["DD_APM_ENV"], apm.env, string)?;
    let tag_env = c
        .config
        .tags
        .iter()
        .find_map(|t| t.strip_prefix("env:").map(str::to_owned));
    if let Some(env) = apm_env.or(top_env).or(tag_env).filter(|e| !e.is_empty()) {
        let normalized = normalize_tag_value(&env).into_owned();
        c.config.default_env = if normalized.is_empty() {
            "none".to_owned()
        } else {
            normalized
        };
    }
    if let Some(v) = c.pick("apm_config.enabled", &["DD_APM_ENABLED"], apm.enabled, boolean)? {
        c.config.enabled = v;
    }
    let non_local = c.pick(
        "apm_config.apm_non_local_traffic",
        &["DD_APM_NON_LOCAL_TRAFFIC"],
        apm.apm_non_local_traffic,
        boolean,
    )?;
    let bind_host = c.pick("bind_host", &["DD_BIND_HOST"], raw.bind_host, string)?;
    if non_local == Some(true) {
        c.config.receiver_host = "0.0.0.0".to_owned();
        c.config.origins.insert("bind_host".to_owned(), Origin::Default);
    } else if let Some(h) = bind_host {
        c.config.receiver_host = h;
    }
    if let Some(v) = c.pick(
        "apm_config.receiver_port",
        &["DD_APM_RECEIVER_PORT", "DD_RECEIVER_PORT"],
        apm.receiver_port,
        num,
    )? {
        c.config.receiver_port = v;
    }
    match c.pick(
        "apm_config.receiver_socket",
        &["DD_APM_RECEIVER_SOCKET"],
        apm.receiver_socket,
        string,
    )? {
        Some(s) if !s.is_empty() => c.config.receiver_socket = Some(PathBuf::from(s)),
        Some(_) => {}
        None => {
            let default = Path::new(super::DEFAULT_RECEIVER_SOCKET);
            if default.parent().is_some_and(Path::is_dir) {
                c.config.receiver_socket = Some(default.to_owned());
            }
        }
    }
    if let Some(v) = c.pick(
        "apm_config.receiver_timeout",
        &["DD_APM_RECEIVER_TIMEOUT"],
        apm.receiver_timeout,
        num::<u64>,
    )? && v > 0
    {
        c.config.receiver_timeout = Duration::from_secs(v);
    }
    if let Some(v) = c.pick(
        "apm_config.max_payload_size",
        &["DD_APM_MAX_PAYLOAD_SIZE"],
        apm.max_payload_size,
        num,
    )? && v > 0
    {
        c.config.max_payload_size = v;
    }
    if let Some(v) = c.pick("apm_config.decoders", &["DD_APM_DECODERS"], apm.decoders, num::<usize>)?
        && v > 0
    {
        c.config.decoders = v;
    }
    if let Some(v) = c.pick(
        "apm_config.decoder_timeout",
        &["DD_APM_DECODER_TIMEOUT"],
        apm.decoder_timeout,
        num::<u64>,
    )? && v > 0
    {
        c.config.decoder_timeout = Duration::from_millis(v);
    }
    if let Some(v) = c.pick(
        "apm_config.max_connections",
        &["DD_APM_MAX_CONNECTIONS"],
        apm.max_connections,
        num::<usize>,
    )? && v > 0
    {
        c.config.max_connections = v;
    }
    if let Some(v) = c.pick(
        "apm_config.connection_limit",
        &["DD_APM_CONNECTION_LIMIT", "DD_CONNECTION_LIMIT"],
        apm.connection_limit,
        num::<usize>,
    )? {
        c.config.connection_limit = v;
    }
    if let Some(v) = c.pick(
        "apm_config.max_memory",
        &["DD_APM_MAX_MEMORY"],
        apm.max_memory,
        num::<f64>,
    )? {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(
                "apm_config.max_memory",
                format!("{v} is not a number of bytes >= 0"),
            ));
        }
        c.config.max_memory = v as u64;
    }
    if let Some(v) = c.pick(
        "apm_config.max_cpu_percent",
        &["DD_APM_MAX_CPU_PERCENT"],
        apm.max_cpu_percent,
        num::<f64>,
    )? {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(
                "apm_config.max_cpu_percent",
                format!("{v} is not a percentage >= 0"),
            ));
        }
        c.config.max_cpu_percent = v;
    }
    if let Some(v) = c.pick(
        "apm_config.max_spans_per_payload",
        &["DD_APM_MAX_SPANS_PER_PAYLOAD"],
        apm.max_spans_per_payload,
        num::<usize>,
    )? {
        c.config.max_spans_per_payload = positive_key("apm_config.max_spans_per_payload", v)?;
    }
    if let Some(v) = c.pick(
        "apm_config.max_decoded_ratio",
        &["DD_APM_MAX_DECODED_RATIO"],
        apm.max_decoded_ratio,
        num::<usize>,
    )? {
        c.config.max_decoded_ratio = positive_key("apm_config.max_decoded_ratio", v)?;
    }
    if let Some(v) = c.pick(
        "apm_config.receiver_max_buffered_bytes",
        &["DD_APM_RECEIVER_MAX_BUFFERED_BYTES"],
        apm.receiver_max_buffered_bytes,
        num::<u64>,
    )? {
        c.config.receiver_max_buffered_bytes = positive_bytes("apm_config.receiver_max_buffered_bytes", v)?;
    }
    if let Some(v) = c.pick(
        "apm_config.pipeline_max_bytes",
        &["DD_APM_PIPELINE_MAX_BYTES"],
        apm.pipeline_max_bytes,
        num::<u64>,
    )? {
        c.config.pipeline_max_bytes = positive_bytes("apm_config.pipeline_max_bytes", v)?;
    }
    if let Some(v) = c.pick("apm_config.extra_sample_rate", &[], apm.extra_sample_rate, num)? {
        c.config.extra_sample_rate = v;
    }
    let tps = apm.target_traces_per_second.or(apm.max_traces_per_second);
    if let Some(v) = c.pick(
        "apm_config.max_traces_per_second",
        &["DD_APM_TARGET_TPS", "DD_APM_MAX_TPS", "DD_MAX_TPS"],
        tps,
        num,
    )? {
        c.config.max_traces_per_second = v;
    }
    let sampler_warning = load_sampler_keys(&mut c, &mut apm_sampler)?;
    warnings.extend(sampler_warning);
    if let Some(v) = c.pick(
        "apm_config.ignore_resources",
        &["DD_APM_IGNORE_RESOURCES", "DD_IGNORE_RESOURCE"],
        apm.ignore_resources,
        csv,
    )? {
        c.config.ignore_resources = v;
    }
    let ft = apm.filter_tags.unwrap_or_default();
    let ftr = apm.filter_tags_regex.unwrap_or_default();
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    if let Some(v) = c.pick(
        "apm_config.filter_tags.require",
        &["DD_APM_FILTER_TAGS_REQUIRE"],
        some(ft.require),
        list,
    )? {
        c.config.filter_tags_require = v;
    }
    if let Some(v) = c.pick(
        "apm_config.filter_tags.reject",
        &["DD_APM_FILTER_TAGS_REJECT"],
        some(ft.reject),
        list,
    )? {
        c.config.filter_tags_reject = v;
    }
    if let Some(v) = c.pick(
        "apm_config.filter_tags_regex.require",
        &["DD_APM_FILTER_TAGS_REGEX_REQUIRE"],
        some(ftr.require),
        list,
    )? {
        c.config.filter_tags_regex_require = v;
    }
    if let Some(v) = c.pick(
        "apm_config.filter_tags_regex.reject",
        &["DD_APM_FILTER_TAGS_REGEX_REJECT"],
        some(ftr.reject),
        list,
    )? {
        c.config.filter_tags_regex_reject = v;
    }
    let json_rules = |v: &str| {
        serde_json::from_str::<Vec<RawReplaceTag>>(v)
            .map_err(|e| format!("not a JSON list of {{name, pattern, repl}}: {e}"))
    };
    if let Some(v) = c.pick(
        "apm_config.replace_tags",
        &["DD_APM_REPLACE_TAGS"],
        apm.replace_tags,
        json_rules,
    )? {
        c.config.replace_tags = v;
    }
    if let Some(v) = c.pick("apm_config.global_tags", &[], apm.global_tags, |_| Err(String::new()))? {
        c.config.global_tags = v;
    }
    if let Some(v) = c.pick("apm_config.features", &["DD_APM_FEATURES"], apm.features, |v| {
        Ok(v.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    })? {
        c.config.features = v;
    }
    let http = obf.http.unwrap_or_default();
    let redis = obf.redis.unwrap_or_default();
    let memcached = obf.memcached.unwrap_or_default();
    let cc = obf.credit_cards.unwrap_or_default();
    let o = &mut c.config.obfuscation.clone();
    let enabled = |section: Option<super::raw::RawEnabled>| section.and_then(|s| s.enabled);
    let (mongodb, elasticsearch, opensearch) = (
        enabled(obf.mongodb),
        enabled(obf.elasticsearch),
        enabled(obf.opensearch),
    );
    let bools: [(&str, &str, Option<bool>, &mut bool); 12] = [
        (
            "apm_config.obfuscation.http.remove_query_string",
            "DD_APM_OBFUSCATION_HTTP_REMOVE_QUERY_STRING",
            http.remove_query_string,
            &mut o.http_remove_query_string,
        ),
        (
            "apm_config.obfuscation.http.remove_paths_with_digits",
            "DD_APM_OBFUSCATION_HTTP_REMOVE_PATHS_WITH_DIGITS",
            http.remove_paths_with_digits,
            &mut o.http_remove_paths_with_digits,
        ),
        (
            "apm_config.obfuscation.redis.enabled",
            "DD_APM_OBFUSCATION_REDIS_ENABLED",
            redis.enabled,
            &mut o.redis_enabled,
        ),
        (
            "apm_config.obfuscation.redis.remove_all_args",
            "DD_APM_OBFUSCATION_REDIS_REMOVE_ALL_ARGS",
            redis.remove_all_args,
            &mut o.redis_remove_all_args,
        ),
        (
            "apm_config.obfuscation.memcached.enabled",
            "DD_APM_OBFUSCATION_MEMCACHED_ENABLED",
            memcached.enabled,
            &mut o.memcached_enabled,
        ),
        (
            "apm_config.obfuscation.memcached.keep_command",
            "DD_APM_OBFUSCATION_MEMCACHED_KEEP_COMMAND",
            memcached.keep_command,
            &mut o.memcached_keep_command,
        ),
        (
            "apm_config.obfuscation.credit_cards.enabled",
            "DD_APM_OBFUSCATION_CREDIT_CARDS_ENABLED",
            cc.enabled,
            &mut o.credit_cards_enabled,
        ),
        (
            "apm_config.obfuscation.credit_cards.luhn",
            "DD_APM_OBFUSCATION_CREDIT_CARDS_LUHN",
            cc.luhn,
            &mut o.credit_cards_luhn,
        ),
        (
            "apm_config.obfuscation.remove_stack_traces",
            "DD_APM_OBFUSCATION_REMOVE_STACK_TRACES",
            obf.remove_stack_traces,
            &mut o.remove_stack_traces,
        ),
        (
            "apm_config.obfuscation.mongodb.enabled",
            "DD_APM_OBFUSCATION_MONGODB_ENABLED",
            mongodb,
            &mut o.mongodb_enabled,
        ),
        (
            "apm_config.obfuscation.elasticsearch.enabled",
            "DD_APM_OBFUSCATION_ELASTICSEARCH_ENABLED",
            elasticsearch,
            &mut o.elasticsearch_enabled,
        ),
        (
            "apm_config.obfuscation.opensearch.enabled",
            "DD_APM_OBFUSCATION_OPENSEARCH_ENABLED",
            opensearch,
            &mut o.opensearch_enabled,
        ),
    ];
    for (key, var, file, slot) in bools {
        if let Some(v) = c.pick(key, &[var], file, boolean)? {
            *slot = v;
        }
    }
    if let Some(v) = c.pick(
        "apm_config.obfuscation.credit_cards.keep_values",
        &["DD_APM_OBFUSCATION_CREDIT_CARDS_KEEP_VALUES"],
        cc.keep_values,
        list,
    )? {
        o.credit_cards_keep_values = v;
    }
    c.config.obfuscation = o.clone();
    let cache = obf.cache.unwrap_or_default();
    if let Some(v) = c.pick(
        "apm_config.obfuscation.cache.enabled",
        &["DD_APM_OBFUSCATION_CACHE_ENABLED"],
        cache.enabled,
        boolean,
    )? {
        c.config.obfuscation_cache_enabled = v;
    }
    if let Some(v) = c.pick(
        "apm_config.obfuscation.cache.max_size",
        &["DD_APM_OBFUSCATION_CACHE_MAX_SIZE"],
        cache.max_size,
        num,
    )? {
        c.config.obfuscation_cache_max_size = v;
    }
    load_local(&mut c, apm.local.unwrap_or_default())?;
    super::upstream::load(&mut c, apm.upstream)?;
    super::ingest::load_otlp(&mut c, raw.otlp_config)?;
    super::ingest::load_proxy(&mut c, apm.evp_proxy_config, apm.telemetry)?;
    let stats = &mut c.config.stats.clone();
    if let Some(v) = c.pick(
        "apm_config.compute_stats_by_span_kind",
        &["DD_APM_COMPUTE_STATS_BY_SPAN_KIND"],
        apm.compute_stats_by_span_kind,
        boolean,
    )? {
        stats.compute_stats_by_span_kind = v;
    }
    if let Some(v) = c.pick(
        "apm_config.peer_tags_aggregation",
        &["DD_APM_PEER_TAGS_AGGREGATION"],
        apm.peer_tags_aggregation,
        boolean,
    )? {
        stats.peer_tags_aggregation = v;
    }
    let json_list =
        |v: &str| serde_json::from_str::<Vec<String>>(v).map_err(|e| format!("not a JSON list of strings: {e}"));
    if let Some(v) = c.pick("apm_config.peer_tags", &["DD_APM_PEER_TAGS"], apm.peer_tags, json_list)? {
        stats.peer_tags = v;
    }
    if let Some(v) = c.pick(
        "apm_config.bucket_size_seconds",
        &[],
        apm.bucket_size_seconds,
        num::<u64>,
    )? {
        if v == 0 {
            return Err(ConfigError::Invalid {
                key: "apm_config.bucket_size_seconds".to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        stats.bucket_size = Duration::from_secs(v);
    }
    if let Some(v) = c.pick(
        "apm_config.stats_max_groups_per_bucket",
        &["DD_APM_STATS_MAX_GROUPS_PER_BUCKET"],
        apm.stats_max_groups_per_bucket,
        num::<usize>,
    )? && v > 0
    {
        stats.max_groups_per_bucket = v;
    }
    let has = |f: &str| c.config.features.iter().any(|x| x == f);
    stats.container_id_dimension = has("enable_cid_stats") && !has("disable_cid_stats");
    c.config.stats = stats.clone();
    if c.config.replace_tags.iter().any(|r| r.name == "env") {
        warnings.push(
            "apm_config.replace_tags: a rule on \"env\" rewrites the env of every span and breaks \
             env-scoped views and sampling rates; prefer setting env in the tracer"
                .to_owned(),
        );
    }
    c.config.warnings = warnings;
    // Validate what can only fail later: regexes and the bind address.
    super::compile::process(&c.config)?;
    c.config.tcp_addr()?;
    Ok(c.config)
}

/// The sampler keys of the file, taken out of `apm_config` before it is consumed.
struct SamplerRaw {
    errors_per_second: Option<f64>,
    enable_rare_sampler: Option<bool>,
    rare: RawRareSampler,
    probabilistic: RawProbabilistic,
    max_catalog_entries: Option<usize>,
    ets: Option<bool>,
    deprecated_tps: bool,
}

/// Parses a Go duration (`300ms`, `90s`, `5m`, `1h30m`, `1.5h`); a bare number is seconds.
fn duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("not a duration: {e}"));
    }
    let bad = || format!("not a duration (e.g. 300s, 5m, 1h30m): {v:?}");
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("not a duration: {e}"))
}

fn positive_key(key: &str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(v)
}

fn positive_bytes(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        return Err(invalid(key, "must be at least 1 (bytes)"));
    }
    Ok(v)
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// `apm_config.errors_per_second`, rare and probabilistic samplers, `max_catalog_entries`,
/// error-tracking-standalone. Returns warnings.
fn load_sampler_keys(c: &mut Ctx<'_>, raw: &mut SamplerRaw) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    if raw.deprecated_tps {
        warnings
            .push("apm_config.max_traces_per_second is deprecated: use apm_config.target_traces_per_second".to_owned());
    }
    let s = &mut c.config.sampler.clone();
    let key = "apm_config.errors_per_second";
    if let Some(v) = c.pick(key, &["DD_APM_ERROR_TPS"], raw.errors_per_second, num::<f64>)? {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(key, format!("{v} is not a number of traces per second >= 0")));
        }
        s.errors_per_second = v;
    }
    let key = "apm_config.enable_rare_sampler";
    if let Some(v) = c.pick(key, &["DD_APM_ENABLE_RARE_SAMPLER"], raw.enable_rare_sampler, boolean)? {
        s.rare.enabled = v;
    }
    // The Go agent binds no environment variables for these three.
    let key = "apm_config.rare_sampler.tps";
    if let Some(v) = c.pick(key, &[], raw.rare.tps, num::<f64>)? {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(key, format!("{v} is not a number of traces per second >= 0")));
        }
        s.rare.tps = v;
    }
    let key = "apm_config.rare_sampler.cooldown";
    let cooldown = match raw.rare.cooldown.take() {
        Some(RawDuration::Seconds(n)) => Some(duration(&n.to_string()).map_err(|m| invalid(key, m))?),
        Some(RawDuration::Text(t)) => Some(duration(&t).map_err(|m| invalid(key, m))?),
        None => None,
    };
    if let Some(v) = c.pick(key, &[], cooldown, duration)? {
        s.rare.cooldown = v;
    }
    let key = "apm_config.rare_sampler.cardinality";
    if let Some(v) = c.pick(key, &[], raw.rare.cardinality, num::<usize>)? {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
        s.rare.cardinality = v;
    }
    let key = "apm_config.probabilistic_sampler.enabled";
    let p = &raw.probabilistic;
    if let Some(v) = c.pick(key, &["DD_APM_PROBABILISTIC_SAMPLER_ENABLED"], p.enabled, boolean)? {
        s.probabilistic.enabled = v;
    }
    let key = "apm_config.probabilistic_sampler.sampling_percentage";
    let var = "DD_APM_PROBABILISTIC_SAMPLER_SAMPLING_PERCENTAGE";
    if let Some(v) = c.pick(key, &[var], p.sampling_percentage, num::<f32>)? {
        if !(0.0..=100.0).contains(&v) {
            return Err(invalid(key, format!("{v} is not a percentage within 0..=100")));
        }
        s.probabilistic.sampling_percentage = v;
    }
    let key = "apm_config.probabilistic_sampler.hash_seed";
    let var = "DD_APM_PROBABILISTIC_SAMPLER_HASH_SEED";
    if let Some(v) = c.pick(key, &[var], p.hash_seed, num::<u32>)? {
        s.probabilistic.hash_seed = v;
    }
    let key = "apm_config.max_catalog_entries";
    if let Some(v) = c.pick(key, &[], raw.max_catalog_entries, num::<usize>)? {
        // 0 means the default, like the Go agent.
        s.max_catalog_entries = if v == 0 {
            crate::sample::DEFAULT_MAX_CATALOG_ENTRIES
        } else {
            v
        };
    }
    let key = "apm_config.error_tracking_standalone.enabled";
    if let Some(v) = c.pick(key, &["DD_APM_ERROR_TRACKING_STANDALONE_ENABLED"], raw.ets, boolean)? {
        s.error_tracking_standalone = v;
    }
    c.config.sampler = s.clone();
    Ok(warnings)
}

#[cfg(test)]
mod buffer_key_tests {
    use std::collections::HashMap;

    use super::load;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn buffer_keys_load_from_env_and_yaml_and_zero_is_refused() {
        let c = load(None, &env(&[])).unwrap();
        assert_eq!(c.receiver_max_buffered_bytes, 64 << 20);
        assert_eq!(c.pipeline_max_bytes, 128 << 20);
        let c = load(
            None,
            &env(&[
                ("DD_APM_RECEIVER_MAX_BUFFERED_BYTES", "1000"),
                ("DD_APM_PIPELINE_MAX_BYTES", "2000"),
            ]),
        )
        .unwrap();
        assert_eq!((c.receiver_max_buffered_bytes, c.pipeline_max_bytes), (1000, 2000));
        // One largest body always fits: the budget is raised to max_payload_size.
        assert_eq!(c.body_budget_bytes(), c.max_payload_size.max(5 << 20));
        assert!(c.describe().contains("apm_config.pipeline_max_bytes"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datadog.yaml");
        std::fs::write(
            &path,
            "apm_config:\n  receiver_max_buffered_bytes: 300000000\n  pipeline_max_bytes: 4000\n",
        )
        .unwrap();
        let c = load(Some(&path), &env(&[])).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.body_budget_bytes(), 300_000_000);
        assert_eq!(c.pipeline_max_bytes, 4000);
        let e = load(None, &env(&[("DD_APM_PIPELINE_MAX_BYTES", "0")])).unwrap_err();
        assert!(e.to_string().contains("apm_config.pipeline_max_bytes"), "{e}");
    }
}
