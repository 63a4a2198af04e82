//! Who this agent is: the version it reports, its hostname (one fallback rule), and the identity
//! written on stats payloads. A leaf: it imports nothing above `config`.

use crate::config::AgentConfig;

/// Version reported in `Datadog-Agent-Version`, `/info`, `Via` and stats payloads (the Datadog
/// agent release whose behaviour this agent follows; tracers gate features on it).
pub const AGENT_VERSION: &str = "7.70.0";

/// The kernel's host name (Linux), or empty.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The agent's hostname: `hostname` from the config, else the system's.
pub fn hostname(config: &AgentConfig) -> String {
    if config.hostname.is_empty() {
        system_hostname()
    } else {
        config.hostname.clone()
    }
}

/// The agent's identity written on every stats payload (`AgentHostname`, `AgentEnv`,
/// `AgentVersion`) and used as the fallback hostname/env of payload keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentIdentity {
    /// Agent hostname.
    pub hostname: String,
    /// Agent default env (`apm_config.env`, never empty in practice).
    pub env: String,
    /// Agent version.
    pub version: String,
}

impl AgentIdentity {
    /// The identity of an agent running `config`: its [`hostname`], default env, and
    /// [`AGENT_VERSION`].
    pub fn from_config(config: &AgentConfig) -> Self {
        Self {
            hostname: hostname(config),
            env: config.default_env.clone(),
            version: AGENT_VERSION.to_owned(),
        }
    }
}
