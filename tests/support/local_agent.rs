//! Our agent in local mode (store + web view) for the root tests. Included by `support/mod.rs`
//! and, on its own, by tests that need nothing else of `support`.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use trace_agent::config::AgentConfig;
use trace_agent::local::{LocalConfig, LocalMode};

/// An agent config on `port` in local mode: its store under `dir/data`, its web view on a
/// free port.
pub(crate) fn local_config(dir: &Path, port: u16) -> AgentConfig {
    let mut config = AgentConfig::local(port);
    config.local = LocalConfig::in_dir(&dir.join("data"));
    config.local.mode = LocalMode::On;
    config.local.web_port = 0;
    config
}

/// Where a running agent in local mode serves its web view.
pub(crate) fn web_addr(agent: &trace_agent::Agent) -> SocketAddr {
    agent
        .web_url()
        .expect("local mode runs")
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}
