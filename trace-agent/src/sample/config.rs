//! Sampler settings that live in [`crate::config::AgentConfig::sampler`]. The target TPS
//! (`max_traces_per_second`), `extra_sample_rate`, the default env and `features` stay at the
//! top of `AgentConfig`, where `/info` reads them too.

use super::catalog::DEFAULT_MAX_CATALOG_ENTRIES;
use super::probabilistic::ProbabilisticConfig;
use super::rare::RareConfig;

/// Default `apm_config.errors_per_second`.
pub const DEFAULT_ERROR_TPS: f64 = 10.0;

/// `apm_config` sampler keys (spec section 8).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// `apm_config.errors_per_second` (`DD_APM_ERROR_TPS`): errors-sampler target; 0 disables it.
    pub errors_per_second: f64,
    /// `apm_config.enable_rare_sampler` and `apm_config.rare_sampler.*`.
    pub rare: RareConfig,
    /// `apm_config.probabilistic_sampler.*`.
    pub probabilistic: ProbabilisticConfig,
    /// `apm_config.max_catalog_entries`: `(service, env)` pairs in the priority catalog.
    pub max_catalog_entries: usize,
    /// `apm_config.error_tracking_standalone.enabled`: keep only chunks with errors.
    pub error_tracking_standalone: bool,
}

/// Everything the samplers are built from (see `config::compile::samplers`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplersConfig {
    /// The `apm_config` sampler keys.
    pub sampler: SamplerConfig,
    /// `apm_config.max_traces_per_second`: target of the priority and no-priority samplers.
    pub max_traces_per_second: f64,
    /// `apm_config.extra_sample_rate`.
    pub extra_sample_rate: f64,
    /// The agent's default env.
    pub default_env: String,
    /// `apm_config.features`.
    pub features: Vec<String>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            errors_per_second: DEFAULT_ERROR_TPS,
            rare: RareConfig::default(),
            probabilistic: ProbabilisticConfig::default(),
            max_catalog_entries: DEFAULT_MAX_CATALOG_ENTRIES,
            error_tracking_standalone: false,
        }
    }
}
