//! The OTLP writer: kept traces exported as OTLP/HTTP protobuf (`ExportTraceServiceRequest`,
//! `Content-Type: application/x-protobuf`, `Content-Encoding: gzip`) POSTed to
//! `<apm_config.otlp_export.endpoint>/v1/traces` with the configured extra headers. Batching,
//! queue bounds, retries and drop rules are the Datadog writer's (see [`super`]): 408, 5xx,
//! timeouts and network errors are retried, other statuses drop the batch.
//!
//! **Stats are not exported over OTLP** ([`Upstream::send_stats`] ignores them): OTLP has no
//! counterpart of Datadog's pre-aggregated, DDSketch-based APM stats.
//!
//! # Mapping (Datadog → OTLP)
//! Follows the OpenTelemetry Collector's Datadog receiver, plus the attributes Datadog's own
//! OTLP ingest reads back (`resource.name`, `operation.name`, `span.type`) so that a trace
//! sent to Datadog through OTLP keeps its resource, operation name and type.
//!
//! | OTLP | from |
//! |---|---|
//! | one `ResourceSpans` | per (tracer payload, service) |
//! | resource `service.name` | span `service` |
//! | resource `deployment.environment.name` | payload `env`, else the first span's `env` meta |
//! | resource `service.version` | payload `app_version`, else the first span's `version` meta |
//! | resource `telemetry.sdk.name` / `.language` / `.version` | `datadog` / payload language (`.NET` → `dotnet`) / tracer version |
//! | resource `process.runtime.version`, `host.name`, `container.id`, `service.instance.id` | payload language version, hostname, container id, runtime id |
//! | resource attributes | payload tags, as is |
//! | scope | name `datadog`, version = tracer version |
//! | `trace_id` (16 bytes) | high 64 bits from `_dd.p.tid` (hex, on any span of the chunk with that trace id), low 64 = `trace_id` |
//! | `span_id`, `parent_span_id` | big-endian; parent empty for a root (`parent_id` 0) |
//! | `flags` | W3C sampled bit set unless the chunk is `dropped_trace` (single-span-sampled spans) |
//! | `name` | operation `name` (as the Collector's Datadog receiver) |
//! | attributes `resource.name`, `operation.name`, `span.type` | `resource`, `name`, `type` (type omitted when empty) |
//! | `kind` | `span.kind` meta (server/client/producer/consumer/internal), else type `web` → server, `http` → client, else unspecified |
//! | `start_time_unix_nano`, `end_time_unix_nano` | `start`, `start + duration` (negative → 0) |
//! | `status` | `error != 0` → ERROR with message `error.message` (or `error.msg`); otherwise unset (not OK: OTel reserves OK for explicit success) |
//! | string attributes | every `meta` entry, as is (`_dd.*` included), sorted by key |
//! | double attributes | every `metrics` entry (always double, even when integral, as the Collector's receiver does) unless `meta` has the same key |
//! | `events` | `span_events` (typed attribute values: string, bool, int, double, array) |
//! | `links` | `span_links` (128-bit trace id, tracestate, string attributes, W3C flags when bit 31 says they are set) |
//! | — | `meta_struct` (binary AppSec/IAST blobs) is not exported |

mod map;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use tokio::sync::Notify;

pub use map::{OPERATION_NAME, RESOURCE_NAME, SCOPE_NAME, SPAN_TYPE, export_request, kind, span};

use super::backoff::Backoff;
use super::batch::{Batch, Batcher, TickerSlot, spawn_ticker};
use super::http::HttpClient;
use super::sender::{self, Body, Channel, ChannelSettings, Endpoint, Job, Payload};
use super::{DropReason, ShutdownFuture, Upstream, UpstreamError, WriterStatus, pb};
use crate::secret::Secret;
use crate::upstream::WriterLimits;

/// Path appended to the endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// Configuration of an [`OtlpWriter`].
#[derive(Debug, Clone)]
pub struct OtlpWriterConfig {
    /// Collector base URL (`http://collector:4318`) or the full `/v1/traces` URL.
    pub endpoint: String,
    /// Extra headers (auth); values are sent as sensitive headers and never logged.
    pub headers: BTreeMap<String, Secret>,
    /// Sender limits (the agent's `trace_writer` limits).
    pub limits: WriterLimits,
    /// Retries of a retriable failure.
    pub max_retries: u32,
    /// How long tracer payloads are batched.
    pub flush_period: Duration,
    /// Largest estimated batch.
    pub max_batch_bytes: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// Where undeliverable payloads go (`apm_config.spool`); `None`: dropped and counted.
    pub spool: Option<Arc<crate::upstream::SpoolDir>>,
}

