//! Who this agent is: the version it reports, its hostname (one fallback rule), and the identity
//! written on stats payloads. A leaf: it imports nothing of this crate.

/// Version reported in `Datadog-Agent-Version`, `/info`, `Via` and stats payloads (the Datadog
/// agent release whose behaviour this agent follows; tracers gate features on it).
pub const AGENT_VERSION: &str = "7.70.0";

/// The kernel's host name (Linux), or empty.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The agent's hostname: `configured` (`hostname` in datadog.yaml / `DD_HOSTNAME`), else the
/// system's.
pub fn hostname(configured: &str) -> String {
    if configured.is_empty() {
        system_hostname()
    } else {
        configured.to_owned()
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
    /// The identity of this agent: [`hostname`] of the configured one, its default env, and
    /// [`AGENT_VERSION`].
    pub fn new(configured_hostname: &str, env: &str) -> Self {
        Self {
            hostname: hostname(configured_hostname),
            env: env.to_owned(),
            version: AGENT_VERSION.to_owned(),
        }
    }
}
