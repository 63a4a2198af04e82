//! OTLP ingest: the OpenTelemetry trace receivers (gRPC `TraceService/Export` in [`grpc`],
//! HTTP `POST /v1/traces` in protobuf or JSON in [`http`]) under the Datadog agent's keys
//! `otlp_config.receiver.protocols.{grpc,http}.endpoint`. Spans are mapped to Datadog spans by
//! the pure [`mapping`] module and then go through the same processing and pipeline as the
//! msgpack receivers (normalization, obfuscation, stats, samplers, every upstream, local mode).

mod grpc;
mod http;
pub mod mapping;
pub mod prescan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::OtlpReceiverConfig;
use crate::pipeline::{PipelineItem, ProcessedPayload};
use crate::process::{self, DropReason, RequestFacts};
use crate::receiver::AppState;
use crate::span::OwnedPayload;
use crate::status::TracerKey;

#[cfg(test)]
use crate::status::otlp::MAX_ERROR_KEYS;
pub use crate::status::otlp::{OtlpCounters, OtlpStatus, Protocol, ProtocolCounters, ProtocolStatus};

/// What an export request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Spans handed to the pipeline.
    pub accepted: u64,
    /// Spans refused (invalid, dropped by normalization, or not queued in time).
    pub rejected: u64,
    /// Why (for the partial-success reply), when something was refused.
    pub message: Option<String>,
}

/// Why an export request was not taken at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No processing slot in time (retryable: 503 / `UNAVAILABLE`).
    #[error("the agent is overloaded: no processing slot within the decoder timeout; retry later")]
    Overloaded,
    /// The processing task failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Request facts from headers / gRPC metadata.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `Datadog-Client-Computed-Stats` was truthy.
    pub client_computed_stats: bool,
    /// `Datadog-Meta-Lang-Version`.
    pub lang_version: String,
}

pub(crate) use crate::receiver::warn_limited;

/// Drop reason of spans not queued: the pipeline to the forwarding stage had no room (items or
/// `apm_config.pipeline_max_bytes`) within `decoder_timeout`.
pub const DROP_QUEUE: &str = "otlp_queue_full";

struct Processed {
    payloads: Vec<(OwnedPayload, bool)>,
    received: Vec<(TracerKey, u64, u64)>,
    reports: Vec<process::ProcessReport>,
    spans: u64,
    rejected: u64,
    first_rejection: Option<String>,
}

fn map_and_process(req: &ExportTraceServiceRequest, state: &AppState, meta: &RequestMeta) -> Processed {
    let hostname = &state.config.hostname;
    let opts = mapping::MapOptions {
        default_env: &state.config.default_env,
        hostname,
        probabilistic_sampler: state.config.sampler.probabilistic.enabled,
        client_computed_stats: meta.client_computed_stats,
    };
    let mapped = mapping::map_request(req, &opts);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut out = Processed {
        payloads: Vec::with_capacity(mapped.payloads.len()),
        received: Vec::new(),
        reports: Vec::new(),
        spans: mapped.spans,
        rejected: mapped.rejected,
        first_rejection: mapped.first_rejection,
    };
    for m in mapped.payloads {
        let mut p = m.payload;
        p.language_version = crate::span::Str::from(meta.lang_version.clone());
        for chunk in &p.chunks {
            let service = process::toplevel::root_index(&chunk.spans)
                .and_then(|i| chunk.spans.get(i))
                .map_or("", |s| s.service.as_str());
            let key = TracerKey {
                service: service.to_owned(),
                lang: p.language_name.to_string(),
                lang_version: p.language_version.to_string(),
                tracer_version: p.tracer_version.to_string(),
            };
            let spans = chunk.spans.len() as u64;
            match out.received.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += spans;
                }
                None => out.received.push((key, 1, spans)),
            }
        }
        let facts = RequestFacts {
            lang: "",
            client_computed_top_level: true,
        };
        let report = process::process_payload(&mut p, &facts, &state.process, now);
        for (reason, (_, spans)) in &report.dropped {
            if matches!(reason, DropReason::Normalize(_)) {
                out.rejected += spans;
                out.first_rejection
                    .get_or_insert_with(|| format!("{spans} span(s) dropped: {}", reason.as_str()));
            }
        }
        out.reports.push(report);
        if !p.chunks.is_empty() {
            out.payloads
                .push((OwnedPayload::from_owned(p), m.client_computed_stats));
        }
    }
    out
}

