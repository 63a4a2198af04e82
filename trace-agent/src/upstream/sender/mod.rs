//! The sending machinery shared by every HTTP writer: a [`Channel`] per signal (traces, stats)
//! fans each [`Job`] out to one bounded queue per endpoint; per endpoint, `connection_limit`
//! worker tasks take jobs and send them with retries (spec 7.1).
//!
//! Per job: encode once (on a blocking thread; the bytes are shared by all endpoints), POST;
//! on a retriable failure (network, timeout, 408, 5xx) wait a full-jitter backoff and try
//! again, at most `max_retries` times, then drop ([`DropReason::RetriesExhausted`]); on any
//! other non-2xx drop at once ([`DropReason::Rejected`]). A 403 is logged once per endpoint
//! with the masked API key; other rejections once per endpoint and status.
//!
//! With a spool ([`super::spool`]), what would be lost is written there instead (per endpoint):
//! payloads evicted from a full queue, payloads whose retries ran out, and at shutdown what is
//! still queued or in flight when the deadline passes. Each lane replays its spool, oldest
//! first, while its queue is less than half full and its last request succeeded (so at once
//! after a start, and again after an outage).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use tokio::task::JoinHandle;

use super::backoff::{Attempts, Backoff};
use super::http::{HttpClient, Outcome};
use super::queue::{BoundedQueue, Push};
use super::spool::{Record, RecordKind, SpoolDir, SpoolLane};
use super::{DropReason, Pressure, SignalStatus};
use crate::secret::mask;

mod send;
mod spooling;
use send::worker;
use spooling::{replay, spool_jobs};

/// An encoded request body.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// Compressed bytes.
    pub(crate) bytes: Bytes,
    /// Headers specific to this body (Content-Type, Content-Encoding, …).
    pub(crate) headers: HeaderMap,
}

impl Body {
    /// `bytes` compressed with `encoding`, of type `content_type`.
    pub(crate) fn new(bytes: Vec<u8>, content_type: &'static str, encoding: &'static str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        Self {
            bytes: Bytes::from(bytes),
            headers,
        }
    }

    /// `raw` gzip-compressed (fast level), of type `content_type`.
    pub(crate) fn gzip(raw: &[u8], content_type: &'static str) -> Result<Self, String> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
        gz.write_all(raw).map_err(|e| format!("gzip: {e}"))?;
        let bytes = gz.finish().map_err(|e| format!("gzip: {e}"))?;
        Ok(Self::new(bytes, content_type, "gzip"))
    }
}

