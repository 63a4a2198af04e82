//! The Datadog intake writer (spec 7.2, 7.3).
//!
//! * **Traces**: tracer payloads are batched (flush every `flush_period_seconds`, default 5 s,
//!   or as soon as the estimated size would pass 3.2 MB) and POSTed as one protobuf
//!   `AgentPayload` (`hostName`, `env`, `tracerPayloads`, `tags`, `agentVersion`, `targetTPS`,
//!   `errorTPS`, `rareSamplerEnabled`) to `<url>/api/v0.2/traces`, `Content-Type:
//!   application/x-protobuf`, **`Content-Encoding: zstd`** (level 1), which is what the
//!   current Go trace-agent sends (older agents used gzip; the intake accepts both).
//! * **Stats**: each `StatsPayload` is POSTed when handed over, as msgpack with the Go agent's
//!   PascalCase field names (the serde renames of `libdd-trace-protobuf`), **gzip** (fastest
//!   level), `Content-Type: application/msgpack`, to `<url>/api/v0.2/stats`.
//! * Every request: `DD-Api-Key`, `User-Agent: Datadog Trace Agent/<version>/<commit>`;
//!   traces also `X-Datadog-Reported-Languages: <sorted languages seen>|…`.
//! * Every payload goes to the main endpoint and to each `additional_endpoints` (URL, key)
//!   pair; `connection_limit` is split across them; each has its own bounded queue.
//!
//! Retries, queue bounds and drop rules: see [`super`] ("Sending").

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use prost::Message;
use tokio::sync::Notify;

use super::WriterLimits;
use super::backoff::Backoff;
use super::batch::{BatchMeta, EncodedBatch, EncodedBatcher, TickerSlot, spawn_ticker};
use super::http::HttpClient;
pub use super::pb_encode::encode_agent_payload;
use super::pb_encode::{EncodedPayload, Part, encode_agent_payload_parts};
use super::sender::{self, Body, Channel, ChannelSettings, Endpoint, Job, Payload};
use super::{DropReason, ShutdownFuture, Upstream, UpstreamError, WriterStatus, pb};
use crate::secret::Secret;

/// Path of the trace intake.
pub const TRACES_PATH: &str = "/api/v0.2/traces";
/// Path of the stats intake.
pub const STATS_PATH: &str = "/api/v0.2/stats";
/// Default [`DatadogWriterConfig::enqueue_timeout`]: the request timeout, so a writer that
/// keeps up (even slowly) never evicts what it accepted.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most distinct languages listed in `X-Datadog-Reported-Languages`.
const MAX_LANGUAGES: usize = 32;

/// One intake destination: base URL (`https://trace.agent.datadoghq.com`) and API key.
#[derive(Debug, Clone, PartialEq)]
pub struct DatadogEndpoint {
    /// Base URL, without the `/api/...` path.
    pub url: String,
    /// API key sent as `DD-Api-Key`.
    pub api_key: Secret,
}

/// Configuration of a [`DatadogWriter`].
#[derive(Debug, Clone)]
pub struct DatadogWriterConfig {
    /// The main endpoint first, then the additional ones.
    pub endpoints: Vec<DatadogEndpoint>,
    /// `AgentPayload.hostName` and stats `AgentHostname`.
    pub hostname: String,
    /// `AgentPayload.env` and stats `AgentEnv` (the agent's default env).
    pub env: String,
    /// `AgentPayload.agentVersion`, stats `AgentVersion`, and in the User-Agent.
    pub agent_version: String,
    /// Git commit in the User-Agent.
    pub git_commit: String,
    /// `AgentPayload.tags`.
    pub tags: HashMap<String, String>,
    /// `AgentPayload.targetTPS` (priority sampler target).
    pub target_tps: f64,
    /// `AgentPayload.errorTPS`.
    pub error_tps: f64,
    /// `AgentPayload.rareSamplerEnabled`.
    pub rare_sampler_enabled: bool,
    /// Retries of a retriable failure (`max_sender_retries`).
    pub max_retries: u32,
    /// Trace sender limits.
    pub traces: WriterLimits,
    /// Stats sender limits.
    pub stats: WriterLimits,
    /// How long tracer payloads are batched.
    pub flush_period: Duration,
    /// Largest estimated batch (3.2 MB).
    pub max_batch_bytes: usize,
    /// Per-request timeout (10 s).
    pub request_timeout: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// Where undeliverable payloads go (`apm_config.spool`); `None`: dropped and counted.
    pub spool: Option<Arc<crate::upstream::SpoolDir>>,
    /// How long the forwarding stage waits for room when the trace queue to a healthy
    /// endpoint is full, before the oldest queued payload is evicted (see
    /// [`Upstream::send_encoded_traces`]); zero: never waits.
    pub enqueue_timeout: Duration,
}