impl OtlpWriterConfig {
    /// The URL traces are POSTed to.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{TRACES_PATH}")
        }
    }
}

/// Exports kept traces over OTLP/HTTP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OtlpWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    batcher: Batcher,
    traces: Channel,
    closed: AtomicBool,
    wake: Arc<Notify>,
    ticker: TickerSlot,
}

impl OtlpWriter {
    /// Starts the writer's tasks on the current tokio runtime.
    ///
    /// # Errors
    /// No runtime, an invalid URL or header, or a TLS setup failure.
    pub fn start(config: OtlpWriterConfig) -> Result<Self, UpstreamError> {
        tokio::runtime::Handle::try_current().map_err(|_| UpstreamError::NoRuntime)?;
        let url = config.traces_url();
        let uri = super::parse_uri(&url)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| UpstreamError::InvalidUrl {
                url: url.clone(),
                message: format!("header name {k:?} is not valid"),
            })?;
            let mut value = HeaderValue::from_str(v.expose()).map_err(|_| UpstreamError::InvalidUrl {
                url: url.clone(),
                message: format!("the value of header {k:?} cannot be sent"),
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("trace-agent-rs/", env!("CARGO_PKG_VERSION"))),
        );
        let client = HttpClient::new(config.request_timeout)?;
        let traces = Channel::start(
            ChannelSettings {
                signal: "traces",
                writer: "otlp",
                connection_limit: config.limits.connection_limit,
                queue_size: config.limits.queue_size,
                max_queue_bytes: config.limits.max_queue_bytes,
                max_retries: config.max_retries,
                backoff: config.backoff,
            },
            vec![Endpoint {
                uri,
                headers,
                api_key: None,
            }],
            &client,
            config.spool.as_ref(),
        );
        let inner = Arc::new(Inner {
            batcher: Batcher::new(config.max_batch_bytes),
            traces,
            closed: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            ticker: TickerSlot::default(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let ticker = spawn_ticker(config.flush_period, Arc::clone(&inner.wake), move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            if let Some(batch) = inner.batcher.take() {
                inner.traces.submit(Job::new(OtlpJob(batch)));
            }
            !inner.closed.load(Ordering::Acquire)
        });
        inner.ticker.set(ticker);
        Ok(Self { inner })
    }
}

/// One export request to encode.
struct OtlpJob(Batch);

impl Payload for OtlpJob {
    fn on_delivered(&self) {
        self.0.ledger.delivered();
    }

    fn on_spooled(&self) {
        self.0.ledger.spooled();
    }

    fn items(&self) -> u64 {
        self.0.chunks
    }

    fn estimated_bytes(&self) -> usize {
        self.0.bytes
    }

    fn encode(&self) -> Result<Body, String> {
        Body::gzip(
            &export_request(&self.0.payloads).encode_to_vec(),
            "application/x-protobuf",
        )
    }
}

impl Upstream for OtlpWriter {
    fn name(&self) -> &str {
        "otlp"
    }

    fn send_traces(&self, payload: Arc<pb::TracerPayload>) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            inner
                .traces
                .count_dropped(DropReason::Shutdown, payload.chunks.len() as u64);
            return;
        }
        if payload.chunks.is_empty() {
            return;
        }
        for batch in inner.batcher.add(payload) {
            inner.traces.submit(Job::new(OtlpJob(batch)));
        }
    }

    fn attach_ledger(&self, ledger: Arc<crate::ledger::Ledger>) {
        self.inner.batcher.attach_ledger(ledger, "otlp");
    }

    fn send_stats(&self, _payload: Arc<pb::StatsPayload>) {}

    fn flush(&self) {
        self.inner.wake.notify_one();
    }

    fn pressure(&self) -> crate::upstream::Pressure {
        self.inner.traces.pressure()
    }

    fn status(&self) -> WriterStatus {
        WriterStatus {
            name: "otlp".to_owned(),
            endpoints: self.inner.traces.urls(),
            traces: self.inner.traces.status(),
            stats: Default::default(),
        }
    }

    fn shutdown(&self, timeout: Duration) -> ShutdownFuture<'_> {
        Box::pin(async move {
            let inner = &self.inner;
            let deadline = sender::deadline(timeout);
            inner.closed.store(true, Ordering::Release);
            inner.ticker.stop();
            if let Some(batch) = inner.batcher.take() {
                inner.traces.submit(Job::new(OtlpJob(batch)));
            }
            inner.traces.shutdown(deadline).await;
            if let Some(late) = inner.batcher.take() {
                inner.traces.count_dropped(DropReason::Shutdown, late.chunks);
            }
            self.status()
        })
    }
}
