//! OTLP/HTTP: `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), optionally gzip-compressed. Bodies
//! are bounded by `apm_config.max_payload_size` as sent and again after decompression; errors
//! are 4xx with a `google.rpc.Status` body (in the request's encoding) naming the problem;
//! success is 200 with an `ExportTraceServiceResponse` whose `partial_success` counts the
//! refused spans.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
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

use super::{IngestError, Protocol, RequestMeta, ingest};
use crate::receiver::AppState;

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

/// Undoes `Content-Encoding`, reading at most `limit` bytes of output.
fn decompress(encoding: &str, raw: Bytes, limit: u64) -> Result<Bytes, Refusal> {
    match encoding {
        "" | "identity" => Ok(raw),
        "gzip" => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(raw.as_ref()).take(limit + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "corrupt_gzip",
                    format!("cannot decompress the gzip body: {e}"),
                )
            })?;
            if out.len() as u64 > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the decompressed body exceeds max_payload_size ({limit} bytes)"),
                ));
            }
            Ok(Bytes::from(out))
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported (gzip or none)"),
        )),
    }
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
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let raw = match tokio::time::timeout(state.config.receiver_timeout, limited.collect()).await {
        Err(_) => {
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
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
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
        Ok(Err(e)) => {
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
    let decoded = tokio::task::spawn_blocking(move || {
        let body = decompress(&content_encoding, raw, limit)?;
        decode(enc, &body)
    })
    .await;
    let export = match decoded {
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
    match ingest(&state, Protocol::Http, export, meta, bytes).await {
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
        let (status, reason, _) = decompress("gzip", raw.clone(), 9_999).unwrap_err();
        assert_eq!((status, reason), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
        assert_eq!(decompress("gzip", raw, 10_000).unwrap().len(), 10_000);
        let (status, reason, _) = decompress("gzip", Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert_eq!((status, reason), (StatusCode::BAD_REQUEST, "corrupt_gzip"));
        let (status, _, _) = decompress("br", Bytes::new(), 100).unwrap_err();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
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
