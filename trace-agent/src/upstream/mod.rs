//! Upstream writers: where kept traces and computed stats go after sampling.
//!
//! Every destination implements [`Upstream`]: the Datadog intake (`datadog`), an OTLP/HTTP
//! collector (`otlp`) and the local store (`local`, another module). The pipeline sink, which
//! runs on its own blocking thread, hands each destination an [`Arc`] of the converted or
//! encoded payload (each form built at most once, shared by the destinations that take it); a destination **never blocks** that thread:
//! it enqueues into its own bounded queue, or drops and counts (see [`DropReason`]).
//!
//! * [`convert`] — the borrowed span model ([`crate::span`]) → the protobuf types of
//!   `libdd-trace-protobuf` ([`pb`]), which the OTLP writer and the local store take;
//! * `pb_encode` — the borrowed span model → protobuf bytes ([`EncodedPayload`]), which the
//!   Datadog writer takes (no owned copy of the spans on its path);
//! * [`datadog`] — [`DatadogWriter`]: `AgentPayload` protobuf + zstd to `/api/v0.2/traces`,
//!   `StatsPayload` msgpack + gzip to `/api/v0.2/stats`, to the main and additional endpoints;
//! * [`otlp`] — [`OtlpWriter`]: kept traces as OTLP/HTTP protobuf to `<endpoint>/v1/traces`
//!   (no stats), with the Datadog → OTLP mapping documented there.
//!
//! # Sending (all HTTP writers)
//! Between the pipeline and the network, each endpoint has a queue bounded in payloads and in
//! bytes (`apm_config.{trace,stats}_writer.queue_size` / `.max_queue_bytes`); when full, the
//! **oldest** queued payloads are dropped to make room (counted as `queue_full`). Per endpoint,
//! `connection_limit` workers send concurrently (the limit is split across endpoints). Network
//! errors, timeouts (10 s), 408 and 5xx are retried up to `max_sender_retries` (4) times after a
//! full-jitter delay `random(0, min(10 s, 100 ms × 2^attempt))`, the attempt counter being per
//! endpoint and halved after every success; then the payload is dropped
//! (`retries_exhausted`). Any other non-2xx (including 429) drops the payload at once
//! (`rejected`), counted by status; a 403 is logged once per endpoint with the masked API key.
//!
//! # Lifecycle
//! Writers are built on, and spawn their tasks onto, the agent's tokio runtime. At shutdown
//! the owner first stops feeding them (the pipeline drained), then awaits
//! [`Upstream::shutdown`]: buffered data is flushed and in-flight requests get until the
//! timeout; whatever is still unsent then is counted as dropped ([`DropReason::Shutdown`]).
//! From a blocking thread (the sink), drive it with `tokio::runtime::Handle::block_on`.

mod backoff;
mod batch;
pub mod convert;
pub mod datadog;
pub(crate) mod http;
pub mod otlp;
mod pb_encode;
mod queue;
mod sender;
pub mod spool;
mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use backoff::Backoff;
pub use batch::MAX_BATCH_BYTES;
pub use datadog::{DatadogEndpoint, DatadogWriter, DatadogWriterConfig};
pub use http::ClientError;
pub use libdd_trace_protobuf::pb;
pub use otlp::{OtlpWriter, OtlpWriterConfig};
pub use pb_encode::{EncodedPayload, Part, PayloadMeta, SizeHint, encode_agent_payload_parts};
pub use spool::{SpoolConfig, SpoolDir};
pub use status::{DropReason, SignalStatus, WriterStatus};

/// Concurrency and queue bounds of one writer (traces or stats).
#[derive(Debug, Clone, PartialEq)]
pub struct WriterLimits {
    /// `connection_limit`: requests in flight at once (split across endpoints).
    pub connection_limit: usize,
    /// `queue_size`: payloads waiting to be sent, per endpoint.
    pub queue_size: usize,
    /// `max_queue_bytes`: estimated uncompressed bytes waiting to be sent, per endpoint.
    pub max_queue_bytes: usize,
}

/// Why a writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Writers spawn tasks: they must be started from within a tokio runtime.
    #[error("upstream writers must be started from within a tokio runtime")]
    NoRuntime,
    /// The Datadog writer needs `api_key` (`DD_API_KEY`).
    #[error("no API key: set api_key in datadog.yaml or DD_API_KEY to send to Datadog")]
    MissingApiKey,
    /// The API key cannot be sent as a header.
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey,
    /// An endpoint URL is not usable.
    #[error("invalid upstream URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// `url` as a request URI, or [`UpstreamError::InvalidUrl`] naming it.
