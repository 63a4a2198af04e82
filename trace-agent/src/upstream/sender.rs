//! The sending machinery shared by every HTTP writer: a [`Channel`] per signal (traces, stats)
//! fans each [`Job`] out to one bounded queue per endpoint; per endpoint, `connection_limit`
//! worker tasks take jobs and send them with retries (spec 7.1).
//!
//! Per job: encode once (on a blocking thread; the bytes are shared by all endpoints), POST;
//! on a retriable failure (network, timeout, 408, 5xx) wait a full-jitter backoff and try
//! again, at most `max_retries` times, then drop ([`DropReason::RetriesExhausted`]); on any
//! other non-2xx drop at once ([`DropReason::Rejected`]). A 403 is logged once per endpoint
//! with the masked API key; other rejections once per endpoint and status.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use tokio::task::JoinHandle;

use super::backoff::{Attempts, Backoff};
use super::http::{HttpClient, Outcome};
use super::queue::{BoundedQueue, Push};
use super::{DropReason, SignalStatus};
use crate::config::mask;

/// An encoded request body.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// Compressed bytes.
    pub(crate) bytes: Bytes,
    /// Headers specific to this body (Content-Type, Content-Encoding, …).
    pub(crate) headers: HeaderMap,
}

/// Something a writer sends: knows its size and how to encode itself.
pub(crate) trait Payload: Send + Sync + 'static {
    /// Items inside (trace chunks, grouped stats), for the counters.
    fn items(&self) -> u64;
    /// Estimated uncompressed size, for the queue's byte bound.
    fn estimated_bytes(&self) -> usize;
    /// Encodes and compresses the body (CPU work: called on a blocking thread, once).
    fn encode(&self) -> Result<Body, String>;
}

/// A payload on its way, shared by the queues of all endpoints.
pub(crate) struct Job {
    payload: Box<dyn Payload>,
    body: OnceLock<Result<Body, String>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("items", &self.payload.items())
            .field("estimated_bytes", &self.payload.estimated_bytes())
            .finish()
    }
}

impl Job {
    pub(crate) fn new(payload: impl Payload) -> Arc<Self> {
        Arc::new(Self {
            payload: Box::new(payload),
            body: OnceLock::new(),
        })
    }

    /// The encoded body, encoding it on a blocking thread the first time.
    async fn body(self: &Arc<Self>) -> Result<Body, String> {
        if let Some(b) = self.body.get() {
            return b.clone();
        }
        let job = Arc::clone(self);
        tokio::task::spawn_blocking(move || job.body.get_or_init(|| job.payload.encode()).clone())
            .await
            .unwrap_or_else(|e| Err(format!("encoder task failed: {e}")))
    }
}

/// One destination of a channel: full URL and the headers of every request to it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Where to POST.
    pub(crate) uri: Uri,
    /// Headers of every request (API key, User-Agent, …).
    pub(crate) headers: HeaderMap,
    /// The API key, to mask it wherever it could appear (logs, response bodies).
    pub(crate) api_key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &self.uri)
            .field("api_key", &self.api_key.as_deref().map(mask))
            .finish()
    }
}

/// Settings of a channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelSettings {
    /// Signal name for logs: `"traces"`, `"stats"`.
    pub(crate) signal: &'static str,
    /// Writer name for logs: `"datadog"`, `"otlp"`.
    pub(crate) writer: &'static str,
    /// Total concurrent requests, split across endpoints (at least 1 each).
    pub(crate) connection_limit: usize,
    /// Queue bound per endpoint, in payloads.
    pub(crate) queue_size: usize,
    /// Queue bound per endpoint, in estimated bytes.
    pub(crate) max_queue_bytes: usize,
    /// Retries of a retriable failure.
    pub(crate) max_retries: u32,
    /// Retry delays.
    pub(crate) backoff: Backoff,
}

/// Counters of a channel (all endpoints together).
#[derive(Debug, Default)]
struct Counters {
    status: Mutex<SignalStatus>,
    in_flight: AtomicUsize,
    in_flight_items: AtomicU64,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, SignalStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn dropped(&self, reason: DropReason, payloads: u64, items: u64) {
        if payloads == 0 {
            return;
        }
        let mut s = self.lock();
        *s.dropped_payloads.entry(reason).or_default() += payloads;
        *s.dropped_items.entry(reason).or_default() += items;
    }
}

