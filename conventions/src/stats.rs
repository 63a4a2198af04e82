//! The tags a span's stats group key is read from, gathered the same way by the agent's
//! concentrator and the tracer's client-side stats: one pass over a span's string tags
//! ([`KeyTags::offer`]) and one over its numeric ones ([`KeyMetrics::offer`]), the last
//! occurrence of a key winning, then the key's fields from what was seen.

use crate::grpc;

/// `_dd.base_service`: the service a span would have had without a service override.
pub const BASE_SERVICE: &str = "_dd.base_service";

/// What a span's string tags say about its stats key.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyTags<'a> {
    /// `span.kind`.
    pub span_kind: &'a str,
    /// `_dd.svc_src`: where the span's service name came from.
    pub service_source: &'a str,
    /// [`BASE_SERVICE`].
    pub base_service: &'a str,
    method: &'a str,
    otel_method: &'a str,
    endpoint: &'a str,
    route: &'a str,
    status: Option<&'a str>,
    otel_status: Option<&'a str>,
    grpc: [Option<&'a str>; 4],
}

impl<'a> KeyTags<'a> {
    /// Takes note of tag `k` = `v` if the key reads it. Dispatches on the first byte: most
    /// keys are of no interest and cost one comparison.
    #[inline]
    pub fn offer(&mut self, k: &'a str, v: &'a str) {
        match k.as_bytes().first() {
            Some(b'h') => match k {
                "http.method" => self.method = v,
                "http.request.method" => self.otel_method = v,
                "http.endpoint" => self.endpoint = v,
                "http.route" => self.route = v,
                "http.status_code" => self.status = Some(v),
                "http.response.status_code" => self.otel_status = Some(v),
                _ => {}
            },
            Some(b'_') => match k {
                "_dd.svc_src" => self.service_source = v,
                BASE_SERVICE => self.base_service = v,
                _ => {}
            },
            Some(b's') if k == "span.kind" => self.span_kind = v,
            // Every gRPC status key starts with `r` or `g`.
            Some(b'r' | b'g') => {
                if let Some(slot) = grpc::key_index(k).and_then(|i| self.grpc.get_mut(i)) {
                    *slot = Some(v);
                }
            }
            _ => {}
        }
    }

    /// The HTTP method: `http.method`, else OpenTelemetry's `http.request.method`.
    pub fn http_method(&self) -> &'a str {
        if self.method.is_empty() {
            self.otel_method
        } else {
            self.method
        }
    }

    /// The HTTP endpoint: `http.endpoint`, else `http.route`.
    pub fn http_endpoint(&self) -> &'a str {
        if self.endpoint.is_empty() {
            self.route
        } else {
            self.endpoint
        }
    }

    /// The HTTP status code: the `http.status_code` metric (converted as Go's `uint32(f)`
    /// does for codes), else its string tag (parsed, 0 if it does not parse); else
    /// OpenTelemetry's `http.response.status_code` (metric, then tag), only when it is a
    /// valid code (100–599); else 0.
    pub fn http_status_code(&self, metrics: &KeyMetrics) -> u32 {
        if let Some(m) = metrics.status {
            return m as u32;
        }
        if let Some(s) = self.status {
            return s.trim().parse().unwrap_or(0);
        }
        let valid = |c: &u32| (100..600).contains(c);
        (metrics.otel_status)
            .and_then(crate::code_from_f64)
            .filter(valid)
            .or_else(|| self.otel_status.and_then(|s| s.trim().parse().ok()).filter(valid))
            .unwrap_or(0)
    }

    /// The gRPC status code: [`grpc::status_code`] over the string tags, then the metrics,
    /// each in [`grpc::KEYS`] order.
    pub fn grpc_status_code(&self, metrics: &KeyMetrics) -> Option<u32> {
        grpc::status_code(self.grpc, metrics.grpc)
    }
}

/// What a span's numeric tags say about its stats key.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyMetrics {
    status: Option<f64>,
    otel_status: Option<f64>,
    grpc: [Option<f64>; 4],
}

impl KeyMetrics {
    /// Takes note of metric `k` = `v` if the key reads it.
    #[inline]
    pub fn offer(&mut self, k: &str, v: f64) {
        match k {
            "http.status_code" => self.status = Some(v),
            "http.response.status_code" => self.otel_status = Some(v),
            _ => {
                if let Some(slot) = grpc::key_index(k).and_then(|i| self.grpc.get_mut(i)) {
                    *slot = Some(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather<'a>(meta: &[(&'a str, &'a str)], metrics: &[(&str, f64)]) -> (KeyTags<'a>, KeyMetrics) {
        let mut t = KeyTags::default();
        for (k, v) in meta {
            t.offer(k, v);
        }
        let mut m = KeyMetrics::default();
        for (k, v) in metrics {
            m.offer(k, *v);
        }
        (t, m)
    }

    #[test]
    fn method_and_endpoint_prefer_the_datadog_keys() {
        let (t, _) = gather(&[("http.request.method", "PUT"), ("http.route", "/r")], &[]);
        assert_eq!((t.http_method(), t.http_endpoint()), ("PUT", "/r"));
        let (t, _) = gather(
            &[
                ("http.method", "GET"),
                ("http.request.method", "PUT"),
                ("http.route", "/r"),
                ("http.endpoint", "/e"),
            ],
            &[],
        );
        assert_eq!((t.http_method(), t.http_endpoint()), ("GET", "/e"));
    }

    #[test]
    fn the_last_occurrence_wins_and_other_keys_are_ignored() {
        let (t, _) = gather(
            &[
                ("span.kind", "client"),
                ("span.kind", "server"),
                ("spam", "x"),
                ("_dd.svc_src", "opt"),
                (BASE_SERVICE, "base"),
                ("_dd.other", "y"),
                ("hostname", "h"),
            ],
            &[],
        );
        assert_eq!(
            (t.span_kind, t.service_source, t.base_service, t.http_method()),
            ("server", "opt", "base", "")
        );
    }

    #[test]
    fn status_code_sources_in_order() {
        let code = |meta: &[(&str, &str)], metrics: &[(&str, f64)]| {
            let (t, m) = gather(meta, metrics);
            t.http_status_code(&m)
        };
        assert_eq!(
            code(&[("http.status_code", "500")], &[("http.status_code", 201.0)]),
            201
        );
        assert_eq!(code(&[("http.status_code", " 404 ")], &[]), 404);
        assert_eq!(code(&[("http.status_code", "abc")], &[]), 0);
        assert_eq!(code(&[("http.response.status_code", "503")], &[]), 503);
        assert_eq!(code(&[("http.response.status_code", "42")], &[]), 0);
        assert_eq!(code(&[], &[("http.response.status_code", 302.0)]), 302);
        assert_eq!(code(&[], &[("http.response.status_code", 302.5)]), 0);
        assert_eq!(code(&[], &[]), 0);
    }

    #[test]
    fn grpc_code_strings_before_numbers_in_key_order() {
        let code = |meta: &[(&str, &str)], metrics: &[(&str, f64)]| {
            let (t, m) = gather(meta, metrics);
            t.grpc_status_code(&m)
        };
        assert_eq!(
            code(&[("grpc.code", "NOT_FOUND")], &[("rpc.grpc.status_code", 2.0)]),
            Some(5)
        );
        assert_eq!(
            code(&[("grpc.status.code", "1"), ("rpc.grpc.status_code", "14")], &[]),
            Some(14)
        );
        assert_eq!(code(&[("grpc.code", "nope")], &[("grpc.status.code", 7.0)]), Some(7));
        assert_eq!(code(&[("rpc.system", "grpc")], &[]), None);
    }
}