/// Something a writer sends: knows its size and how to encode itself.
pub(crate) trait Payload: Send + Sync + 'static {
    /// Items inside (trace chunks, grouped stats), for the counters.
    fn items(&self) -> u64;
    /// Estimated uncompressed size, for the queue's byte bound.
    fn estimated_bytes(&self) -> usize;
    /// Encodes and compresses the body (CPU work: called on a blocking thread, once).
    fn encode(&self) -> Result<Body, String>;
    /// Span ledger hook: an endpoint answered 2xx.
    fn on_delivered(&self) {}
    /// Span ledger hook: the payload went to the spool.
    fn on_spooled(&self) {}
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

    /// A job whose body is already encoded (a spooled payload).
    pub(crate) fn encoded(items: u64, body: Body) -> Arc<Self> {
        let estimated = body.bytes.len();
        let job = Self {
            payload: Box::new(Encoded { items, estimated }),
            body: OnceLock::new(),
        };
        let _ = job.body.set(Ok(body));
        Arc::new(job)
    }

    /// The encoded body, encoding it on the calling thread the first time (blocking).
    fn body_blocking(&self) -> Result<Body, String> {
        self.body.get_or_init(|| self.payload.encode()).clone()
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

/// A payload read back from the spool: its body is set at construction.
struct Encoded {
    items: u64,
    estimated: usize,
}

impl Payload for Encoded {
    fn items(&self) -> u64 {
        self.items
    }

    fn estimated_bytes(&self) -> usize {
        self.estimated
    }

    fn encode(&self) -> Result<Body, String> {
        Err("spooled payload without its body".to_owned())
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

    fn spooled(&self, payloads: u64, items: u64) {
        let mut s = self.lock();
        s.spooled_payloads += payloads;
        s.spooled_items += items;
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
    /// Where this endpoint's undeliverable payloads go.
    spool: Option<SpoolLane>,
    /// Jobs being sent by the workers, by a per-lane id (spooled if shutdown aborts them).
    in_flight: Mutex<HashMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    /// The last request to this endpoint succeeded (or none was made yet): replay the spool.
    healthy: AtomicBool,
}

/// Log keys of [`Channel::log_once`] that are not HTTP statuses.
const LOG_QUEUE_FULL: u16 = 0;
const LOG_SPOOL_FAILED: u16 = 1;

/// Fan-out of jobs to the endpoints of one signal, with their worker tasks.
#[derive(Debug)]
pub(crate) struct Channel {
    settings: ChannelSettings,
    lanes: Vec<Arc<Lane>>,
    counters: Arc<Counters>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    replayers: Mutex<Vec<JoinHandle<()>>>,
    spool: Option<Arc<SpoolDir>>,
    runtime: tokio::runtime::Handle,
}

/// A stable short name of a URL for a spool lane (FNV-1a; the URL itself may be long).
fn url_hash(url: &str) -> u64 {
    url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Channel {
    /// Starts `connection_limit` workers (split across `endpoints`) on the current runtime, and,
    /// with a `spool`, one replay task per endpoint.
    pub(crate) fn start(
        settings: ChannelSettings,
        endpoints: Vec<Endpoint>,
        client: &HttpClient,
        spool: Option<&Arc<SpoolDir>>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let per_lane = (settings.connection_limit / endpoints.len().max(1)).max(1);
        let lanes: Vec<Arc<Lane>> = endpoints
            .into_iter()
            .map(|endpoint| {
                let spool = spool.map(|d| {
                    d.lane(&format!(
                        "{}-{}-{:016x}",
                        settings.writer,
                        settings.signal,
                        url_hash(&endpoint.uri.to_string())
                    ))
                });
                Arc::new(Lane {
                    endpoint,
                    queue: BoundedQueue::new(settings.queue_size, settings.max_queue_bytes),
                    attempts: Attempts::default(),
                    logged: Mutex::new(HashSet::new()),
                    spool,
                    in_flight: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        let mut workers = Vec::new();
        let mut replayers = Vec::new();
        for lane in &lanes {
            for _ in 0..per_lane {
                workers.push(tokio::spawn(worker(
                    settings.clone(),
                    Arc::clone(lane),
                    Arc::clone(&counters),
                    client.clone(),
                )));
            }
            if lane.spool.is_some() {
                replayers.push(tokio::spawn(replay(
                    settings.clone(),
                    Arc::clone(lane),
                    Arc::clone(&counters),
                )));
            }
        }
        Self {
            settings,
            lanes,
            counters,
            workers: Mutex::new(workers),
            replayers: Mutex::new(replayers),
            spool: spool.cloned(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// How full the queues are: [`Pressure::High`] when one is at 90 % (in payloads or bytes)
    /// and a spool takes the overflow; [`Pressure::Full`] when one is at 90 % and nothing can
    /// take the overflow (no spool, or a spool at 90 %).
    pub(crate) fn pressure(&self) -> Pressure {
        let high = self.lanes.iter().any(|l| {
            let (n, b) = l.queue.depth();
            let (cn, cb) = l.queue.capacity();
            n * 10 >= cn * 9 || b.saturating_mul(10) >= cb.saturating_mul(9)
        });
        match (high, &self.spool) {
            (false, _) => Pressure::Normal,
            (true, Some(s)) if !s.nearly_full() => Pressure::High,
            (true, _) => Pressure::Full,
        }
    }

    /// The endpoint URLs (no keys).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.endpoint.uri.to_string()).collect()
    }

    /// Queues `job` for every endpoint. Never blocks; evicted payloads go to the spool (on a
    /// blocking thread) or are counted as dropped, refusals are counted.
    pub(crate) fn submit(&self, job: Arc<Job>) {
        self.submit_waiting(job, None);
    }

    /// [`submit`](Self::submit), but first waits (blocking the calling thread, until `deadline`)
    /// for room in the queue of every endpoint whose last request succeeded: a writer that is
    /// merely slower than its input pushes back on its caller (the forwarding stage, whose
    /// stall backs up into the pipeline and 429s) instead of evicting what it accepted. An
    /// endpoint that is failing does not hold the caller: its queue evicts (to the spool) as
    /// before. Never call it with a deadline on a runtime worker thread.
    pub(crate) fn submit_waiting(&self, job: Arc<Job>, deadline: Option<std::time::Instant>) {
        let items = job.payload.items();
        let bytes = job.payload.estimated_bytes();
        for lane in &self.lanes {
            if let Some(deadline) = deadline
                && lane.healthy.load(Ordering::Relaxed)
                && !lane.queue.wait_for_room(bytes, deadline)
            {
                self.counters.lock().enqueue_timeouts += 1;
            }
            match lane.queue.push(Arc::clone(&job), bytes) {
                Push::Accepted { evicted } => {
                    if !evicted.is_empty() {
                        self.log_once(lane, LOG_QUEUE_FULL, || {
                            format!(
                                "{} {} queue to {} is full ({} payloads / {} bytes): the oldest payloads are {} \
                                 (see trace-agent status)",
                                self.settings.writer,
                                self.settings.signal,
                                lane.endpoint.uri,
                                self.settings.queue_size,
                                self.settings.max_queue_bytes,
                                if lane.spool.is_some() {
                                    "spooled to disk"
                                } else {
                                    "dropped (queue_full)"
                                }
                            )
                        });
                        if lane.spool.is_some() {
                            let (settings, lane, counters) =
                                (self.settings.clone(), Arc::clone(lane), Arc::clone(&self.counters));
                            self.runtime.spawn_blocking(move || {
                                spool_jobs(&settings, &lane, &counters, evicted, DropReason::QueueFull);
                            });
                        } else {
                            let n = evicted.len() as u64;
                            let items: u64 = evicted.iter().map(|j| j.payload.items()).sum();
                            self.counters.dropped(DropReason::QueueFull, n, items);
                        }
                    }
                }
                Push::TooLarge(_) => self.counters.dropped(DropReason::TooLarge, 1, items),
                Push::Closed(_) => self.counters.dropped(DropReason::Shutdown, 1, items),
            }
        }
    }

    /// Whether a payload of `bytes` fits now, without evicting, in the queue of every
    /// endpoint whose last request succeeded.
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.lanes
            .iter()
            .all(|l| !l.healthy.load(Ordering::Relaxed) || l.queue.fits(bytes))
    }

    /// Counts a payload dropped before reaching the queues.
    pub(crate) fn count_dropped(&self, reason: DropReason, items: u64) {
        self.counters.dropped(reason, 1, items);
    }

    fn log_once(&self, lane: &Lane, key: u16, message: impl FnOnce() -> String) {
        log_once(lane, key, message);
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
        s.spooled_now_payloads = self
            .lanes
            .iter()
            .filter_map(|l| l.spool.as_ref())
            .map(|sp| sp.files().len() as u64)
            .sum();
        s
    }

    /// Stops accepting, lets the workers drain the queues until `deadline`, then stops them;
    /// what is left (queued or in flight) goes to the spool, or is counted as dropped with
    /// [`DropReason::Shutdown`]. Logs what was spooled and dropped.
    pub(crate) async fn shutdown(&self, deadline: tokio::time::Instant) {
        let replayers = std::mem::take(&mut *self.replayers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for r in replayers {
            r.abort();
            let _ = r.await;
        }
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
        tokio::pin!(all);
        if tokio::time::timeout_at(deadline, &mut all).await.is_err() {
            for a in &aborts {
                a.abort();
            }
            // Aborted tasks end at their next await point.
            all.await;
            self.counters.in_flight.store(0, Ordering::Relaxed);
            self.counters.in_flight_items.store(0, Ordering::Relaxed);
        }
        let before = self.counters.lock().clone();
        let mut left = Vec::new();
        for lane in &self.lanes {
            let mut jobs: Vec<Arc<Job>> = lane
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain()
                .map(|(_, j)| j)
                .collect();
            jobs.extend(lane.queue.drain());
            if !jobs.is_empty() {
                left.push((Arc::clone(lane), jobs));
            }
        }
        if left.is_empty() {
            return;
        }
        let (settings, counters) = (self.settings.clone(), Arc::clone(&self.counters));
        let spooling = tokio::task::spawn_blocking(move || {
            for (lane, jobs) in left {
                spool_jobs(&settings, &lane, &counters, jobs, DropReason::Shutdown);
            }
        });
        let _ = spooling.await;
        let after = self.counters.lock().clone();
        let spooled = after.spooled_items - before.spooled_items;
        let dropped = after.dropped_items.get(&DropReason::Shutdown).copied().unwrap_or(0)
            - before.dropped_items.get(&DropReason::Shutdown).copied().unwrap_or(0);
        let spooled_payloads = after.spooled_payloads - before.spooled_payloads;
        match &self.spool {
            Some(dir) => tracing::warn!(
                "{} {}: shutdown deadline passed with payloads undelivered: {spooled_payloads} payloads \
                 ({spooled} items) spooled to {} and sent after the next start, {dropped} items dropped",
                self.settings.writer,
                self.settings.signal,
                dir.path().display()
            ),
            None => tracing::warn!(
                "{} {}: shutdown deadline passed with payloads undelivered: {dropped} items dropped \
                 (no apm_config.spool)",
                self.settings.writer,
                self.settings.signal
            ),
        }
    }
}

fn log_once(lane: &Lane, key: u16, message: impl FnOnce() -> String) {
    let first = lane
        .logged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key);
    if first {
        tracing::warn!("{}", message());
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