/// State of one endpoint.
#[derive(Debug)]
struct Lane {
    endpoint: Endpoint,
    queue: BoundedQueue<Arc<Job>>,
    attempts: Attempts,
    logged: Mutex<HashSet<u16>>,
}

/// Fan-out of jobs to the endpoints of one signal, with their worker tasks.
#[derive(Debug)]
pub(crate) struct Channel {
    settings: ChannelSettings,
    lanes: Vec<Arc<Lane>>,
    counters: Arc<Counters>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Channel {
    /// Starts `connection_limit` workers (split across `endpoints`) on the current runtime.
    pub(crate) fn start(settings: ChannelSettings, endpoints: Vec<Endpoint>, client: &HttpClient) -> Self {
        let counters = Arc::new(Counters::default());
        let per_lane = (settings.connection_limit / endpoints.len().max(1)).max(1);
        let lanes: Vec<Arc<Lane>> = endpoints
            .into_iter()
            .map(|endpoint| {
                Arc::new(Lane {
                    endpoint,
                    queue: BoundedQueue::new(settings.queue_size, settings.max_queue_bytes),
                    attempts: Attempts::default(),
                    logged: Mutex::new(HashSet::new()),
                })
            })
            .collect();
        let mut workers = Vec::new();
        for lane in &lanes {
            for _ in 0..per_lane {
                workers.push(tokio::spawn(worker(
                    settings.clone(),
                    Arc::clone(lane),
                    Arc::clone(&counters),
                    client.clone(),
                )));
            }
        }
        Self {
            settings,
            lanes,
            counters,
            workers: Mutex::new(workers),
        }
    }

    /// The endpoint URLs (no keys).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.endpoint.uri.to_string()).collect()
    }

    /// Queues `job` for every endpoint. Never blocks; evictions and refusals are counted.
    pub(crate) fn submit(&self, job: Arc<Job>) {
        let items = job.payload.items();
        let bytes = job.payload.estimated_bytes();
        for lane in &self.lanes {
            match lane.queue.push(Arc::clone(&job), bytes) {
                Push::Accepted { evicted } => {
                    if !evicted.is_empty() {
                        let n = evicted.len() as u64;
                        let items: u64 = evicted.iter().map(|j| j.payload.items()).sum();
                        self.counters.dropped(DropReason::QueueFull, n, items);
                        self.log_once(lane, 0, || {
                            format!(
                                "{} {} queue to {} is full ({} payloads / {} bytes): dropping the oldest payloads \
                                 (counted as queue_full)",
                                self.settings.writer,
                                self.settings.signal,
                                lane.endpoint.uri,
                                self.settings.queue_size,
                                self.settings.max_queue_bytes
                            )
                        });
                    }
                }
                Push::TooLarge(_) => self.counters.dropped(DropReason::TooLarge, 1, items),
                Push::Closed(_) => self.counters.dropped(DropReason::Shutdown, 1, items),
            }
        }
    }

    /// Counts a payload dropped before reaching the queues.
    pub(crate) fn count_dropped(&self, reason: DropReason, items: u64) {
        self.counters.dropped(reason, 1, items);
    }

    fn log_once(&self, lane: &Lane, key: u16, message: impl FnOnce() -> String) {
        let first = lane
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
        if first {
            tracing::warn!("{}", message());
        }
    }

    /// A copy of the counters, with the current queue depths.
    pub(crate) fn status(&self) -> SignalStatus {
        let mut s = self.counters.lock().clone();
        for lane in &self.lanes {
            let (n, b) = lane.queue.depth();
            let (cn, cb) = lane.queue.capacity();
            s.queue_depth += n;
            s.queue_bytes += b;
            s.queue_capacity += cn;
            s.queue_capacity_bytes += cb;
        }
        s.in_flight = self.counters.in_flight.load(Ordering::Relaxed);
        s
    }

    /// Stops accepting, lets the workers drain the queues until `deadline`, then stops them
    /// and counts what is left (queued or in flight) as dropped with [`DropReason::Shutdown`].
    pub(crate) async fn shutdown(&self, deadline: tokio::time::Instant) {
        for lane in &self.lanes {
            lane.queue.close();
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for w in workers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            for a in &aborts {
                a.abort();
            }
            // Aborted workers never decrement: what they held is lost.
            let n = self.counters.in_flight.swap(0, Ordering::Relaxed) as u64;
            let items = self.counters.in_flight_items.swap(0, Ordering::Relaxed);
            self.counters.dropped(DropReason::Shutdown, n, items);
            tracing::warn!(
                "{} {}: shutdown timeout reached with payloads still queued or in flight; dropping them",
                self.settings.writer,
                self.settings.signal
            );
        }
        for lane in &self.lanes {
            let left = lane.queue.drain();
            let items = left.iter().map(|j| j.payload.items()).sum();
            self.counters.dropped(DropReason::Shutdown, left.len() as u64, items);
        }
    }
}

