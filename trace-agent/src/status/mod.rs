//! Counters behind `trace-agent status`: what was received from whom, what was dropped and why,
//! what went on to the next stage, and the last error.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::pipeline::SinkCounters;
use crate::text::truncate;

mod client;
mod render;
pub use client::{FetchError, fetch_status};
pub use render::{render, tracer_identity};

pub mod otlp;
pub mod proxy;

/// Where the receiver serves the status document (`trace-agent status` reads it).
pub const STATUS_PATH: &str = "/trace-agent/status";

/// What `status` shows of the watchdog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchdogStatus {
    /// `apm_config.max_memory` (0: off).
    pub max_memory: u64,
    /// `apm_config.max_cpu_percent` (0: off).
    pub max_cpu_percent: f64,
    /// `apm_config.connection_limit` (0: off).
    pub connection_limit: usize,
    /// RSS at the last sample (0: not sampled, limits off).
    pub rss_bytes: u64,
    /// CPU use over the last window, percent of one core.
    pub cpu_percent: f64,
    /// Whether payloads are being refused, and why.
    pub refusing: Option<String>,
}

/// A component's report, read when a status snapshot is taken (set once at start-up by the
/// component, which stays the owner of its state).
pub struct Source<T>(std::sync::Arc<dyn Fn() -> T + Send + Sync>);

impl<T> Source<T> {
    /// A source reading `f`.
    pub fn new(f: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// The report now.
    pub fn read(&self) -> T {
        (self.0)()
    }
}

impl<T> std::fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source(..)")
    }
}

/// Receiver dimensions: who sent it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TracerKey {
    /// Root service of the traces.
    pub service: String,
    /// `Datadog-Meta-Lang`.
    pub lang: String,
    /// `Datadog-Meta-Lang-Version`.
    pub lang_version: String,
    /// `Datadog-Meta-Tracer-Version`.
    pub tracer_version: String,
}

/// Most distinct [`TracerKey`]s tracked; further ones are counted under a service named
/// [`OTHER_SERVICE`] (bounded memory whatever tracers send).
pub const MAX_TRACER_KEYS: usize = 1000;
/// Service name of the overflow bucket.
pub const OTHER_SERVICE: &str = "(other services)";
/// Longest text (bytes) kept of each [`TracerKey`] field: the Datadog service-name limit.
/// Longer names (from payloads or headers) are cut on a character boundary first, so the
/// map's memory is bounded by key count × key length whatever tracers send.
pub const MAX_KEY_LEN: usize = 100;
/// Longest last-error message kept (bytes).
pub const MAX_ERROR_LEN: usize = 1024;

/// Received counts for one [`TracerKey`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedCounts {
    /// Payloads (requests).
    pub payloads: u64,
    /// Trace chunks decoded.
    pub traces: u64,
    /// Spans decoded.
    pub spans: u64,
    /// Body bytes.
    pub bytes: u64,
}

/// Why data was dropped, as shown by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    /// Payloads dropped for this reason.
    pub payloads: u64,
    /// Traces dropped.
    pub traces: u64,
    /// Spans dropped (0 when unknown, e.g. undecodable payloads).
    pub spans: u64,
}