/// Sends kept traces and stats to the Datadog intake. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DatadogWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    header: Arc<pb::AgentPayload>,
    agent_hostname: String,
    agent_env: String,
    agent_version: String,
    batcher: EncodedBatcher,
    traces: Channel,
    stats: Channel,
    languages: Mutex<BTreeSet<String>>,
    closed: AtomicBool,
    enqueue_timeout: Duration,
    wake: Arc<Notify>,
    ticker: TickerSlot,
}

fn endpoint(base: &DatadogEndpoint, path: &str, user_agent: &HeaderValue) -> Result<Endpoint, UpstreamError> {
    let full = format!("{}{path}", base.url.trim_end_matches('/'));
    let uri = super::parse_uri(&full)?;
    let mut headers = HeaderMap::new();
    let mut key = HeaderValue::from_str(base.api_key.expose()).map_err(|_| UpstreamError::InvalidApiKey)?;
    key.set_sensitive(true);
    headers.insert("dd-api-key", key);
    headers.insert(http::header::USER_AGENT, user_agent.clone());
    Ok(Endpoint {
        uri,
        headers,
        api_key: Some(base.api_key.expose().to_owned()),
    })
}

impl DatadogWriter {
    /// Starts the writer's tasks on the current tokio runtime.
    ///
    /// # Errors
    /// No runtime, no endpoint, an invalid URL or API key, or a TLS setup failure.
    pub fn start(config: DatadogWriterConfig) -> Result<Self, UpstreamError> {
        tokio::runtime::Handle::try_current().map_err(|_| UpstreamError::NoRuntime)?;
        if config.endpoints.is_empty() {
            return Err(UpstreamError::MissingApiKey);
        }
        let user_agent = HeaderValue::from_str(&format!(
            "Datadog Trace Agent/{}/{}",
            config.agent_version, config.git_commit
        ))
        .map_err(|_| UpstreamError::InvalidUrl {
            url: String::new(),
            message: "agent version or commit has characters a header cannot carry".to_owned(),
        })?;
        let mut trace_endpoints = Vec::new();
        let mut stats_endpoints = Vec::new();
        for e in &config.endpoints {
            trace_endpoints.push(endpoint(e, TRACES_PATH, &user_agent)?);
            stats_endpoints.push(endpoint(e, STATS_PATH, &user_agent)?);
        }
        let client = HttpClient::new(config.request_timeout)?;
        let settings = |signal, l: &WriterLimits| ChannelSettings {
            signal,
            writer: "datadog",
            connection_limit: l.connection_limit,
            queue_size: l.queue_size,
            max_queue_bytes: l.max_queue_bytes,
            max_retries: config.max_retries,
            backoff: config.backoff,
        };
        let spool = config.spool.as_ref();
        let traces = Channel::start(settings("traces", &config.traces), trace_endpoints, &client, spool);
        let stats = Channel::start(settings("stats", &config.stats), stats_endpoints, &client, spool);
        let header = pb::AgentPayload {
            host_name: config.hostname.clone(),
            env: config.env.clone(),
            tracer_payloads: Vec::new(),
            tags: config.tags.clone(),
            agent_version: config.agent_version.clone(),
            target_tps: config.target_tps,
            error_tps: config.error_tps,
            rare_sampler_enabled: config.rare_sampler_enabled,
            idx_tracer_payloads: Vec::new(),
        };
        let inner = Arc::new(Inner {
            header: Arc::new(header),
            agent_hostname: config.hostname,
            agent_env: config.env,
            agent_version: config.agent_version,
            batcher: EncodedBatcher::new(config.max_batch_bytes),
            traces,
            stats,
            languages: Mutex::new(BTreeSet::new()),
            closed: AtomicBool::new(false),
            enqueue_timeout: config.enqueue_timeout,
            wake: Arc::new(Notify::new()),
            ticker: TickerSlot::default(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let ticker = spawn_ticker(config.flush_period, Arc::clone(&inner.wake), move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            // The flush tick cannot wait for room (it runs on the runtime): while the queue to
            // a healthy endpoint is full, the batch stays pending (and keeps filling).
            if let Some(batch) = inner.batcher.take_if(|m| inner.traces.has_room(m.bytes)) {
                inner.submit_batch(batch, false);
            }
            !inner.closed.load(Ordering::Acquire)
        });
        inner.ticker.set(ticker);
        Ok(Self { inner })
    }
}

impl Inner {
    /// Queues a sealed batch; with `wait`, first waits for room (see
    /// [`Channel::submit_waiting`]).
    fn submit_batch(&self, batch: EncodedBatch, wait: bool) {
        let languages = {
            let langs = self.languages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            langs.iter().cloned().collect::<Vec<_>>().join("|")
        };
        let job = Job::new(TracesJob {
            header: Arc::clone(&self.header),
            meta: batch.meta,
            parts: Mutex::new(Some(batch.parts)),
            languages,
            ledger: batch.ledger,
        });
        let deadline =
            (wait && !self.enqueue_timeout.is_zero()).then(|| std::time::Instant::now() + self.enqueue_timeout);
        self.traces.submit_waiting(job, deadline);
    }

    /// Batches one encoded tracer payload (the `Upstream` entry points end here); `wait`: may
    /// block the calling thread for room in the queue.
    fn add(&self, payload: Arc<EncodedPayload>, wait: bool) {
        if self.closed.load(Ordering::Acquire) {
            self.traces.count_dropped(DropReason::Shutdown, payload.chunks() as u64);
            return;
        }
        if payload.chunks() == 0 {
            return;
        }
        let lang = &payload.meta.language_name;
        if !lang.is_empty() {
            let mut langs = self.languages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if langs.len() < MAX_LANGUAGES && !langs.contains(lang) {
                langs.insert(lang.clone());
            }
        }
        for batch in self.batcher.add(payload) {
            self.submit_batch(batch, wait);
        }
    }
}

/// One `AgentPayload` to encode: chunk ranges of encoded tracer payloads, released once the
/// body is encoded (the queue then holds only the compressed bytes).
struct TracesJob {
    header: Arc<pb::AgentPayload>,
    meta: BatchMeta,
    parts: Mutex<Option<Vec<Part>>>,
    languages: String,
    /// Settled when the job is dropped: delivered, spooled or dropped (`ledger::Ticket`).
    ledger: crate::ledger::Ticket,
}

impl Payload for TracesJob {
    fn on_delivered(&self) {
        self.ledger.delivered();
    }

    fn on_spooled(&self) {
        self.ledger.spooled();
    }

    fn items(&self) -> u64 {
        self.meta.chunks
    }

    fn estimated_bytes(&self) -> usize {
        self.meta.bytes
    }

    fn encode(&self) -> Result<Body, String> {
        let parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| "batch already encoded".to_owned())?;
        let mut raw = Vec::new();
        encode_agent_payload_parts(&self.header, &parts, &mut raw);
        drop(parts);
        let bytes = zstd::bulk::compress(&raw, 1).map_err(|e| format!("zstd: {e}"))?;
        let mut body = Body::new(bytes, "application/x-protobuf", "zstd");
        if let Some((k, v)) = sender::header("x-datadog-reported-languages", &self.languages) {
            body.headers.insert(k, v);
        }
        Ok(body)
    }
}

/// One `StatsPayload` to encode.
struct StatsJob {
    payload: Arc<pb::StatsPayload>,
    groups: u64,
    estimated: usize,
}

impl Payload for StatsJob {
    fn items(&self) -> u64 {
        self.groups
    }