async fn worker(settings: ChannelSettings, lane: Arc<Lane>, counters: Arc<Counters>, client: HttpClient) {
    while let Some(job) = lane.queue.pop().await {
        let items = job.payload.items();
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        counters.in_flight_items.fetch_add(items, Ordering::Relaxed);
        send(&settings, &lane, &counters, &client, &job).await;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        counters.in_flight_items.fetch_sub(items, Ordering::Relaxed);
    }
}

/// Sends one job to one endpoint, with retries; records the result.
async fn send(settings: &ChannelSettings, lane: &Lane, counters: &Counters, client: &HttpClient, job: &Arc<Job>) {
    let items = job.payload.items();
    let body = match job.body().await {
        Ok(b) => b,
        Err(e) => {
            counters.dropped(DropReason::Encode, 1, items);
            tracing::warn!(
                "{} {}: payload could not be encoded, dropped: {e}",
                settings.writer,
                settings.signal
            );
            return;
        }
    };
    let mut headers = lane.endpoint.headers.clone();
    headers.extend(body.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let masked = |s: &str| match &lane.endpoint.api_key {
        Some(k) if !k.is_empty() => s.replace(k.as_str(), &mask(k)),
        _ => s.to_owned(),
    };
    let mut retries = 0u32;
    loop {
        let outcome = client.post(&lane.endpoint.uri, &headers, body.bytes.clone()).await;
        let now = SystemTime::now();
        match outcome {
            Outcome::Success => {
                lane.attempts.success();
                let mut s = counters.lock();
                s.payloads_sent += 1;
                s.items_sent += items;
                s.bytes_sent += body.bytes.len() as u64;
                s.last_success = Some(now);
                return;
            }
            Outcome::Retriable { cause, message } => {
                let message = masked(&message);
                {
                    let mut s = counters.lock();
                    *s.failures.entry(cause).or_default() += 1;
                    s.last_error = Some((now, format!("{}: {message}", lane.endpoint.uri)));
                }
                if retries >= settings.max_retries {
                    counters.dropped(DropReason::RetriesExhausted, 1, items);
                    tracing::warn!(
                        "{} {}: failed to send to {} after {} retries, dropping {items} items: {message}",
                        settings.writer,
                        settings.signal,
                        lane.endpoint.uri,
                        settings.max_retries
                    );
                    return;
                }
                retries += 1;
                counters.lock().retries += 1;
                let attempt = lane.attempts.retry();
                let delay = settings.backoff.delay(attempt, fastrand::f64());
                tracing::debug!(
                    "{} {}: {} failed ({message}); retry {retries} in {delay:?}",
                    settings.writer,
                    settings.signal,
                    lane.endpoint.uri
                );
                tokio::time::sleep(delay).await;
            }
            Outcome::Rejected { status, body: text } => {
                let text = masked(&text);
                {
                    let mut s = counters.lock();
                    *s.failures.entry(status.as_u16().to_string()).or_default() += 1;
                    s.last_error = Some((now, format!("{}: HTTP {status}: {text}", lane.endpoint.uri)));
                }
                counters.dropped(DropReason::Rejected, 1, items);
                let first = lane
                    .logged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(status.as_u16());
                if first {
                    if status == StatusCode::FORBIDDEN {
                        let key = lane
                            .endpoint
                            .api_key
                            .as_deref()
                            .map_or_else(|| "(none)".to_owned(), mask);
                        tracing::error!(
                            "{} {}: {} answered 403 Forbidden: the API key {key} is invalid or not allowed; \
                             payloads to it are dropped (logged once): {text}",
                            settings.writer,
                            settings.signal,
                            lane.endpoint.uri
                        );
                    } else {
                        tracing::warn!(
                            "{} {}: {} rejected a payload with HTTP {status}, dropped without retry (logged once \
                             per status): {text}",
                            settings.writer,
                            settings.signal,
                            lane.endpoint.uri
                        );
                    }
                }
                return;
            }
        }
    }
}

/// Builds a header value, or `None` when `value` has characters a header cannot carry.
pub(crate) fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

/// Deadline `timeout` from now.
pub(crate) fn deadline(timeout: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout
}
