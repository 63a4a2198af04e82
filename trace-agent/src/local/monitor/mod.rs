//! Monitors of local mode: thresholds on a service's (or resource's) error rate, hits,
//! throughput or latency, evaluated every `apm_config.local.monitor_interval` on the store,
//! with webhooks and downtimes.
//!
//! * [`config`] — `apm_config.local.monitors` / `.webhooks` / `.downtimes`, checked at start-up.
//! * [`eval`] — the pure part: states, events, downtimes, the notifications to send.
//! * [`Monitors`] — the thin shell: a task that reads the store each interval and applies the
//!   readings, and one that POSTs notifications (JSON), in order, with bounded retries:
//!   [`WEBHOOK_ATTEMPTS`] attempts, [`WEBHOOK_BACKOFF`] then twice that apart, each within
//!   [`WEBHOOK_TIMEOUT`]; at most [`WEBHOOK_QUEUE`] waiting (more are dropped and counted).

pub mod config;
pub mod eval;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{DowntimeScope, Metric, MonitorConfig, MonitorSpec};
pub use eval::{Downtime, Engine, Event, MonitorStatus, Notification, Reading, State};

use super::LocalStore;
use super::scoped::{self, Scope};
use super::store::unix_nanos;
use crate::upstream::http::{HttpClient, Outcome};

/// Attempts per notification.
pub const WEBHOOK_ATTEMPTS: u32 = 3;
/// Wait before the second attempt (doubled before the third).
pub const WEBHOOK_BACKOFF: Duration = Duration::from_secs(1);
/// Time limit of one attempt.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications waiting to be sent.
pub const WEBHOOK_QUEUE: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Webhook delivery counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebhookStatus {
    /// Notifications delivered (2xx).
    pub delivered: u64,
    /// Notifications given up on (refused, or every attempt failed).
    pub failed: u64,
    /// Notifications dropped because the queue was full.
    pub dropped: u64,
    /// Attempts retried.
    pub retries: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Shared {
    engine: Mutex<Engine>,
    counters: Counters,
    interval: Duration,
}

/// The monitors' handle: shared by the evaluation task and the web view. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Monitors {
    shared: Arc<Shared>,
}

/// What the store holds for each monitor at `now_ns` (blocking: the store's reader).
///
/// # Errors
/// A SQLite error.
pub fn read_all(conn: &Connection, specs: &[MonitorSpec], now_ns: i64) -> rusqlite::Result<Vec<Option<Reading>>> {
    let to = now_ns.saturating_add(60_000_000_000);
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    specs
        .iter()
        .map(|s| {
            let scope = Scope {
                service: &s.service,
                operation: s.operation.as_deref(),
                resource: s.resource.as_deref(),
            };
            let agg = scoped::aggregate(conn, scope, now_ns.saturating_sub(nanos(s.window)), to)?;
            let recent_hits = if s.notify_no_data {
                scoped::aggregate(conn, scope, now_ns.saturating_sub(nanos(s.no_data_window)), to)?.hits
            } else {
                agg.hits
            };
            Ok(Some(Reading {
                hits: agg.hits,
                errors: agg.errors,
                p50: agg.sketch.quantile(0.5),
                p95: agg.sketch.quantile(0.95),
                p99: agg.sketch.quantile(0.99),
                recent_hits,
            }))
        })
        .collect()
}

impl Monitors {
    /// No monitors (the web view shows an empty page with how to add some).
    pub fn disabled() -> Self {
        Self::new(&MonitorConfig::default(), SystemTime::now(), String::new())
    }

    /// The handle, every monitor OK as of `now` (no task: see [`Monitors::start`]).
    pub fn new(config: &MonitorConfig, now: SystemTime, page_url: String) -> Self {
        let mut engine = Engine::new(config, unix_nanos(now));
        engine.page_url = page_url;
        Self {
            shared: Arc::new(Shared {
                engine: Mutex::new(engine),
                counters: Counters::default(),
                interval: config.interval.max(Duration::from_millis(100)),
            }),
        }
    }