    fn estimated_bytes(&self) -> usize {
        self.estimated
    }

    fn encode(&self) -> Result<Body, String> {
        Body::gzip(&encode_stats_payload(&self.payload)?, "application/msgpack")
    }
}

/// A `StatsPayload` as msgpack with the Go agent's field names (`AgentHostname`, `Stats`,
/// `HTTPStatusCode`, `OkSummary` as bin, …).
///
/// # Errors
/// The serializer's message (not expected for these types).
pub fn encode_stats_payload(p: &pb::StatsPayload) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(p).map_err(|e| format!("msgpack: {e}"))
}

impl Upstream for DatadogWriter {
    fn name(&self) -> &str {
        "datadog"
    }

    fn send_traces(&self, payload: Arc<pb::TracerPayload>) {
        self.inner.add(Arc::new(EncodedPayload::from_pb(&payload)), false);
    }

    fn takes_encoded_traces(&self) -> bool {
        true
    }

    /// Called by the forwarding stage on its own (blocking) thread: when the queue to a healthy
    /// endpoint is full, waits up to `enqueue_timeout` for room — push-back through the
    /// pipeline to 429s — rather than evict what was accepted. ([`Upstream::send_traces`]
    /// never waits.)
    fn send_encoded_traces(&self, payload: Arc<EncodedPayload>) {
        self.inner.add(payload, true);
    }

