//! The HTTP receiver: listeners and limits ([`server`]), the route table ([`routes`]), trace
//! payload handling ([`traces`]), `/info` ([`info`]) and the sampling-rates table ([`rates`]).

pub mod budget;
pub mod info;
pub mod proxy;
pub mod rates;
pub mod routes;
pub mod server;
pub mod traces;
pub mod watchdog;

use std::sync::Arc;

use regex::{Regex, RegexSet};
use tokio::sync::Semaphore;

use crate::config::{AgentConfig, ConfigError};
use crate::pipeline::PipelineSender;
use crate::process::ProcessConfig;
use crate::process::filter::{Filters, ReplaceRule, TagRegexRule, TagRule};
use crate::process::normalize::NormalizeConfig;
use crate::status::AgentStats;

/// Version reported in `Datadog-Agent-Version` and `/info` (the Datadog agent release whose
/// behaviour this agent follows; tracers gate features on it).
pub const AGENT_VERSION: &str = "7.70.0";

/// Compiles the processing stages' configuration (regexes, rules) from `config`.
///
/// # Errors
/// An invalid regex in `ignore_resources`, `filter_tags_regex` or `replace_tags`.
pub fn compile_process_config(config: &AgentConfig) -> Result<ProcessConfig, ConfigError> {
    let invalid = |key: &str, e: regex::Error| ConfigError::Invalid {
        key: key.to_owned(),
        message: e.to_string(),
    };
    let ignore_resources = if config.ignore_resources.is_empty() {
        None
    } else {
        Some(RegexSet::new(&config.ignore_resources).map_err(|e| invalid("apm_config.ignore_resources", e))?)
    };
    let regex_rules = |key: &str, v: &[String]| -> Result<Vec<TagRegexRule>, ConfigError> {
        v.iter()
            .map(|s| TagRegexRule::parse(s).map_err(|e| invalid(key, e)))
            .collect()
    };
    let filters = Filters {
        ignore_resources,
        require: config.filter_tags_require.iter().map(|s| TagRule::parse(s)).collect(),
        reject: config.filter_tags_reject.iter().map(|s| TagRule::parse(s)).collect(),
        require_regex: regex_rules(
            "apm_config.filter_tags_regex.require",
            &config.filter_tags_regex_require,
        )?,
        reject_regex: regex_rules("apm_config.filter_tags_regex.reject", &config.filter_tags_regex_reject)?,
    };
    let mut replace_rules = Vec::with_capacity(config.replace_tags.len());
    for r in &config.replace_tags {
        let pattern = Regex::new(&r.pattern).map_err(|e| invalid("apm_config.replace_tags", e))?;
        replace_rules.push(ReplaceRule {
            name: r.name.clone(),
            pattern,
            repl: r.repl.clone(),
        });
    }
    let big = config.features.iter().any(|f| f == "big_resource");
    Ok(ProcessConfig {
        normalize: NormalizeConfig {
            max_resource_len: if big { 15_000 } else { 5_000 },
        },
        obfuscation: config.obfuscation.clone(),
        filters,
        replace_rules,
        global_tags: config.global_tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        default_env: config.default_env.clone(),
        sql_cache: config.obfuscation_cache_enabled.then(|| {
            Arc::new(crate::process::sql_cache::SqlCache::new(
                config.obfuscation_cache_max_size,
            ))
        }),
    })
}

/// State shared by every request handler.
#[derive(Debug)]
pub struct AppState {
    /// Effective configuration.
    pub config: Arc<AgentConfig>,
    /// Compiled processing configuration.
    pub process: Arc<ProcessConfig>,
    /// `/info`.
    pub info: info::InfoDoc,
    /// Rates returned on trace replies.
    pub rates: Arc<rates::RatesTable>,
    /// Counters.
    pub stats: Arc<AgentStats>,
    /// Decoder slots (`apm_config.decoders`): held for the CPU-bound decoding only.
    pub decoders: Semaphore,
    /// Bytes of request bodies held at once, every route together
    /// (`apm_config.receiver_max_buffered_bytes`, see [`budget`]).
    pub body_budget: Arc<crate::pipeline::ByteBudget>,
    /// Hand-off to the next stage.
    pub pipeline: PipelineSender,
    /// Where the receiver listens, for `status`.
    pub listening: Vec<String>,
    /// The proxy routes (`/evp_proxy/…`, `/telemetry/proxy/…`, `/v0.7/config`).
    pub proxy: proxy::Proxy,
    /// Unix time (s) of the last warning logged for a bad payload (rate limit).
    pub last_warn: std::sync::atomic::AtomicU64,
    /// `apm_config.max_memory` / `max_cpu_percent`: refuse payloads while over them.
    pub watchdog: Arc<watchdog::Watchdog>,
}