    /// Starts evaluating on `store` every interval (on the current runtime) until `shutdown`
    /// turns true. Returns the evaluation task (the webhook sender ends with it).
    pub fn start(&self, store: LocalStore, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let me = self.clone();
        if me.lock().specs().is_empty() {
            return tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            });
        }
        let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
        let sender = match HttpClient::new(WEBHOOK_TIMEOUT) {
            Ok(client) => Some(tokio::spawn(send_loop(client, rx, Arc::clone(&self.shared)))),
            Err(e) => {
                tracing::error!("monitors: webhooks cannot be sent: {e}");
                None
            }
        };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(me.shared.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = ticker.tick() => {}
                }
                let now = unix_nanos(SystemTime::now());
                let specs = me.lock().specs().to_vec();
                let store = store.clone();
                let read = tokio::task::spawn_blocking(move || store.read(|c| read_all(c, &specs, now))).await;
                let readings = match read {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "monitors: reading the store failed; states kept");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "monitors: evaluation task failed");
                        continue;
                    }
                };
                for n in me.apply(now, &readings) {
                    me.enqueue(&tx, n);
                }
            }
            drop(tx);
            if let Some(s) = sender {
                let _ = tokio::time::timeout(WEBHOOK_TIMEOUT, s).await;
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        lock(&self.shared.engine)
    }

    /// Applies readings taken at `now_ns` (what the task does each interval); returns the
    /// notifications to send.
    pub fn apply(&self, now_ns: i64, readings: &[Option<Reading>]) -> Vec<Notification> {
        let notes = self.lock().apply(now_ns, readings);
        for n in &notes {
            tracing::info!(
                webhook = %n.webhook,
                state = %n.body.get("state").unwrap_or(&serde_json::Value::Null),
                monitor = %n.body.get("monitor").unwrap_or(&serde_json::Value::Null),
                "monitor changed state"
            );
        }
        notes
    }

    fn enqueue(&self, tx: &mpsc::Sender<Notification>, n: Notification) {
        if tx.try_send(n).is_err() {
            let c = &self.shared.counters;
            if c.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("monitors: the webhook queue is full; notifications are dropped and counted");
            }
        }
    }

    /// Every monitor's status at `now_ns`.
    pub fn statuses(&self, now_ns: i64) -> Vec<MonitorStatus> {
        self.lock().statuses(now_ns)
    }

    /// Whether any monitor is defined.
    pub fn is_empty(&self) -> bool {
        self.lock().specs().is_empty()
    }

    /// Transitions, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events()
    }

    /// Downtimes.
    pub fn downtimes(&self) -> Vec<Downtime> {
        self.lock().downtimes().to_vec()
    }

    /// Mutes `scope` from `now_ns` for `duration_ns`; `None` when too many downtimes exist.
    pub fn mute_for(&self, scope: DowntimeScope, now_ns: i64, duration_ns: i64, comment: String) -> Option<u64> {
        self.lock().mute_for(scope, now_ns, duration_ns, comment)
    }

    /// Adds a downtime (API); `None` when too many exist.
    pub fn add_downtime(&self, spec: config::DowntimeSpec) -> Option<u64> {
        self.lock().add_downtime(spec, false)
    }

    /// Removes a created downtime.
    pub fn remove_downtime(&self, id: u64) -> bool {
        self.lock().remove_downtime(id)
    }

    /// Webhook counters.
    pub fn webhook_status(&self) -> WebhookStatus {
        let c = &self.shared.counters;
        WebhookStatus {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            last_error: lock(&c.last_error).clone(),
        }
    }
}

/// Sends notifications one at a time, in order (a receiver sees a monitor's changes in the
/// order they happened; the bodies carry `at_ns` too).
async fn send_loop(client: HttpClient, mut rx: mpsc::Receiver<Notification>, shared: Arc<Shared>) {
    while let Some(n) = rx.recv().await {
        deliver(&client, &n, &shared.counters).await;
    }
}

async fn deliver(client: &HttpClient, n: &Notification, c: &Counters) {
    let fail = |message: String| {
        c.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("monitors: webhook {}: {message}", n.webhook);
        *lock(&c.last_error) = Some(format!("webhook {}: {message}", n.webhook));
    };
    let uri: http::Uri = match n.url.parse() {
        Ok(u) => u,
        Err(e) => return fail(format!("bad URL {}: {e}", n.url)),
    };
    let body = Bytes::from(serde_json::to_vec(&n.body).unwrap_or_default());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("trace-agent-local-monitors"),
    );
    let mut wait = WEBHOOK_BACKOFF;
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match client.post(&uri, &headers, body.clone()).await {
            Outcome::Success => {
                c.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Rejected { status, body } => return fail(format!("refused: HTTP {status}: {body}")),
            Outcome::Retriable { message, .. } if attempt == WEBHOOK_ATTEMPTS => {
                return fail(format!("gave up after {WEBHOOK_ATTEMPTS} attempts: {message}"));
            }
            Outcome::Retriable { .. } => {
                c.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}
