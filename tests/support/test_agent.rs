//! A session on Datadog's reference test agent (`apm::TestAgent`, `ddapm-test-agent`): start it,
//! read back the traces and raw requests it received, and check that its enabled checks passed.
//! Included by `support/mod.rs` and, on its own, by the tracer tests that need nothing else.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;

/// Starts a test agent in the run directory `run` and, on it, the session `token` (its traces
/// and requests are kept apart from other sessions').
pub(crate) fn start_in_session(run: &str, token: &str) -> apm::TestAgent {
    let agent = apm::TestAgent::start(&apm::run_dir(run));
    let (status, body) = agent.get(&format!("/test/session/start?test_session_token={token}"));
    assert_eq!(status, 200, "{body}");
    agent
}

/// The traces the session received, as the test agent decoded them.
pub(crate) fn session_traces(agent: &apm::TestAgent, token: &str) -> Vec<Vec<Value>> {
    let (status, body) = agent.get(&format!("/test/session/traces?test_session_token={token}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("traces json")
}

/// The raw requests of the session (`url`, `headers`, `body` in base64).
pub(crate) fn session_requests(agent: &apm::TestAgent, token: &str) -> Vec<Value> {
    let (status, body) = agent.get(&format!("/test/session/requests?test_session_token={token}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("requests json")
}

/// No enabled check failed (the test agent answers 400 with the failures otherwise).
pub(crate) fn assert_no_check_failed(agent: &apm::TestAgent) {
    let (status, failures) = agent.get("/test/trace_check/failures");
    assert_eq!(status, 200, "check failures: {failures}");
}

/// No check failed, and each of [`apm::TestAgent::CHECKS`] ran at least once.
pub(crate) fn assert_every_check_passed(agent: &apm::TestAgent) {
    assert_no_check_failed(agent);
    let (_, summary) = agent.get("/test/trace_check/summary");
    let summary: Value = serde_json::from_str(&summary).expect("summary json");
    for check in apm::TestAgent::CHECKS.split(',') {
        assert!(
            summary[check]["Passed_Checks"].as_u64().unwrap_or(0) >= 1,
            "{check} did not pass: {summary}"
        );
        assert_eq!(summary[check]["Failed_Checks"].as_u64(), Some(0), "{check}: {summary}");
    }
}
