//! OTLP/HTTP: `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), optionally gzip-compressed. Bodies
//! are bounded by `apm_config.max_payload_size` as sent and again after decompression, read
//! under the receivers' shared byte budget (as sent and decompressed; no decoder slot while
//! reading), and what they would decode to is bounded before decoding
//! (`apm_config.max_spans_per_payload`, `apm_config.max_decoded_ratio`, see [`super::prescan`]);
//! errors are 4xx/503 with a `google.rpc.Status` body (in the request's encoding) naming the
//! problem or the limit; success is 200 with an `ExportTraceServiceResponse` whose
//! `partial_success` counts the refused spans.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::{IngestError, Protocol, RequestMeta, ingest_with_slot, prescan, processing_slot};
use crate::decode::DecodeLimits;
use crate::pipeline::{ByteBudget, BytePermit};
use crate::receiver::AppState;
use crate::receiver::budget::{self, ReadRefusal};

/// Path of the trace export.
pub(super) const TRACES_PATH: &str = "/v1/traces";

/// `google.rpc.Status`, the body of OTLP/HTTP error replies.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Proto,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

fn reply(status: StatusCode, enc: Encoding, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(enc.content_type()));
    r
}

/// An error reply: `google.rpc.Status` with the gRPC code matching `status`.
fn error(status: StatusCode, enc: Encoding, message: &str) -> Response<Full<Bytes>> {
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::NOT_FOUND => 5,
        StatusCode::METHOD_NOT_ALLOWED => 12, // UNIMPLEMENTED
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => 14, // UNAVAILABLE
        _ => 13,                              // INTERNAL
    };
    let body = match enc {
        Encoding::Proto => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    };
    let mut r = reply(status, enc, body);
    if status == StatusCode::SERVICE_UNAVAILABLE
        && let Ok(v) = HeaderValue::from_str("1")
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn media_type(h: &HeaderMap) -> Option<Encoding> {
    let ct = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mt = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mt.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Proto),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// Why a body could not be turned into a request; `(status, counter reason, message)`.
type Refusal = (StatusCode, &'static str, String);

/// Undoes `Content-Encoding`, reading at most `limit` bytes of output, charged to `budget` as
/// it grows (the permit comes back with the bytes; `None` when nothing was inflated).
fn decompress(
    encoding: &str,
    raw: Bytes,
    limit: u64,
    budget: &ByteBudget,
) -> Result<(Bytes, Option<BytePermit>), Refusal> {
    match encoding {
        "" | "identity" => Ok((raw, None)),
        "gzip" => {
            let corrupt = |e: std::io::Error| {
                (
                    StatusCode::BAD_REQUEST,
                    "corrupt_gzip",
                    format!("cannot decompress the gzip body: {e}"),
                )
            };
            let mut out: Vec<u8> = Vec::new();
            let mut charge: Option<BytePermit> = None;
            let mut reader = flate2::read::GzDecoder::new(raw.as_ref()).take(limit + 1);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut chunk).map_err(corrupt)?;
                if n == 0 {
                    break;
                }
                let need = (out.len() + n) as u64;
                if need > limit {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("the decompressed body exceeds max_payload_size ({limit} bytes)"),
                    ));
                }
                let held = charge.as_ref().map_or(0, BytePermit::bytes);
                if need > held {
                    let want = need.max(held.saturating_mul(2)).max(budget::CHUNKED_STEP).min(limit);
                    let more = budget.try_acquire(want - held).ok_or_else(|| {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "overload",
                            "request bodies already fill apm_config.receiver_max_buffered_bytes: no room to \
                             decompress this one; retry later"
                                .to_owned(),
                        )
                    })?;
                    match &mut charge {
                        Some(c) => c.merge(more),
                        None => charge = Some(more),
                    }
                    out.reserve_exact(usize::try_from(want).unwrap_or(0).saturating_sub(out.len()));
                }
                out.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Ok((Bytes::from(out), charge))
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported (gzip or none)"),
        )),
    }
}

