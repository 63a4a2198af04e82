//! Status codes of a span's group key: the HTTP status code (metric, meta, OTel attribute) and
//! the gRPC status code (numbers or code names) from the keys tracers use for them.

/// Index of a gRPC status-code key, in the order they are tried.
pub(super) fn grpc_index(key: &str) -> Option<usize> {
    match key {
        "rpc.grpc.status_code" => Some(0),
        "grpc.code" => Some(1),
        "rpc.grpc.status.code" => Some(2),
        "grpc.status.code" => Some(3),
        _ => None,
    }
}

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

pub(super) fn float_code(f: f64) -> Option<u32> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
}

/// A gRPC status code from a number or a code name (`NOT_FOUND`, `NotFound`,
/// `StatusCode.NOT_FOUND`, case-insensitive).
pub fn grpc_code_from_str(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u32>() {
        return Some(n);
    }
    let name = v
        .strip_prefix("StatusCode.")
        .or_else(|| v.strip_prefix("STATUSCODE."))
        .unwrap_or(v);
    let upper: String = name
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Some(match upper.as_str() {
        "OK" => 0,
        "CANCELLED" | "CANCELED" => 1,
        "UNKNOWN" => 2,
        "INVALIDARGUMENT" => 3,
        "DEADLINEEXCEEDED" => 4,
        "NOTFOUND" => 5,
        "ALREADYEXISTS" => 6,
        "PERMISSIONDENIED" => 7,
        "RESOURCEEXHAUSTED" => 8,
        "FAILEDPRECONDITION" => 9,
        "ABORTED" => 10,
        "OUTOFRANGE" => 11,
        "UNIMPLEMENTED" => 12,
        "INTERNAL" => 13,
        "UNAVAILABLE" => 14,
        "DATALOSS" => 15,
        "UNAUTHENTICATED" => 16,
        _ => return None,
    })
}
