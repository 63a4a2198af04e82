//! Datadog-compatible APM tracer.
