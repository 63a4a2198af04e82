//! What a writer reports: per signal (traces, stats), what was sent, retried, failed and
//! dropped, and how full its queue is.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Why a writer dropped a payload (or the data of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The queue was full (in payloads or bytes): the oldest queued payload made room.
    QueueFull,
    /// One payload alone is larger than the whole queue byte bound.
    TooLarge,
    /// Retriable failures (network, timeout, 408, 5xx) exhausted `max_sender_retries`.
    RetriesExhausted,
    /// The destination answered a non-retriable status (4xx other than 408).
    Rejected,
    /// Could not be encoded/compressed.
    #[serde(rename = "encode_error")]
    Encode,
    /// Still queued or in flight when the shutdown timeout passed, or offered after shutdown.
    Shutdown,
}

impl DropReason {
    /// Stable name for `status` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::TooLarge => "too_large",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Rejected => "rejected",
            Self::Encode => "encode_error",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one signal (traces or stats) of one writer. Payloads are what the writer hands
/// to the network (for the Datadog trace writer, one `AgentPayload` batching several tracer
/// payloads); `items` are the units inside (trace chunks, stats groups).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    /// Payloads accepted by the destination (2xx).
    pub payloads_sent: u64,
    /// Items (trace chunks, grouped stats) in the payloads sent.
    pub items_sent: u64,
    /// Bytes on the wire (compressed bodies) of the payloads sent.
    pub bytes_sent: u64,
    /// Requests retried (each retry counts once).
    pub retries: u64,
    /// Failed requests (including those retried later), by cause: the HTTP status (`"403"`,
    /// `"503"`), `"timeout"` or `"network"`.
    pub failures: BTreeMap<String, u64>,
    /// Payloads dropped, by reason.
    pub dropped_payloads: BTreeMap<DropReason, u64>,
    /// Items in the dropped payloads, by reason.
    pub dropped_items: BTreeMap<DropReason, u64>,
    /// Payloads waiting in the queue (not counting the batch being built, nor in-flight ones).
    pub queue_depth: usize,
    /// Bytes (estimated, uncompressed) waiting in the queue.
    pub queue_bytes: usize,
    /// Queue bound in payloads.
    pub queue_capacity: usize,
    /// Queue bound in bytes.
    pub queue_capacity_bytes: usize,
    /// Payloads being sent (or waiting between retries) right now.
    pub in_flight: usize,
    /// Payloads written to the spool (undelivered at the shutdown deadline, evicted from a full
    /// queue, or out of retries), to be sent later.
    #[serde(default)]
    pub spooled_payloads: u64,
    /// Items in the spooled payloads.
    #[serde(default)]
    pub spooled_items: u64,
    /// Spooled payloads read back and queued again (after a start, or once the destination
    /// answered again).
    #[serde(default)]
    pub replayed_payloads: u64,
    /// Items in the replayed payloads.
    #[serde(default)]
    pub replayed_items: u64,
    /// Payloads in the spool now, waiting to be sent.
    #[serde(default)]
    pub spooled_now_payloads: u64,
    /// Times the forwarding stage waited for room in a full queue to a healthy endpoint until
    /// its deadline passed (the queue then evicted its oldest payload: to the spool, else
    /// counted as `queue_full`). Non-zero: the destination is slower than the input.
    #[serde(default)]
    pub enqueue_timeouts: u64,
    /// When a payload was last accepted.
    pub last_success: Option<SystemTime>,
    /// When and why the last request failed (masked: never contains an API key).
    pub last_error: Option<(SystemTime, String)>,
}

impl SignalStatus {
    /// Total payloads dropped, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_payloads.values().sum()
    }

    /// Total failed requests, all causes.
    pub fn failures_total(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// A copy of a writer's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriterStatus {
    /// [`super::Upstream::name`].
    pub name: String,
    /// Where it sends (URLs, never keys).
    pub endpoints: Vec<String>,
    /// Trace payloads.
    pub traces: SignalStatus,
    /// Stats payloads (all zero for destinations without stats).
    pub stats: SignalStatus,
}