/// All counters of a running agent.
#[derive(Debug)]
pub struct AgentStats {
    started: Instant,
    received: Mutex<BTreeMap<TracerKey, ReceivedCounts>>,
    drops: Mutex<BTreeMap<String, DropCounts>>,
    normalized: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<(u64, String)>>,
    /// `/info` requests served.
    pub info_requests: AtomicU64,
    /// Requests being handled right now.
    pub in_flight: AtomicU64,
    /// `/v0.6/stats` payloads accepted (tracer-computed stats).
    pub client_stats_payloads: AtomicU64,
    /// Decoder slots in use (decoding, processing or handing off a payload).
    pub decoders_busy: AtomicU64,
    /// P0 traces the tracers dropped themselves (`Datadog-Client-Dropped-P0-Traces`).
    pub client_dropped_p0_traces: AtomicU64,
    /// P0 spans the tracers dropped themselves (`Datadog-Client-Dropped-P0-Spans`).
    pub client_dropped_p0_spans: AtomicU64,
    /// TCP connections closed at once by `apm_config.connection_limit`.
    pub connections_refused: AtomicU64,
    /// What the next stage consumed.
    pub sink: std::sync::Arc<SinkCounters>,
    /// The forwarding stage's report (samplers, stats), refreshed by the sink every second.
    pub forward: std::sync::Arc<crate::forward::ForwardShared>,
    /// The upstream writers (set once at start-up).
    pub upstreams: std::sync::OnceLock<Vec<std::sync::Arc<dyn crate::upstream::Upstream>>>,
    /// Local mode, when it runs: the web view's URL and the store (set once at start-up).
    pub local: std::sync::OnceLock<(String, crate::local::LocalStore)>,
    /// The OTLP receivers' counters, per protocol.
    pub otlp: std::sync::Arc<otlp::OtlpCounters>,
    /// The proxy routes' counters (set once at start-up).
    pub proxy: std::sync::OnceLock<Source<proxy::ProxyStatus>>,
    /// The receiver's watchdog and `connection_limit` (set once at start-up).
    pub watchdog: std::sync::OnceLock<Source<WatchdogStatus>>,
    /// The receivers' body budget and the pipeline's byte budget (set once at start-up).
    pub budgets: std::sync::OnceLock<(
        std::sync::Arc<crate::pipeline::ByteBudget>,
        std::sync::Arc<crate::pipeline::ByteBudget>,
    )>,
}

impl Default for AgentStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            received: Mutex::default(),
            drops: Mutex::default(),
            normalized: Mutex::default(),
            last_error: Mutex::default(),
            info_requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            client_stats_payloads: AtomicU64::new(0),
            decoders_busy: AtomicU64::new(0),
            client_dropped_p0_traces: AtomicU64::new(0),
            client_dropped_p0_spans: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            sink: std::sync::Arc::default(),
            forward: std::sync::Arc::default(),
            upstreams: std::sync::OnceLock::new(),
            local: std::sync::OnceLock::new(),
            otlp: std::sync::Arc::default(),
            proxy: std::sync::OnceLock::new(),
            watchdog: std::sync::OnceLock::new(),
            budgets: std::sync::OnceLock::new(),
        }
    }
}

/// A point-in-time copy of [`AgentStats`], as served to `trace-agent status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Agent version.
    pub version: String,
    /// Listening addresses.
    pub listening: Vec<String>,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Per tracer identity.
    pub received: Vec<(TracerKey, ReceivedCounts)>,
    /// Drops by reason.
    pub dropped: BTreeMap<String, DropCounts>,
    /// Span fields corrected by normalization, by kind (`service_invalid`, …).
    pub normalized: BTreeMap<String, u64>,
    /// Payloads/traces/spans handed to the next stage.
    pub forwarded: ReceivedCounts,
    /// Upstream health (no writer yet).
    pub upstream: String,
    /// `/info` requests served.
    pub info_requests: u64,
    /// Requests being handled at the time of the snapshot.
    pub in_flight: u64,
    /// `/v0.6/stats` payloads accepted.
    pub client_stats_payloads: u64,
    /// Decoder slots in use at the time of the snapshot.
    pub decoders_busy: u64,
    /// P0 traces and spans the tracers dropped before sending (they still count in their stats).
    pub client_dropped_p0: (u64, u64),
    /// Last error: unix seconds and message.
    pub last_error: Option<(u64, String)>,
    /// Items the forwarding stage dropped because handling them panicked (a bug: report it).
    #[serde(default)]
    pub sink_panics: u64,
    /// Samplers and stats (when the forwarding stage runs).
    #[serde(default)]
    pub forward: Option<crate::forward::ForwardReport>,
    /// Every upstream writer.
    #[serde(default)]
    pub writers: Vec<crate::upstream::WriterStatus>,
    /// Local mode (web view URL and store counters), when it runs.
    #[serde(default)]
    pub local: Option<crate::local::LocalModeStatus>,
    /// The OTLP receivers, per protocol.
    #[serde(default)]
    pub otlp: otlp::OtlpStatus,
    /// The proxy routes: delivered, intake errors, refused (by reason).
    #[serde(default)]
    pub proxy: proxy::ProxyStatus,
    /// Resource limits (`max_memory`, `max_cpu_percent`, `connection_limit`) and usage.
    #[serde(default)]
    pub limits: Option<WatchdogStatus>,
    /// TCP connections closed at once by `apm_config.connection_limit`.
    #[serde(default)]
    pub connections_refused: u64,
    /// The span ledger: per service, created → sent → received → kept → delivered.
    #[serde(default)]
    pub ledger: crate::ledger::LedgerSnapshot,
    /// Bytes held by request bodies and by payloads waiting for the forwarding stage, and
    /// their bounds.
    #[serde(default)]
    pub buffers: Option<crate::pipeline::BufferStatus>,
}

