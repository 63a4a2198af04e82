//! The Datadog peer: `datadog-opentelemetry` (Datadog's Rust tracer, an OpenTelemetry SDK
//! pipeline with libdatadog's exporter), driven by the same OpenTelemetry calls as the
//! bridge, exporting v0.4/v0.5 traces to the same kind of loopback sink (which counts the
//! `X-Datadog-Trace-Count` of each payload).
//!
//! Set up without globals (`init_local`), telemetry and remote configuration off (they
//! would talk to the sink too); its export runs on its own tokio runtime, whose worker
//! threads are named `tokio-rt-worker` (the only tokio runtime in this bench). Its export
//! CPU counts those threads only (an unnamed helper thread, if busy, is not counted).

use opentelemetry::trace::TracerProvider as _;

use super::{Sink, Subject, no_scope};
use crate::common::{otel_root, otel_tree};

/// Prefix of the names of the peer's export threads (its tokio runtime's workers).
const DD_THREAD: &str = "tokio-rt-worker";

pub(crate) fn subject_datadog() -> Subject {
    let sink = Sink::start();
    let mut config = datadog_opentelemetry::configuration::Config::builder();
    config
        .set_service("bench".to_owned())
        .set_env("bench".to_owned())
        .set_trace_agent_url(sink.url.clone())
        .set_telemetry_enabled(false)
        .set_remote_config_enabled(false);
    let (provider, _propagator) = datadog_opentelemetry::tracing()
        .with_config(config.build())
        .init_local();
    let t = provider.tracer("bench");
    let t2 = t.clone();
    Subject {
        name: "datadog-opentelemetry",
        sink,
        root: Box::new(move || otel_root(&t)),
        tree: Box::new(move || otel_tree(&t2)),
        flush: Box::new(move || {
            let _ = provider.force_flush();
        }),
        scope: no_scope(),
        export_thread: DD_THREAD,
        counts_traces: true,
    }
}