/// A decoder slot (the msgpack receivers' slots: one budget for every ingest route), or the
/// overload refusal, counted.
///
/// # Errors
/// [`IngestError::Overloaded`] when no slot frees up within the decoder timeout.
pub(crate) async fn processing_slot(
    state: &AppState,
    protocol: Protocol,
) -> Result<crate::receiver::traces::DecoderSlot<'_>, IngestError> {
    if let Some(slot) = crate::receiver::traces::decoder_slot(state).await {
        return Ok(slot);
    }
    state.stats.otlp.of(protocol).error("overload");
    state.stats.record_drop("otlp_overload", 1, 0, 0);
    warn_limited(
        state,
        "OTLP export refused: no processing slot within the decoder timeout (overload)",
    );
    Err(IngestError::Overloaded)
}

/// Maps, processes and queues one export request; what the reply says.
///
/// # Errors
/// [`IngestError::Overloaded`] when no processing slot frees up within the decoder timeout.
pub async fn ingest(
    state: &Arc<AppState>,
    protocol: Protocol,
    req: ExportTraceServiceRequest,
    meta: RequestMeta,
    bytes: u64,
) -> Result<Ingested, IngestError> {
    let slot = processing_slot(state, protocol).await?;
    ingest_with_slot(state, protocol, req, meta, bytes, slot).await
}

/// [`ingest`] with a decoder slot already held (OTLP/HTTP takes it before decoding); the slot
/// is released once mapping and processing are done, before the hand-off.
///
/// # Errors
/// [`IngestError::Internal`] when the processing task fails.
pub(crate) async fn ingest_with_slot(
    state: &Arc<AppState>,
    protocol: Protocol,
    req: ExportTraceServiceRequest,
    meta: RequestMeta,
    bytes: u64,
    slot: crate::receiver::traces::DecoderSlot<'_>,
) -> Result<Ingested, IngestError> {
    let counters = state.stats.otlp.of(protocol);
    let st = Arc::clone(state);
    let work = tokio::task::spawn_blocking(move || map_and_process(&req, &st, &meta)).await;
    // The slot covers the CPU-bound work only.
    drop(slot);
    let processed = match work {
        Ok(p) => p,
        Err(e) => {
            counters.error("internal");
            state.stats.record_error(format!("OTLP processing task failed: {e}"));
            return Err(IngestError::Internal(e.to_string()));
        }
    };
    let Processed {
        payloads,
        received,
        reports,
        spans,
        mut rejected,
        mut first_rejection,
    } = processed;
    counters.spans_received.fetch_add(spans, Ordering::Relaxed);
    let per_service: Vec<(String, u64, u64)> = received.iter().map(|(k, t, s)| (k.service.clone(), *t, *s)).collect();
    if let Some((first, _, _)) = received.first() {
        let template = first.clone();
        state.stats.record_payload(
            |service| {
                received.iter().find(|(k, _, _)| k.service == service).map_or_else(
                    || TracerKey {
                        service: service.to_owned(),
                        ..template.clone()
                    },
                    |(k, _, _)| k.clone(),
                )
            },
            &per_service,
            bytes,
        );
    }
    // The span ledger (`crate::ledger`): received and what survived processing, per service.
    let survived: Vec<(String, u64)> = payloads
        .iter()
        .flat_map(|(p, _)| crate::ledger::count_payload(p.get()))
        .collect();
    let mut reasons: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.dropped.keys().map(|k| k.as_str()))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    (state.stats.forward.ledger).received("", &per_service, &survived, &reasons, false);
    for report in &reports {
        for (reason, (traces, spans)) in &report.dropped {
            state.stats.record_drop(reason.as_str(), 0, *traces, *spans);
        }
        state.stats.record_fixes(&report.fixed);
    }
    let mut accepted = 0;
    for (payload, client_computed_stats) in payloads {
        let n = payload.get().span_count() as u64;
        let traces = payload.get().chunks.len() as u64;
        let charge = crate::pipeline::estimated_bytes(payload.get(), 0);
        match state.pipeline.reserve(charge, state.config.decoder_timeout).await {
            Ok(room) => {
                room.send(PipelineItem::Traces(ProcessedPayload {
                    payload,
                    client_computed_stats,
                    client_dropped_p0_traces: 0,
                    received_at: SystemTime::now(),
                }));
                accepted += n;
            }
            Err(crate::pipeline::HandOffError::Closed) => {
                rejected += n;
                first_rejection.get_or_insert_with(|| "the agent is shutting down".to_owned());
                state.stats.record_drop(DROP_QUEUE, 0, traces, n);
            }
            Err(crate::pipeline::HandOffError::Full) => {
                rejected += n;
                first_rejection.get_or_insert_with(|| {
                    "the agent's pipeline is full (pipeline_capacity / apm_config.pipeline_max_bytes): \
                     spans not queued within the decoder timeout; retry later"
                        .to_owned()
                });
                state.stats.record_drop(DROP_QUEUE, 0, traces, n);
            }
        }
    }
    counters.spans_accepted.fetch_add(accepted, Ordering::Relaxed);
    counters.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
    if rejected > 0
        && let Some(msg) = &first_rejection
    {
        warn_limited(state, &format!("OTLP: {rejected} span(s) refused: {msg}"));
    }
    Ok(Ingested {
        accepted,
        rejected,
        message: (rejected > 0).then(|| first_rejection.unwrap_or_default()),
    })
}

