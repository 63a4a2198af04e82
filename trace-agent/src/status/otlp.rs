//! The OTLP receivers' counters (written by `otlp_in`, read by the status report).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Which receiver a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC `TraceService/Export`.
    Grpc,
    /// HTTP `POST /v1/traces`.
    Http,
}

/// Counters of one protocol, shown by `trace-agent status`.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) spans_received: AtomicU64,
    pub(crate) spans_accepted: AtomicU64,
    pub(crate) spans_rejected: AtomicU64,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
}

/// A copy of [`ProtocolCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolStatus {
    /// Where it listens (`None`: off).
    pub listening: Option<String>,
    /// Export requests received (answered or not).
    pub requests: u64,
    /// Request bytes (as sent, before decompression).
    pub bytes: u64,
    /// Spans in decoded requests.
    pub spans_received: u64,
    /// Spans handed to the pipeline (after processing; filters and normalization may drop some).
    pub spans_accepted: u64,
    /// Spans refused and reported as rejected in the partial-success reply.
    pub spans_rejected: u64,
    /// Requests refused, by reason (`decode_proto`, `too_large`, `overload`, …).
    pub errors: BTreeMap<String, u64>,
}

/// Both protocols' counters.
#[derive(Debug, Default)]
pub struct OtlpCounters {
    grpc: ProtocolCounters,
    http: ProtocolCounters,
    addrs: Mutex<(Option<String>, Option<String>)>,
}

/// What `status` shows of the OTLP receivers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtlpStatus {
    /// gRPC receiver.
    pub grpc: ProtocolStatus,
    /// HTTP receiver.
    pub http: ProtocolStatus,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most distinct error reasons kept per protocol (reasons are a fixed set; this is a guard).
pub(crate) const MAX_ERROR_KEYS: usize = 64;

impl ProtocolCounters {
    fn snapshot(&self, listening: Option<String>) -> ProtocolStatus {
        ProtocolStatus {
            listening,
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            spans_received: self.spans_received.load(Ordering::Relaxed),
            spans_accepted: self.spans_accepted.load(Ordering::Relaxed),
            spans_rejected: self.spans_rejected.load(Ordering::Relaxed),
            errors: lock(&self.errors).clone(),
        }
    }

    /// Counts a request of `bytes`.
    pub fn request(&self, bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a refused request.
    pub fn error(&self, reason: &str) {
        let mut m = lock(&self.errors);
        if m.len() < MAX_ERROR_KEYS || m.contains_key(reason) {
            *m.entry(reason.to_owned()).or_default() += 1;
        }
    }
}

impl OtlpCounters {
    /// The counters of `protocol`.
    pub fn of(&self, protocol: Protocol) -> &ProtocolCounters {
        match protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Http => &self.http,
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> OtlpStatus {
        let (g, h) = lock(&self.addrs).clone();
        OtlpStatus {
            grpc: self.grpc.snapshot(g),
            http: self.http.snapshot(h),
        }
    }

    /// Remembers where the receivers listen.
    pub fn set_listening(&self, grpc: Option<String>, http: Option<String>) {
        *lock(&self.addrs) = (grpc, http);
    }
}

impl OtlpStatus {
    /// The `status` text (empty when both receivers are off).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        for (name, p) in [("gRPC", &self.grpc), ("HTTP", &self.http)] {
            let Some(addr) = &p.listening else {
                continue;
            };
            let _ = writeln!(
                o,
                "OTLP {name} receiver ({addr}): {} requests, {} bytes, {} spans received, {} accepted, \
                 {} rejected, errors {:?}",
                p.requests, p.bytes, p.spans_received, p.spans_accepted, p.spans_rejected, p.errors
            );
        }
        o
    }
}
