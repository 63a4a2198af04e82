//! Compiled sections: what each component is built from, derived once from [`AgentConfig`] so
//! components take their own section and never the whole config (the processing stages'
//! regexes and rules; the samplers' targets; the upstream writers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use regex::{Regex, RegexSet};

use super::{AgentConfig, ConfigError};
use crate::process::ProcessConfig;
use crate::process::filter::{Filters, ReplaceRule, TagRegexRule, TagRule};
use crate::process::normalize::NormalizeConfig;
use crate::sample::SamplersConfig;
use crate::upstream::datadog::ENQUEUE_TIMEOUT;
use crate::upstream::{
    Backoff, DatadogEndpoint, DatadogWriterConfig, MAX_BATCH_BYTES, OtlpWriterConfig, UpstreamError,
};

/// Compiles the processing stages' configuration (regexes, rules) from `config`.
///
/// # Errors
/// An invalid regex in `ignore_resources`, `filter_tags_regex` or `replace_tags`.
pub fn process(config: &AgentConfig) -> Result<ProcessConfig, ConfigError> {
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

/// The samplers' section: `sampler` plus the targets that stay at the top of `AgentConfig`
/// because `/info` reads them too.
pub fn samplers(config: &AgentConfig) -> SamplersConfig {
    SamplersConfig {
        sampler: config.sampler.clone(),
        max_traces_per_second: config.max_traces_per_second,
        extra_sample_rate: config.extra_sample_rate,
        default_env: config.default_env.clone(),
        features: config.features.clone(),
    }
}

/// The writer configuration of the agent: `apm_dd_url` (or `https://trace.agent.<site>`)
/// with `api_key`, then `additional_endpoints`; hostname (`hostname`, else the system
/// host name), default env, writer limits. `target_tps` is `max_traces_per_second`;
/// `error_tps` (10) and `rare_sampler_enabled` (false) are for the samplers' owner to set.
///
/// # Errors
/// [`UpstreamError::MissingApiKey`] when `api_key` is not set.
pub fn datadog_writer(config: &AgentConfig) -> Result<DatadogWriterConfig, UpstreamError> {
    let key = config.api_key.clone().ok_or(UpstreamError::MissingApiKey)?;
    let u = &config.upstream;
    let mut endpoints = vec![DatadogEndpoint {
        url: u.dd_url(&config.site),
        api_key: key,
    }];
    for (url, keys) in &u.additional_endpoints {
        for k in keys {
            endpoints.push(DatadogEndpoint {
                url: url.clone(),
                api_key: k.clone(),
            });
        }
    }
    let hostname = crate::identity::hostname(&config.hostname);
    Ok(DatadogWriterConfig {
        endpoints,
        hostname,
        env: config.default_env.clone(),
        agent_version: crate::identity::AGENT_VERSION.to_owned(),
        git_commit: concat!("trace-agent-rs-", env!("CARGO_PKG_VERSION")).to_owned(),
        tags: HashMap::new(),
        target_tps: config.max_traces_per_second,
        error_tps: 10.0,
        rare_sampler_enabled: false,
        max_retries: u.max_sender_retries,
        traces: u.trace_writer.clone(),
        stats: u.stats_writer.clone(),
        flush_period: u.trace_flush_period,
        max_batch_bytes: MAX_BATCH_BYTES,
        request_timeout: Duration::from_secs(10),
        backoff: Backoff::default(),
        spool: None,
        enqueue_timeout: ENQUEUE_TIMEOUT,
    })
}

/// The OTLP export of the agent, when `apm_config.otlp_export.endpoint` is set.
pub fn otlp_writer(config: &AgentConfig) -> Option<OtlpWriterConfig> {
    let u = &config.upstream;
    let o = u.otlp_export.as_ref()?;
    Some(OtlpWriterConfig {
        endpoint: o.endpoint.clone(),
        headers: o.headers.clone(),
        limits: u.trace_writer.clone(),
        max_retries: u.max_sender_retries,
        flush_period: u.trace_flush_period,
        max_batch_bytes: MAX_BATCH_BYTES,
        request_timeout: Duration::from_secs(10),
        backoff: Backoff::default(),
        spool: None,
    })
}