impl StatusSnapshot {
    /// Sum of received counts over every tracer.
    pub fn total_received(&self) -> ReceivedCounts {
        self.received.iter().fold(ReceivedCounts::default(), |mut acc, (_, c)| {
            acc.payloads += c.payloads;
            acc.traces += c.traces;
            acc.spans += c.spans;
            acc.bytes += c.bytes;
            acc
        })
    }

    /// Total traces dropped for `reason`.
    pub fn dropped_traces(&self, reason: &str) -> u64 {
        self.dropped.get(reason).map_or(0, |d| d.traces)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AgentStats {
    /// Counts a received payload: traces and spans per root service (`(service, traces,
    /// spans)`); the payload and its bytes go to the first service (or `""` when it was empty).
    /// Every key field is cut to [`MAX_KEY_LEN`] bytes.
    pub fn record_payload(&self, key: impl Fn(&str) -> TracerKey, per_service: &[(String, u64, u64)], bytes: u64) {
        let key = |service: &str| {
            let k = key(truncate(service, MAX_KEY_LEN));
            let cut = |s: String| {
                if s.len() > MAX_KEY_LEN {
                    truncate(&s, MAX_KEY_LEN).to_owned()
                } else {
                    s
                }
            };
            TracerKey {
                service: cut(k.service),
                lang: cut(k.lang),
                lang_version: cut(k.lang_version),
                tracer_version: cut(k.tracer_version),
            }
        };
        let mut map = lock(&self.received);
        let bounded = |map: &BTreeMap<TracerKey, ReceivedCounts>, k: TracerKey| {
            if map.len() < MAX_TRACER_KEYS || map.contains_key(&k) {
                k
            } else {
                TracerKey {
                    service: OTHER_SERVICE.to_owned(),
                    lang: String::new(),
                    lang_version: String::new(),
                    tracer_version: String::new(),
                }
            }
        };
        let first = per_service.first().map_or("", |(s, _, _)| s.as_str());
        let k = bounded(&map, key(first));
        let c = map.entry(k).or_default();
        c.payloads += 1;
        c.bytes += bytes;
        for (service, traces, spans) in per_service {
            let k = bounded(&map, key(service));
            let c = map.entry(k).or_default();
            c.traces += traces;
            c.spans += spans;
        }
    }

    /// Counts a drop.
    pub fn record_drop(&self, reason: &str, payloads: u64, traces: u64, spans: u64) {
        let mut map = lock(&self.drops);
        let d = map.entry(reason.to_owned()).or_default();
        d.payloads += payloads;
        d.traces += traces;
        d.spans += spans;
    }

    /// Counts normalization corrections.
    pub fn record_fixes(&self, fixes: &crate::process::normalize::Fixes) {
        let mut fixes = fixes.iter().peekable();
        if fixes.peek().is_none() {
            return;
        }
        let mut map = lock(&self.normalized);
        for (fix, n) in fixes {
            *map.entry(fix.as_str().to_owned()).or_default() += n;
        }
    }

    /// Remembers the last error (cut to [`MAX_ERROR_LEN`] bytes).
    pub fn record_error(&self, mut message: String) {
        if message.len() > MAX_ERROR_LEN {
            let cut = truncate(&message, MAX_ERROR_LEN).len();
            message.truncate(cut);
            message.push('…');
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        *lock(&self.last_error) = Some((now, message));
    }

    /// Copies every counter.
    pub fn snapshot(&self, listening: Vec<String>) -> StatusSnapshot {
        StatusSnapshot {
            version: crate::identity::AGENT_VERSION.to_owned(),
            listening,
            uptime_seconds: self.started.elapsed().as_secs(),
            received: lock(&self.received)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dropped: lock(&self.drops).clone(),
            normalized: lock(&self.normalized).clone(),
            forwarded: ReceivedCounts {
                payloads: self.sink.payloads.load(Ordering::Relaxed),
                traces: self.sink.traces.load(Ordering::Relaxed),
                spans: self.sink.spans.load(Ordering::Relaxed),
                bytes: 0,
            },
            upstream: match self.upstreams.get() {
                None => "no upstream writer: processed traces are counted, not sent".to_owned(),
                Some(u) if u.is_empty() => "none configured: kept traces are dropped".to_owned(),
                Some(u) => u.iter().map(|w| w.name().to_owned()).collect::<Vec<_>>().join(", "),
            },
            info_requests: self.info_requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            client_stats_payloads: self.client_stats_payloads.load(Ordering::Relaxed),
            decoders_busy: self.decoders_busy.load(Ordering::Relaxed),
            client_dropped_p0: (
                self.client_dropped_p0_traces.load(Ordering::Relaxed),
                self.client_dropped_p0_spans.load(Ordering::Relaxed),
            ),
            last_error: lock(&self.last_error).clone(),
            sink_panics: self.sink.panics.load(Ordering::Relaxed),
            forward: self.upstreams.get().map(|_| self.forward.report()),
            writers: self
                .upstreams
                .get()
                .map(|u| u.iter().map(|w| w.status()).collect())
                .unwrap_or_default(),
            local: self.local.get().map(|(web_url, store)| crate::local::LocalModeStatus {
                web_url: web_url.clone(),
                store: store.status(),
            }),
            otlp: self.otlp.snapshot(),
            proxy: self.proxy.get().map(Source::read).unwrap_or_default(),
            limits: self.watchdog.get().map(Source::read),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            ledger: self.forward.ledger.snapshot(),
            buffers: self
                .budgets
                .get()
                .map(|(body, pipeline)| crate::pipeline::BufferStatus {
                    body_bytes: body.held(),
                    body_bytes_max: body.total(),
                    pipeline_bytes: pipeline.held(),
                    pipeline_bytes_max: pipeline.total(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_control_characters_from_payloads() {
        let stats = AgentStats::default();
        stats.record_error("bad field \x1b]0;pwned\x07\x1b[2J\nforged line".to_owned());
        stats.record_drop("reason\x1b[31m", 1, 0, 0);
        let key = |s: &str| TracerKey {
            service: s.to_owned(),
            lang: "py\x1bthon".to_owned(),
            lang_version: String::new(),
            tracer_version: String::new(),
        };
        stats.record_payload(key, &[("svc\x07".to_owned(), 1, 1)], 1);
        let text = render(&stats.snapshot(Vec::new()));
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert!(text.contains("pwned\\u{7}\\u{1b}[2J\\nforged line"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
    }

    #[test]
    fn keys_and_errors_are_cut_to_their_bounds() {
        let stats = AgentStats::default();
        let long = "é".repeat(5 << 20);
        let key = |s: &str| TracerKey {
            service: s.to_owned(),
            lang: long.clone(),
            lang_version: String::new(),
            tracer_version: String::new(),
        };
        stats.record_payload(key, &[(long.clone(), 1, 1)], 1);
        stats.record_error(long.clone());
        let snap = stats.snapshot(Vec::new());
        let (k, _) = &snap.received[0];
        assert!(
            k.service.len() <= MAX_KEY_LEN && k.service.len() >= MAX_KEY_LEN - 1,
            "{}",
            k.service.len()
        );
        assert!(k.lang.len() <= MAX_KEY_LEN);
        let (_, msg) = snap.last_error.unwrap();
        assert!(msg.len() <= MAX_ERROR_LEN + '…'.len_utf8());
    }

    #[test]
    fn tracer_keys_are_bounded() {
        let stats = AgentStats::default();
        for i in 0..(MAX_TRACER_KEYS + 50) {
            let key = |s: &str| TracerKey {
                service: s.to_owned(),
                lang: format!("lang{i}"),
                lang_version: String::new(),
                tracer_version: String::new(),
            };
            stats.record_payload(key, &[(format!("svc{i}"), 1, 2)], 10);
        }
        let snap = stats.snapshot(Vec::new());
        assert_eq!(snap.received.len(), MAX_TRACER_KEYS + 1);
        let total = snap.total_received();
        assert_eq!(
            (total.traces, total.spans),
            ((MAX_TRACER_KEYS + 50) as u64, 2 * (MAX_TRACER_KEYS + 50) as u64)
        );
    }
}
