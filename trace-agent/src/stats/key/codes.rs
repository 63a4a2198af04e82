//! Status codes of a span's group key: the HTTP status code (metric, meta, OTel attribute) and
//! the gRPC status code (numbers or code names) from the keys tracers use for them.

/// Index of a gRPC status-code key, in the order they are tried (shared with the tracer).
pub(super) use apm_conventions::grpc::key_index as grpc_index;

/// HTTP status code: `http.status_code` metric (as is), else its meta (parsed, 0 if invalid);
/// else the OTel `http.response.status_code`, only when a valid code (100–599).
pub(super) fn status_code(
    metric: Option<f64>,
    meta: Option<&str>,
    otel_metric: Option<f64>,
    otel_meta: Option<&str>,
) -> u32 {
    if let Some(m) = metric {
        return m as u32;
    }
    if let Some(s) = meta {
        return s.trim().parse().unwrap_or(0);
    }
    let valid = |c: u32| (100..600).contains(&c);
    otel_metric
        .and_then(float_code)
        .filter(|c| valid(*c))
        .or_else(|| otel_meta.and_then(|s| s.trim().parse().ok()).filter(|c| valid(*c)))
        .unwrap_or(0)
}

pub(super) use apm_conventions::code_from_f64 as float_code;
/// The gRPC status code parsers are shared with the tracer (`apm-conventions`).
pub use apm_conventions::grpc::code_from_str as grpc_code_from_str;
