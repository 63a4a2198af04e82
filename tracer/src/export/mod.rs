//! The export worker: drains finished chunks, samples them, encodes v0.5/v0.4 msgpack and
//! sends it to the agent, all on its own thread.

mod encode;
mod info;
mod stages;
mod transport;
mod worker;

pub(crate) use encode::EncodeContext;
#[cfg(any(feature = "tracing-layer", feature = "opentelemetry"))]
pub(crate) use worker::on_export_thread;
pub(crate) use worker::spawn;

impl EncodeContext {
    /// What every payload of `tracer` repeats: its service, env, version, global tags,
    /// runtime id and process id.
    pub(crate) fn of(tracer: &crate::core::TracerInner) -> Self {
        let shared = |s: &String| crate::span::Str::from(s.clone()).into_shared();
        Self {
            service: tracer.service.clone(),
            env: tracer.config.env.as_ref().map(shared),
            version: tracer.config.version.as_ref().map(shared),
            global_tags: tracer
                .config
                .global_tags
                .iter()
                .map(|(k, v)| (shared(k), shared(v)))
                .collect(),
            runtime_id: shared(&tracer.runtime_id),
            process_id: f64::from(std::process::id()),
            native_span_events: false,
        }
    }
}