pub(crate) fn parse_uri(url: &str) -> Result<::http::Uri, UpstreamError> {
    url.parse()
        .map_err(|e: ::http::uri::InvalidUri| UpstreamError::InvalidUrl {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

/// A boxed future returned by [`Upstream::shutdown`] (the trait stays object-safe).
pub type ShutdownFuture<'a> = Pin<Box<dyn Future<Output = WriterStatus> + Send + 'a>>;

/// A destination for kept traces and computed stats.
///
/// Implementations are shared (`Arc<dyn Upstream>`) between the pipeline sink, which calls
/// [`send_traces`](Upstream::send_traces)/[`send_stats`](Upstream::send_stats) from a blocking
/// thread, and `status`, which calls [`status`](Upstream::status) from anywhere.
pub trait Upstream: Send + Sync + std::fmt::Debug + 'static {
    /// Short name shown by `status`: `"datadog"`, `"otlp"`, `"local"`.
    fn name(&self) -> &str;

    /// Takes the kept chunks of one tracer payload (chunks the samplers dropped are already
    /// removed; `dropped_trace` chunks carry only single-span-sampled spans). Never blocks:
    /// enqueues, or drops and counts when the destination's queue is full.
    fn send_traces(&self, payload: Arc<pb::TracerPayload>);

    /// Whether the destination takes kept traces already encoded as protobuf
    /// ([`send_encoded_traces`](Upstream::send_encoded_traces)) rather than as `pb` types: the
    /// forwarding stage then encodes straight from the borrowed span model, and builds the
    /// owned `pb` copy only when some destination takes that. The default: `pb` types.
    fn takes_encoded_traces(&self) -> bool {
        false
    }

    /// Takes one tracer payload encoded as protobuf (see
    /// [`takes_encoded_traces`](Upstream::takes_encoded_traces)), from the forwarding stage's
    /// blocking thread. Unlike [`send_traces`](Upstream::send_traces) it **may block** for a
    /// bounded time when the destination is merely slower than its input (the Datadog writer:
    /// up to `enqueue_timeout` for room in its queue), so that a slow writer backs up into the
    /// pipeline and the receiver's 429s instead of evicting accepted data; never call it on a
    /// runtime worker. The default decodes it and calls `send_traces`.
    fn send_encoded_traces(&self, payload: Arc<EncodedPayload>) {
        self.send_traces(Arc::new(payload.to_pb()));
    }

    /// Takes one tracer payload in the borrowed span model, from the forwarding stage's
    /// blocking thread, for a destination that makes its own form of it there (the local
    /// store's rows): `true` when taken; the default `false` (the stage then hands over the
    /// owned `pb` copy with [`send_traces`](Upstream::send_traces)). Like
    /// [`send_encoded_traces`](Upstream::send_encoded_traces) it may block for a bounded time.
    fn send_borrowed_traces(&self, _payload: &crate::span::TracerPayload<'_>) -> bool {
        false
    }

    /// Takes one stats payload (a concentrator or client-stats flush). Never blocks. A
    /// destination that does not carry stats ignores it (and says so in its docs).
    fn send_stats(&self, payload: Arc<pb::StatsPayload>);

    /// Asks the destination to send what it has buffered now instead of at its next flush
    /// tick (e.g. `sync_flushing`, tests). Never blocks; the default does nothing.
    fn flush(&self) {}

    /// A copy of the destination's counters.
    fn status(&self) -> WriterStatus;

    /// Span ledger hook (`crate::ledger`): from now on, report per service what becomes of
    /// the spans handed over (delivered, spooled, dropped). The default reports nothing.
    fn attach_ledger(&self, _ledger: Arc<crate::ledger::Ledger>) {}

    /// How far behind the destination is (cheap: atomics and a lock or two, no I/O): the
    /// receiver refuses new payloads with 429 rather than accept what would be dropped. The
    /// default: never behind.
    fn pressure(&self) -> Pressure {
        Pressure::Normal
    }

    /// Signalled (`notify_waiters`) each time the destination frees room in its queue, so
    /// that a request held back by [`pressure`](Upstream::pressure) wakes at once instead of
    /// polling; `None` (the default): no such signal.
    fn room_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Flushes what is buffered and waits up to `timeout` for queued and in-flight payloads to
    /// be delivered; afterwards the destination accepts nothing more (later payloads are
    /// dropped with [`DropReason::Shutdown`]). Resolves to the final counters. Calling it twice
    /// is harmless.
    fn shutdown(&self, timeout: Duration) -> ShutdownFuture<'_>;
}

/// How far behind a writer is, for the receiver's push-back (see [`Upstream::pressure`]).
///
/// Tracers that ask for real status codes (`Datadog-Send-Real-Http-Status`, or the agent's
/// `429` feature) get 429 from [`Pressure::High`] on and retry later or count the payload as
/// dropped on their side; every tracer gets 429 at [`Pressure::Full`], where accepting would
/// mean dropping data we answered 200 for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Pressure {
    /// Room to spare.
    #[default]
    Normal,
    /// Queues more than half full (local store) or nearly full with a spool behind them.
    High,
    /// The next payloads would be dropped (queue and spool full).
    Full,
}

impl Pressure {
    /// Whether the receiver should refuse a payload, given whether the tracer asked for real
    /// status codes.
    pub fn refuse(self, real_status: bool) -> bool {
        match self {
            Self::Normal => false,
            Self::High => real_status,
            Self::Full => true,
        }
    }
}

/// The highest pressure among `writers`.
pub fn pressure_of(writers: &[Arc<dyn Upstream>]) -> Pressure {
    writers.iter().map(|w| w.pressure()).max().unwrap_or_default()
}
