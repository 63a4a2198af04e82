//! Building [`AgentConfig`] from the file, the environment and the defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::key::{FileValues, Key, Kind, Secrecy, Value, read_file};
use super::{AgentConfig, Origin, mask};
use crate::env::EnvSource;
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

/// The configuration being loaded, and what keys set that another key or the final step
/// reads (keys that combine, defaults that depend on other keys).
#[derive(Debug, Default)]
pub(crate) struct Loading {
    pub(crate) config: AgentConfig,
    pub(crate) scratch: Scratch,
}

/// Values that keys set for [`finish`] to combine.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) top_env: Option<String>,
    pub(crate) apm_env: Option<String>,
    pub(crate) non_local: Option<bool>,
    pub(crate) socket_set: bool,
    pub(crate) grpc_set: bool,
    pub(crate) http_set: bool,
    pub(crate) spool_dir: Option<String>,
    pub(crate) otlp_export_endpoint: Option<String>,
    pub(crate) otlp_export_headers: Option<std::collections::BTreeMap<String, String>>,
    pub(crate) monitors: Vec<crate::local::monitor::config::RawMonitor>,
    pub(crate) webhooks: std::collections::BTreeMap<String, String>,
    pub(crate) downtimes: Vec<crate::local::monitor::config::RawDowntime>,
    pub(crate) monitor_interval: Option<Duration>,
}

/// Env (first set variable of the key) over file over nothing; records the origin.
fn pick(
    key: &Key,
    env: &dyn EnvSource,
    file: Option<(&Path, Value)>,
    origins: &mut std::collections::BTreeMap<String, Origin>,
) -> Result<Option<Value>, ConfigError> {
    for var in key.env {
        // An empty variable counts as unset.
        if let Some(v) = env.get(var).filter(|v| !v.trim().is_empty()) {
            let parsed = key.parse_env_value(&v).map_err(|message| ConfigError::Env {
                var: (*var).to_owned(),
                value: shown_env_value(key.secret, &v),
                message,
            })?;
            origins.insert(key.path.to_owned(), Origin::Env((*var).to_owned()));
            return Ok(Some(parsed));
        }
    }
    let file = file.filter(|(_, v)| !(key.empty_is_unset && matches!(v, Value::List(l) if l.is_empty())));
    if let Some((path, value)) = file {
        origins.insert(key.path.to_owned(), Origin::File(path.to_owned()));
        return Ok(Some(value));
    }
    Ok(None)
}