    fn attach_ledger(&self, ledger: Arc<crate::ledger::Ledger>) {
        self.inner.batcher.attach_ledger(ledger, "datadog");
    }

    fn send_stats(&self, payload: Arc<pb::StatsPayload>) {
        let inner = &self.inner;
        let groups: u64 = payload
            .stats
            .iter()
            .flat_map(|c| &c.stats)
            .map(|b| b.stats.len() as u64)
            .sum();
        if inner.closed.load(Ordering::Acquire) {
            inner.stats.count_dropped(DropReason::Shutdown, groups);
            return;
        }
        let payload = if payload.agent_hostname.is_empty() && payload.agent_version.is_empty() {
            let mut p = (*payload).clone();
            p.agent_hostname.clone_from(&inner.agent_hostname);
            p.agent_env.clone_from(&inner.agent_env);
            p.agent_version.clone_from(&inner.agent_version);
            Arc::new(p)
        } else {
            payload
        };
        let estimated = payload.encoded_len();
        inner.stats.submit(Job::new(StatsJob {
            payload,
            groups,
            estimated,
        }));
    }

    fn flush(&self) {
        self.inner.wake.notify_one();
    }

    fn pressure(&self) -> crate::upstream::Pressure {
        self.inner.traces.pressure().max(self.inner.stats.pressure())
    }

    fn status(&self) -> WriterStatus {
        WriterStatus {
            name: "datadog".to_owned(),
            endpoints: self
                .inner
                .traces
                .urls()
                .into_iter()
                .chain(self.inner.stats.urls())
                .collect(),
            traces: self.inner.traces.status(),
            stats: self.inner.stats.status(),
        }
    }

