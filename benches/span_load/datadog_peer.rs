//! The Datadog peer: `datadog-opentelemetry` 0.6 (Datadog's Rust tracer, an OpenTelemetry
//! SDK pipeline with libdatadog's trace buffer and exporter), driven by the same
//! OpenTelemetry calls as the bridge, exporting v0.4 traces (its output format; v0.5 is
//! counted as well) to the same kind of loopback sink, which counts the spans in each
//! payload's body.
//!
//! Set up without globals (`init_local`), telemetry and remote configuration off (they
//! would talk to the sink too); a flush waits up to 60 s as ours does (its default gives up
//! after 5 s and lets the rest go on in the background). Its export runs on its own tokio
//! runtime (2 worker threads, named `tokio-rt-worker`: the only tokio runtime with worker
//! threads in this bench); its export CPU sums those threads and the unnamed thread it
//! starts (named after the process; the main thread excepted).

use opentelemetry::trace::TracerProvider as _;

use super::{Sink, Subject, UNNAMED, no_scope};
use crate::common::{otel_root, otel_tree};

/// Prefixes of the names of the peer's export threads: its tokio runtime's workers and the
/// helper thread it does not name.
const DD_THREADS: &[&str] = &["tokio-rt-worker", UNNAMED];

pub(crate) fn subject_datadog() -> Subject {
    let sink = Sink::start();
    let mut config = datadog_opentelemetry::configuration::Config::builder();
    config
        .set_service("bench".to_owned())
        .set_env("bench".to_owned())
        .set_trace_agent_url(sink.url.clone())
        .set_telemetry_enabled(false)
        .set_remote_config_enabled(false)
        // A flush waits for everything queued, as ours does (its default gives up after 5 s).
        .set_trace_writer_force_flush_timeout(std::time::Duration::from_secs(60));
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
        export_threads: DD_THREADS,
    }
}
