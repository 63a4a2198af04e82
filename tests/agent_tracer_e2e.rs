//! Our tracer sending to our agent end to end (both in-process): every span arrives, nothing is
//! dropped, and the agent learns the service for its rates.

#[path = "support/runtime.rs"]
mod runtime;

use std::time::Duration;

use runtime::runtime;
use trace_agent::config::AgentConfig;
use tracer::{Tracer, TracerConfig};

#[test]
fn our_tracer_to_our_agent() {
    let rt = runtime();
    let agent = rt
        .block_on(trace_agent::start(AgentConfig::local(apm::free_port())))
        .unwrap();
    let url = format!("http://{}", agent.tcp_addr().unwrap());
    let config = TracerConfig::default()
        .with_service("rust-demo")
        .with_env("test")
        .with_version("1.0")
        .with_agent_url(&url)
        .expect("agent url");
    let tracer = Tracer::new(config).expect("tracer");
    for i in 0..3 {
        let root = tracer
            .span("http.request")
            .resource(if i == 0 { "GET /" } else { "GET /api/apm" })
            .span_type("web")
            .tag("http.url", "http://user:secret@127.0.0.1:4999/api/apm?x=1")
            .start();
        if i < 2 {
            let db = root
                .child("postgres.query")
                .service("postgres")
                .resource("SELECT * FROM t WHERE id = 42")
                .span_type("sql")
                .start();
            drop(db);
        }
        drop(root);
    }
    tracer.flush(Duration::from_secs(20)).expect("flush to our agent");
    let rate = agent
        .rates()
        .get("service:rust-demo,env:test")
        .or_else(|| agent.rates().get("service:,env:"));
    assert_eq!(rate, Some(1.0), "a 3-trace service is far below the 10 traces/s target");
    let status = rt.block_on(agent.shutdown());
    let total = status.total_received();
    assert_eq!(total.traces, 3, "{status:#?}");
    assert_eq!(total.spans, 5, "{status:#?}");
    assert!(status.dropped.is_empty(), "{:?}", status.dropped);
    assert_eq!(status.forwarded.spans, 5);
    let (key, _) = &status.received[0];
    assert_eq!(key.service, "rust-demo");
    assert!(!key.lang.is_empty(), "tracer identifies its language: {key:?}");
}