/// Why an OTLP receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpStartError {
    /// The endpoint cannot be resolved to a local address.
    #[error("{key}: cannot resolve {endpoint:?}: {message}")]
    Resolve {
        /// Config key.
        key: &'static str,
        /// Endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The port is taken or the address is unusable.
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// The bound OTLP listeners (before the agent's state exists).
#[derive(Debug, Default)]
pub struct OtlpListeners {
    grpc: Option<(TcpListener, SocketAddr)>,
    http: Option<(TcpListener, SocketAddr)>,
}

impl OtlpListeners {
    /// The gRPC receiver's bound address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(_, a)| *a)
    }

    /// The HTTP receiver's bound address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, a)| *a)
    }
}

async fn bind_one(key: &'static str, endpoint: &str) -> Result<(TcpListener, SocketAddr), OtlpStartError> {
    let resolve = |message: String| OtlpStartError::Resolve {
        key,
        endpoint: endpoint.to_owned(),
        message,
    };
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| resolve("not host:port".to_owned()))?;
    let port: u16 = port.parse().map_err(|_| resolve(format!("{port:?} is not a port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| resolve("the host must be an IP address or localhost".to_owned()))?
    };
    let addr = SocketAddr::new(ip, port);
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| OtlpStartError::Bind { key, addr, source })?;
    let bound = l
        .local_addr()
        .map_err(|source| OtlpStartError::Bind { key, addr, source })?;
    Ok((l, bound))
}

/// Binds the receivers `config` turns on.
///
/// # Errors
/// An endpoint that does not resolve or cannot be bound.
pub async fn bind(config: &OtlpReceiverConfig) -> Result<OtlpListeners, OtlpStartError> {
    let mut out = OtlpListeners::default();
    if let Some(e) = &config.grpc_endpoint {
        out.grpc = Some(bind_one("otlp_config.receiver.protocols.grpc.endpoint", e).await?);
    }
    if let Some(e) = &config.http_endpoint {
        out.http = Some(bind_one("otlp_config.receiver.protocols.http.endpoint", e).await?);
    }
    Ok(out)
}

/// Serves the bound receivers until `stop` turns true; the tasks end when in-flight requests
/// are answered (bounded by the receiver timeout).
pub fn spawn(listeners: OtlpListeners, state: &Arc<AppState>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    state.stats.otlp.set_listening(
        listeners.grpc_addr().map(|a| format!("grpc://{a}")),
        listeners.http_addr().map(|a| format!("http://{a}/v1/traces")),
    );
    let mut tasks = Vec::new();
    if let Some((l, _)) = listeners.grpc {
        tasks.push(tokio::spawn(grpc::serve(l, Arc::clone(state), stop.clone())));
    }
    if let Some((l, _)) = listeners.http {
        tasks.push(tokio::spawn(http::serve(l, Arc::clone(state), stop.clone())));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_only_running_receivers_and_bounds_error_reasons() {
        let c = OtlpCounters::default();
        assert_eq!(c.snapshot().render(), "", "both receivers off: nothing to show");
        c.set_listening(None, Some("http://127.0.0.1:4318/v1/traces".to_owned()));
        c.of(Protocol::Http).request(120);
        for i in 0..(MAX_ERROR_KEYS + 10) {
            c.of(Protocol::Http).error(&format!("reason{i}"));
        }
        c.of(Protocol::Http).error("reason0");
        let s = c.snapshot();
        assert_eq!(s.http.errors.len(), MAX_ERROR_KEYS);
        assert_eq!(s.http.errors["reason0"], 2);
        assert_eq!((s.http.requests, s.http.bytes), (1, 120));
        let text = s.render();
        assert!(
            text.starts_with("OTLP HTTP receiver (http://127.0.0.1:4318/v1/traces): 1 requests, 120 bytes"),
            "{text}"
        );
        assert!(!text.contains("gRPC"), "{text}");
    }
}