/// Refuses a (decompressed) body whose decoding would pass `limits`, before decoding it: 413
/// naming the key, or 400 for a protobuf body whose wire format is broken.
fn check_decoded_size(enc: Encoding, body: &[u8], limits: DecodeLimits, ratio: usize) -> Result<(), Refusal> {
    let est = match enc {
        Encoding::Proto => prescan::protobuf(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "decode_proto",
                format!("not a valid protobuf ExportTraceServiceRequest: {e}"),
            )
        })?,
        Encoding::Json => prescan::json(body),
    };
    spans_within(est.spans, limits)?;
    if est.bytes > limits.max_decoded_bytes {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "decoded_too_large",
            format!(
                "decoding this {}-byte body would take about {} bytes, more than apm_config.max_decoded_ratio \
                 ({ratio}) times its size allows ({} bytes)",
                body.len(),
                est.bytes,
                limits.max_decoded_bytes
            ),
        ));
    }
    Ok(())
}

/// 413 naming `apm_config.max_spans_per_payload` when `spans` exceeds it.
fn spans_within(spans: usize, limits: DecodeLimits) -> Result<(), Refusal> {
    if spans > limits.max_spans {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_spans",
            format!(
                "the request holds {spans} spans, more than apm_config.max_spans_per_payload ({})",
                limits.max_spans
            ),
        ));
    }
    Ok(())
}

/// Decodes a (decompressed) body.
fn decode(enc: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, Refusal> {
    match enc {
        Encoding::Proto => ExportTraceServiceRequest::decode(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "decode_proto",
                format!("not a valid protobuf ExportTraceServiceRequest: {e}"),
            )
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "decode_json",
                format!("not a valid OTLP/JSON ExportTraceServiceRequest: {e}"),
            )
        }),
    }
}

fn success(enc: Encoding, rejected: u64, message: Option<String>) -> Response<Full<Bytes>> {
    let resp = ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message.unwrap_or_default(),
        }),
    };
    let body = match enc {
        Encoding::Proto => resp.encode_to_vec(),
        // OTLP/JSON omits an unset message (no `"partialSuccess": null`).
        Encoding::Json if resp.partial_success.is_none() => b"{}".to_vec(),
        Encoding::Json => serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec()),
    };
    reply(StatusCode::OK, enc, body)
}