/// How an environment variable's value appears in an error: API keys masked, variables that
/// may hold keys or credentials (endpoint maps, header lists) not shown at all.
fn shown_env_value(secret: Secrecy, v: &str) -> String {
    match secret {
        Secrecy::Masked => mask(v),
        Secrecy::Hidden => format!("<{} characters, not shown: may hold API keys>", v.chars().count()),
        Secrecy::Plain => v.to_owned(),
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
    for key in super::key::all().filter(|k| k.secret != Secrecy::Plain) {
        for v in key.env.iter().filter_map(|var| env.get(var)) {
            match key.kind {
                // `name=value,...`: the values.
                Kind::StrMap => {
                    for item in v.split(',') {
                        add(item.split_once('=').map_or(item, |(_, v)| v));
                    }
                }
                Kind::ListMap => match serde_json::from_str::<serde_json::Value>(&v) {
                    Ok(json) => json_strings(&json, &mut |s| {
                        if !looks_like_url(s) {
                            add(s);
                        }
                    }),
                    // Unparsable: any word in it may be a key.
                    Err(_) => v
                        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                        .for_each(&mut add),
                },
                _ => add(&v),
            }
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

/// Loads the configuration: `path` (if any) and `env`, over the defaults.
///
/// # Errors
/// A [`ConfigError`] naming the file line, variable or key that is wrong; API keys and other
/// secrets found in the file or the environment are masked wherever they appear in it.
pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<AgentConfig, ConfigError> {
    load_unscrubbed(path, env).map_err(|e| e.scrub(&secrets_of(path, env)))
}

fn load_unscrubbed(path: Option<&Path>, env: &dyn EnvSource) -> Result<AgentConfig, ConfigError> {
    let mut file = FileValues::default();
    if let Some(p) = path {
        let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_owned(),
            source,
        })?;
        if !text.trim().is_empty() {
            file = read_file(&text).map_err(|e| ConfigError::Parse {
                path: p.to_owned(),
                message: e.to_string(),
            })?;
        }
    }
    let mut warnings: Vec<String> = file
        .unknown
        .iter()
        .filter_map(|key| Some(format!("{}: unknown key '{key}' ignored", path?.display())))
        .collect();
    if file.values.contains_key("apm_config.max_traces_per_second")
        && !file.values.contains_key("apm_config.target_traces_per_second")
    {
        warnings
            .push("apm_config.max_traces_per_second is deprecated: use apm_config.target_traces_per_second".to_owned());
    }
    let mut l = Loading::default();
    l.config.local = crate::local::LocalConfig::with_env_defaults(env);
    for key in super::key::all() {
        let value = key
            .aliases
            .iter()
            .chain(std::iter::once(&key.path))
            .find_map(|p| file.values.remove(p));
        let value = value.and_then(|v| Some((path?, v)));
        if let Some(v) = pick(key, env, value, &mut l.config.origins)? {
            (key.apply)(&mut l, v).map_err(|m| invalid(key.path, m))?;
        }
    }
    finish(&mut l, &file.sections)?;
    if l.config.replace_tags.iter().any(|r| r.name == "env") {
        warnings.push(
            "apm_config.replace_tags: a rule on \"env\" rewrites the env of every span and breaks \
             env-scoped views and sampling rates; prefer setting env in the tracer"
                .to_owned(),
        );
    }
    l.config.warnings = warnings;
    // Validate what can only fail later: regexes and the bind address.
    super::compile::process(&l.config)?;
    l.config.tcp_addr()?;
    Ok(l.config)
}

/// What keys combine: the default env, non-local traffic over `bind_host`, defaults that
/// depend on other keys or on a section being present, the monitors, the OTLP export.
fn finish(l: &mut Loading, sections: &BTreeSet<String>) -> Result<(), ConfigError> {
    let (c, s) = (&mut l.config, &mut l.scratch);
    let tag_env = c.tags.iter().find_map(|t| t.strip_prefix("env:").map(str::to_owned));
    if let Some(env) = s
        .apm_env
        .take()
        .or(s.top_env.take())
        .or(tag_env)
        .filter(|e| !e.is_empty())
    {
        let normalized = normalize_tag_value(&env).into_owned();
        c.default_env = if normalized.is_empty() {
            "none".to_owned()
        } else {
            normalized
        };
    }
    if s.non_local == Some(true) {
        c.receiver_host = "0.0.0.0".to_owned();
        c.origins.insert("bind_host".to_owned(), Origin::Default);
    }
    if !s.socket_set {
        let default = Path::new(super::DEFAULT_RECEIVER_SOCKET);
        if default.parent().is_some_and(Path::is_dir) {
            c.receiver_socket = Some(default.to_owned());
        }
    }
    let has = |f: &str| c.features.iter().any(|x| x == f);
    c.stats.container_id_dimension = has("enable_cid_stats") && !has("disable_cid_stats");
    c.local.monitors = crate::local::monitor::MonitorConfig::from_raw(
        std::mem::take(&mut s.monitors),
        std::mem::take(&mut s.webhooks),
        std::mem::take(&mut s.downtimes),
        s.monitor_interval,
    )
    .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
    super::upstream::finish(c, s)?;
    super::ingest::finish(c, s, sections);
    Ok(())
}

/// Parses a Go duration (`300ms`, `90s`, `5m`, `1h30m`, `1.5h`); a bare number is seconds.
pub(crate) fn duration(v: &str) -> Result<Duration, String> {
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

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
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