    fn shutdown(&self, timeout: Duration) -> ShutdownFuture<'_> {
        Box::pin(async move {
            let inner = &self.inner;
            let deadline = sender::deadline(timeout);
            inner.closed.store(true, Ordering::Release);
            inner.ticker.stop();
            if let Some(batch) = inner.batcher.take() {
                inner.submit_batch(batch, false);
            }
            tokio::join!(inner.traces.shutdown(deadline), inner.stats.shutdown(deadline));
            // A payload that raced the closing flag into the batcher.
            if let Some(late) = inner.batcher.take() {
                inner.traces.count_dropped(DropReason::Shutdown, late.meta.chunks);
            }
            self.status()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use prost::Message;

    use super::*;

    /// A loopback intake answering 202 after `latency`: counts the trace chunks it received
    /// and the most requests it held at once.
    #[derive(Default)]
    struct SlowIntake {
        chunks: AtomicU64,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    async fn slow_intake(latency: Duration) -> (Arc<SlowIntake>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(SlowIntake::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let st = Arc::clone(&st);
                        async move {
                            let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            st.max_in_flight.fetch_max(now, Ordering::SeqCst);
                            let traces = req.uri().path() == TRACES_PATH;
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            tokio::time::sleep(latency).await;
                            if traces {
                                let raw = zstd::decode_all(&body[..]).unwrap_or_default();
                                let p = pb::AgentPayload::decode(raw.as_slice()).unwrap_or_default();
                                let n: usize = p.tracer_payloads.iter().map(|t| t.chunks.len()).sum();
                                st.chunks.fetch_add(n as u64, Ordering::SeqCst);
                            }
                            st.in_flight.fetch_sub(1, Ordering::SeqCst);
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                            *r.status_mut() = http::StatusCode::ACCEPTED;
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (state, url)
    }

    fn config(url: &str, enqueue_timeout: Duration) -> DatadogWriterConfig {
        let mut c = crate::config::AgentConfig::local(0);
        c.api_key = Some(Secret::new("0123456789abcdef0123456789abcdef"));
        c.hostname = "h".to_owned();
        c.upstream.apm_dd_url = Some(url.to_owned());
        let mut w = crate::config::compile::datadog_writer(&c).unwrap();
        w.traces.connection_limit = 4;
        w.traces.queue_size = 4;
        w.flush_period = Duration::from_millis(50);
        w.enqueue_timeout = enqueue_timeout;
        w.backoff = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        w
    }

    /// 20 one-span chunks: one batch per payload with `max_batch_bytes` set to its size.
    fn payload(id: u64) -> Arc<EncodedPayload> {
        let span = |i| pb::Span {
            service: "svc".to_owned(),
            name: "op".to_owned(),
            resource: "GET /".to_owned(),
            trace_id: id * 100 + i,
            span_id: i + 1,
            duration: 1,
            ..Default::default()
        };
        Arc::new(EncodedPayload::from_pb(&pb::TracerPayload {
            language_name: "python".to_owned(),
            chunks: (0..20)
                .map(|i| pb::TraceChunk {
                    priority: 1,
                    spans: vec![span(i)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    }

    /// Feeds `n` payloads from a plain thread, as the forwarding stage does, as fast as the
    /// writer takes them; then waits until the intake has `n × 20` chunks or `limit` passed.
    async fn saturate(enqueue_timeout: Duration, n: u64) -> (Arc<SlowIntake>, WriterStatus) {
        let (intake, url) = slow_intake(Duration::from_millis(20)).await;
        let mut cfg = config(&url, enqueue_timeout);
        cfg.max_batch_bytes = payload(0).message_len(0..20);
        let writer = DatadogWriter::start(cfg).unwrap();
        let w = writer.clone();
        tokio::task::spawn_blocking(move || {
            for id in 0..n {
                w.send_encoded_traces(payload(id));
            }
        })
        .await
        .unwrap();
        writer.flush();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = writer.status().traces;
            let dropped: u64 = s.dropped_items.values().sum();
            if s.items_sent + dropped >= n * 20 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = writer.shutdown(Duration::from_secs(5)).await;
        (intake, status)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_saturation_everything_accepted_is_delivered_by_concurrent_senders() {
        let (intake, status) = saturate(Duration::from_secs(10), 60).await;
        let t = &status.traces;
        assert!(t.dropped_items.is_empty(), "{t:?}");
        assert_eq!(t.items_sent, 1200);
        assert!(t.payloads_sent < 80, "batches stay full: {} requests", t.payloads_sent);
        assert_eq!(intake.chunks.load(Ordering::SeqCst), 1200);
        let max = intake.max_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&max),
            "{max} requests in flight at most (connection_limit 4)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_waiting_a_full_queue_evicts_what_was_accepted() {
        // The same load, with the forwarding stage never waiting: the queue of 4 overflows.
        let (intake, status) = saturate(Duration::ZERO, 60).await;
        let t = &status.traces;
        let evicted = t.dropped_items.get(&DropReason::QueueFull).copied().unwrap_or(0);
        assert!(evicted > 0, "{t:?}");
        assert_eq!(intake.chunks.load(Ordering::SeqCst) + evicted, 1200);
    }
}