/// Handles one request on the OTLP/HTTP listener.
pub(super) async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let counters = state.stats.otlp.of(Protocol::Http);
    let enc_guess = media_type(req.headers()).unwrap_or(Encoding::Json);
    if req.uri().path() != TRACES_PATH {
        return error(
            StatusCode::NOT_FOUND,
            enc_guess,
            &format!(
                "{} is not served: OTLP traces go to POST {TRACES_PATH}",
                req.uri().path()
            ),
        );
    }
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, enc_guess, "use POST");
    }
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let limit = state.config.max_payload_size;
    let refuse = |(status, reason, message): Refusal, enc: Encoding| {
        counters.error(reason);
        state.stats.record_drop(&format!("otlp_{reason}"), 1, 0, 0);
        super::warn_limited(&state, &format!("OTLP/HTTP export refused ({status}): {message}"));
        error(status, enc, &message)
    };
    let Some(enc) = media_type(h) else {
        counters.request(0);
        let ct = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)");
        return refuse(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type {ct:?} is not supported: use application/x-protobuf or application/json"),
            ),
            Encoding::Json,
        );
    };
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        counters.request(0);
        return refuse(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a body of {n} bytes exceeds max_payload_size ({limit} bytes)"),
            ),
            enc,
        );
    }
    // The forwarding stage is behind: refuse before reading (503 + Retry-After, retried by the
    // SDKs) rather than take spans that could not be queued.
    if !state.pipeline.has_room(state.config.decoder_timeout).await {
        counters.request(0);
        counters.error("pipeline_full");
        state.stats.record_drop("otlp_pipeline_full", 1, 0, 0);
        super::warn_limited(
            &state,
            "OTLP/HTTP export refused: the pipeline to the forwarding stage is full",
        );
        crate::receiver::traces::drain_body(&state, body).await;
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            "the agent's pipeline is full (pipeline_capacity / apm_config.pipeline_max_bytes); retry later",
        );
    }
    // Read under the shared byte budget, without a decoder slot.
    let mut body = body;
    let read = budget::read_body(
        &state.body_budget,
        &mut body,
        declared,
        limit,
        state.config.receiver_timeout,
        state.config.decoder_timeout,
    )
    .await;
    let (raw, body_permit) = match read {
        Ok(r) => r,
        Err(ReadRefusal::NoBudget) => {
            counters.request(0);
            counters.error("overload");
            state.stats.record_drop("otlp_body_budget", 1, 0, 0);
            super::warn_limited(
                &state,
                "OTLP/HTTP export refused: request bodies already fill apm_config.receiver_max_buffered_bytes",
            );
            crate::receiver::traces::drain_body(&state, body).await;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                enc,
                "the agent is overloaded: request bodies already fill apm_config.receiver_max_buffered_bytes; retry later",
            );
        }
        Err(ReadRefusal::Timeout) => {
            counters.request(0);
            return refuse(
                (
                    StatusCode::REQUEST_TIMEOUT,
                    "read_timeout",
                    "the body was not received within the receiver timeout".to_owned(),
                ),
                enc,
            );
        }
        Err(ReadRefusal::TooLarge) => {
            counters.request(0);
            return refuse(
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body exceeds max_payload_size ({limit} bytes)"),
                ),
                enc,
            );
        }
        Err(ReadRefusal::Io(e)) => {
            counters.request(0);
            return refuse(
                (
                    StatusCode::BAD_REQUEST,
                    "read_body",
                    format!("cannot read the body: {e}"),
                ),
                enc,
            );
        }
    };
    let bytes = raw.len() as u64;
    counters.request(bytes);
    let content_encoding = h
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // The decoder slot covers decompression, decoding, mapping and processing (CPU-bound).
    let slot = match processing_slot(&state, Protocol::Http).await {
        Ok(slot) => slot,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, enc, &e.to_string()),
    };
    let budget = Arc::clone(&state.body_budget);
    let (max_spans, ratio) = (state.config.max_spans_per_payload, state.config.max_decoded_ratio);
    let decoded = tokio::task::spawn_blocking(move || {
        let (body, inflated) = decompress(&content_encoding, raw, limit, &budget)?;
        let limits = DecodeLimits::new(body.len(), max_spans, ratio);
        check_decoded_size(enc, &body, limits, ratio)?;
        let export = decode(enc, &body)?;
        // JSON's pre-scan bounds memory but cannot count spans: count them now, before mapping.
        spans_within(prescan::span_count(&export), limits)?;
        Ok::<_, Refusal>((export, inflated))
    })
    .await;
    let (export, inflated) = match decoded {
        Ok(Ok(r)) => r,
        Ok(Err(refusal)) => return refuse(refusal, enc),
        Err(e) => {
            return refuse(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("decoding task failed: {e}"),
                ),
                enc,
            );
        }
    };
    let meta = RequestMeta {
        client_computed_stats: crate::receiver::traces::truthy(h, "datadog-client-computed-stats"),
        lang_version: h
            .get("datadog-meta-lang-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    };
    let result = ingest_with_slot(&state, Protocol::Http, export, meta, bytes, slot).await;
    // The decoded request is gone: its bytes are free (the payloads are charged to the pipeline).
    drop((body_permit, inflated));
    match result {
        Ok(done) => success(enc, done.rejected, done.message),
        Err(e @ IngestError::Overloaded) => error(StatusCode::SERVICE_UNAVAILABLE, enc, &e.to_string()),
        Err(e @ IngestError::Internal(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, enc, &e.to_string()),
    }
}

/// Accepts connections until `stop` turns true (at most `max_connections` at a time), then
/// lets in-flight requests finish (bounded).
pub(super) async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP/HTTP accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let st = Arc::clone(&state);
        let svc = service_fn(move |req| {
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(handle(st, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(state.config.receiver_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let fut = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(error = %e, "OTLP/HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    let drain = state.config.receiver_timeout + std::time::Duration::from_secs(5);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("OTLP/HTTP requests still in flight after {drain:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_bounded_after_decompression() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; 10_000]).unwrap();
        let raw = Bytes::from(gz.finish().unwrap());
        assert!(raw.len() < 1_000, "a small body that inflates 10 000 bytes");
        let budget = ByteBudget::new(1 << 20);
        let (status, reason, _) = decompress("gzip", raw.clone(), 9_999, &budget).unwrap_err();
        assert_eq!((status, reason), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
        let (out, charge) = decompress("gzip", raw.clone(), 10_000, &budget).unwrap();
        assert_eq!(out.len(), 10_000);
        assert_eq!(budget.held(), charge.as_ref().map_or(0, BytePermit::bytes));
        assert!(budget.held() >= 10_000, "the inflated bytes are charged");
        drop(charge);
        assert_eq!(budget.held(), 0);
        let (status, reason, _) = decompress("gzip", Bytes::from_static(b"not gzip"), 100, &budget).unwrap_err();
        assert_eq!((status, reason), (StatusCode::BAD_REQUEST, "corrupt_gzip"));
        let (status, _, _) = decompress("br", Bytes::new(), 100, &budget).unwrap_err();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // No room in the budget for the inflated bytes: overload (503, retryable).
        let full = ByteBudget::new(5_000);
        let _held = full.try_acquire(5_000).unwrap();
        let (status, reason, _) = decompress("gzip", raw, 10_000, &full).unwrap_err();
        assert_eq!((status, reason), (StatusCode::SERVICE_UNAVAILABLE, "overload"));
    }

    #[test]
    fn what_a_body_decodes_to_is_bounded_before_decoding() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let req = crate::otlp_in::mapping::build::request(Vec::new(), ("", ""), vec![Span::default(); 100_000]);
        let body = req.encode_to_vec();
        let limits = DecodeLimits::new(body.len(), 1_000_000, 16);
        let (status, reason, msg) = check_decoded_size(Encoding::Proto, &body, limits, 16).unwrap_err();
        assert_eq!((status, reason), (StatusCode::PAYLOAD_TOO_LARGE, "decoded_too_large"));
        assert!(msg.contains("apm_config.max_decoded_ratio"), "{msg}");
        let (_, reason, msg) = check_decoded_size(
            Encoding::Proto,
            &body,
            DecodeLimits::new(body.len(), 100, 10_000),
            10_000,
        )
        .unwrap_err();
        assert_eq!(reason, "too_many_spans");
        assert!(msg.contains("apm_config.max_spans_per_payload (100)"), "{msg}");
        assert!(
            check_decoded_size(
                Encoding::Proto,
                &body,
                DecodeLimits::new(body.len(), 1_000_000, 1_000),
                1_000
            )
            .is_ok()
        );
        let json = format!(
            "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}]}}]}}]}}",
            vec!["{}"; 100_000].join(",")
        );
        let (_, reason, _) = check_decoded_size(
            Encoding::Json,
            json.as_bytes(),
            DecodeLimits::new(json.len(), 1_000_000, 16),
            16,
        )
        .unwrap_err();
        assert_eq!(reason, "decoded_too_large");
    }

    #[test]
    fn otlp_json_decodes_with_hex_ids_and_string_integers() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"js"}}]},
            "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174","name":"GET","kind":2,"startTimeUnixNano":"1544712660000000000",
            "endTimeUnixNano":"1544712661000000000","attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},
            {"key":"n","value":{"intValue":"7"}}],"status":{"code":2,"message":"bad"}}]}]}]}"#;
        let req = decode(Encoding::Json, body).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        let (status, reason, msg) = decode(Encoding::Json, b"{\"resourceSpans\": 3}").unwrap_err();
        assert_eq!((status, reason), (StatusCode::BAD_REQUEST, "decode_json"));
        assert!(msg.contains("OTLP/JSON"), "{msg}");
        let (_, reason, _) = decode(Encoding::Proto, b"\xff\xff\xff").unwrap_err();
        assert_eq!(reason, "decode_proto");
    }
}
