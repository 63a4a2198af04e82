//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` (tonic), gzip
//! accepted, messages bounded by `otlp_config.receiver.protocols.grpc.max_recv_msg_size_mib`
//! (`OUT_OF_RANGE` beyond), overload answered `UNAVAILABLE` (retryable). tonic decodes before
//! the handler; the handler then charges the message to the receivers' byte budget and refuses
//! (`RESOURCE_EXHAUSTED`, naming the key) a message past `apm_config.max_spans_per_payload` or
//! `apm_config.max_decoded_ratio` before mapping it.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

use super::{IngestError, Protocol, RequestMeta, ingest, prescan};
use crate::receiver::AppState;

#[derive(Debug)]
struct Service {
    state: Arc<AppState>,
}

fn metadata_str(req: &tonic::Request<ExportTraceServiceRequest>, key: &str) -> String {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let computed = metadata_str(&request, "datadog-client-computed-stats");
        let meta = RequestMeta {
            client_computed_stats: !computed.is_empty() && crate::config::parse_bool(&computed) != Some(false),
            lang_version: metadata_str(&request, "datadog-meta-lang-version"),
        };
        let export = request.into_inner();
        let bytes = export.encoded_len() as u64;
        let state = &self.state;
        let counters = state.stats.otlp.of(Protocol::Grpc);
        counters.request(bytes);
        let refuse = |reason: &str, message: String| {
            counters.error(reason);
            state.stats.record_drop(&format!("otlp_{reason}"), 1, 0, 0);
            super::warn_limited(state, &format!("OTLP/gRPC export refused: {message}"));
            message
        };
        // The decoded message is held while it is mapped: charged like an HTTP body.
        let Some(_permit) = state.body_budget.acquire(bytes, state.config.decoder_timeout).await else {
            return Err(tonic::Status::unavailable(refuse(
                "overload",
                "the agent is overloaded: request bodies already fill apm_config.receiver_max_buffered_bytes; retry later"
                    .to_owned(),
            )));
        };
        let est = prescan::decoded(&export);
        let limits = state.config.decode_limits(usize::try_from(bytes).unwrap_or(usize::MAX));
        if est.spans > limits.max_spans {
            return Err(tonic::Status::resource_exhausted(refuse(
                "too_many_spans",
                format!(
                    "the request holds {} spans, more than apm_config.max_spans_per_payload ({})",
                    est.spans, limits.max_spans
                ),
            )));
        }
        if est.bytes > limits.max_decoded_bytes {
            return Err(tonic::Status::resource_exhausted(refuse(
                "decoded_too_large",
                format!(
                    "this {bytes}-byte message decodes to about {} bytes, more than apm_config.max_decoded_ratio ({}) \
                     times its size allows ({} bytes)",
                    est.bytes, state.config.max_decoded_ratio, limits.max_decoded_bytes
                ),
            )));
        }
        match ingest(state, Protocol::Grpc, export, meta, bytes).await {
            Ok(done) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: (done.rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: i64::try_from(done.rejected).unwrap_or(i64::MAX),
                    error_message: done.message.unwrap_or_default(),
                }),
            })),
            Err(e @ IngestError::Overloaded) => Err(tonic::Status::unavailable(e.to_string())),
            Err(e @ IngestError::Internal(_)) => Err(tonic::Status::internal(e.to_string())),
        }
    }
}

/// Serves the trace service on `listener` until `stop` turns true.
pub(super) async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let max = state.config.otlp_receiver.grpc_max_recv_msg_size;
    let svc = TraceServiceServer::new(Service {
        state: Arc::clone(&state),
    })
    .max_decoding_message_size(max)
    .accept_compressed(CompressionEncoding::Gzip);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut stopped = stop.clone();
    let signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let drain = state.config.receiver_timeout + std::time::Duration::from_secs(5);
    let serve = tonic::transport::Server::builder()
        .timeout(drain)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, signal);
    // Graceful shutdown waits for in-flight calls, but no longer than the HTTP receivers do.
    let deadline = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = serve => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the OTLP gRPC receiver stopped");
                state.stats.record_error(format!("OTLP gRPC receiver stopped: {e}"));
            }
        }
        () = deadline => tracing::warn!("OTLP gRPC calls still in flight after {drain:?}; closing them"),
    }
}
