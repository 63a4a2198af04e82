//! Compiled sections: what each component is built from, derived once from [`AgentConfig`] so
//! components take their own section and never the whole config (the processing stages'
//! regexes and rules; the samplers' targets).

use std::sync::Arc;

use regex::{Regex, RegexSet};

use super::{AgentConfig, ConfigError};
use crate::process::ProcessConfig;
use crate::process::filter::{Filters, ReplaceRule, TagRegexRule, TagRule};
use crate::process::normalize::NormalizeConfig;
use crate::sample::SamplersConfig;

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
