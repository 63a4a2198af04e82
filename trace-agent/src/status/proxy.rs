//! What the status report shows of the proxy routes (counted by `receiver::proxy`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters of one route, shown by `trace-agent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Requests forwarded and answered 2xx by the intake.
    pub delivered: u64,
    /// Request bytes forwarded.
    pub bytes: u64,
    /// Intake answers that were not 2xx, by status (relayed to the client).
    pub intake_errors: BTreeMap<u16, u64>,
    /// Requests not forwarded, by reason (`no_api_key`, `disabled`, `too_large`,
    /// `bad_subdomain`, `network`, `timeout`, …).
    pub refused: BTreeMap<String, u64>,
    /// Copies sent to the additional endpoints and answered 2xx.
    #[serde(default)]
    pub additional_delivered: u64,
    /// Copies to the additional endpoints that failed (any non-2xx, network error, timeout).
    #[serde(default)]
    pub additional_failed: u64,
}

/// What `status` shows of the proxy routes.
pub type ProxyStatus = BTreeMap<String, RouteStatus>;

/// The `status` text of the proxy routes (empty when none was used).
pub fn render(s: &ProxyStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for (route, r) in s {
        let _ = writeln!(
            o,
            "Proxy {route}: {} delivered ({} bytes), intake errors {:?}, refused {:?}",
            r.delivered, r.bytes, r.intake_errors, r.refused
        );
    }
    o
}
