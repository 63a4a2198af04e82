//! Health of the tracer: counters the application can read, and one log line per problem
//! class (not per span).

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

/// A small per-thread index (assigned round-robin on first use): the shard of the chunk
/// queue that this thread writes to.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Relaxed);
            s.set(i);
        }
        i
    })
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counters bumped on the span path, one set per application thread. Only the owning
/// thread writes its set, so an increment is a plain load and store (no locked
/// read-modify-write); readers add the sets up.
#[derive(Debug, Default)]
pub(crate) struct AppCounters {
    pub(crate) spans_created: AtomicU64,
    pub(crate) spans_finished: AtomicU64,
    pub(crate) traces_enqueued: AtomicU64,
}

impl AppCounters {
    /// Adds `n` to a counter of this thread's own set.
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Per-thread [`AppCounters`].
#[derive(Debug, Default)]
pub(crate) struct PerThread {
    sets: ThreadLocal<CachePadded<AppCounters>>,
}

impl PerThread {
    /// This thread's set.
    pub(crate) fn local(&self) -> &AppCounters {
        self.sets.get_or_default()
    }

    /// Spans created, over every thread.
    pub(crate) fn created(&self) -> u64 {
        self.sum(|c| &c.spans_created)
    }

    /// Spans finished, over every thread.
    pub(crate) fn finished(&self) -> u64 {
        self.sum(|c| &c.spans_finished)
    }

    fn sum(&self, f: impl Fn(&AppCounters) -> &AtomicU64) -> u64 {
        self.sets.iter().map(|c| f(c).load(Relaxed)).sum()
    }
}

/// Counters updated by the application threads and the export worker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) app: PerThread,
    pub(crate) spans_dropped_queue_full: AtomicU64,
    pub(crate) traces_dropped_queue_full: AtomicU64,
    pub(crate) spans_dropped_trace_too_large: AtomicU64,
    pub(crate) spans_dropped_shutdown: AtomicU64,
    pub(crate) spans_dropped_send_failed: AtomicU64,
    pub(crate) traces_dropped_send_failed: AtomicU64,
    pub(crate) traces_sent: AtomicU64,
    pub(crate) spans_sent: AtomicU64,
    pub(crate) payloads_sent: AtomicU64,
    pub(crate) payloads_failed: AtomicU64,
    pub(crate) send_retries: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) agent_rate_updates: AtomicU64,
    pub(crate) info_fetches: AtomicU64,
    pub(crate) p0_traces_dropped: AtomicU64,
    pub(crate) p0_spans_dropped: AtomicU64,
    pub(crate) stats_payloads_sent: AtomicU64,
    pub(crate) stats_payloads_failed: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

/// A snapshot of the tracer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Spans started (recorded ones; no-op spans of a disabled tracer are not counted).
    pub spans_created: u64,
    /// Spans finished and handed to the buffer (queued or dropped).
    pub spans_finished: u64,
    /// Trace chunks accepted by the queue.
    pub traces_enqueued: u64,
    /// Spans dropped because the queue to the export worker was full.
    pub spans_dropped_queue_full: u64,
    /// Trace chunks dropped because the queue was full.
    pub traces_dropped_queue_full: u64,
    /// Spans dropped because their trace passed the per-trace span cap.
    pub spans_dropped_trace_too_large: u64,
    /// Spans finished after `shutdown`.
    pub spans_dropped_shutdown: u64,
    /// Spans in payloads the agent never accepted (after retries).
    pub spans_dropped_send_failed: u64,
    /// Trace chunks in payloads the agent never accepted.
    pub traces_dropped_send_failed: u64,
    /// Trace chunks the agent accepted.
    pub traces_sent: u64,
    /// Spans the agent accepted.
    pub spans_sent: u64,
    /// Payloads the agent accepted.
    pub payloads_sent: u64,
    /// Payloads given up on.
    pub payloads_failed: u64,
    /// Send attempts after a failure.
    pub send_retries: u64,
    /// Body bytes the agent accepted.
    pub bytes_sent: u64,
    /// Responses that carried new `rate_by_service` rates.
    pub agent_rate_updates: u64,
    /// `GET /info` requests made.
    pub info_fetches: u64,
    /// Trace chunks not sent because the sampler rejected them and client-side stats
    /// already counted them (`DD_TRACE_STATS_COMPUTATION_ENABLED` with an agent that
    /// says `client_drop_p0s`); reported to the agent in `Datadog-Client-Dropped-P0-*`.
    pub p0_traces_dropped: u64,
    /// Spans of those chunks.
    pub p0_spans_dropped: u64,
    /// `/v0.6/stats` payloads the agent accepted.
    pub stats_payloads_sent: u64,
    /// `/v0.6/stats` payloads given up on.
    pub stats_payloads_failed: u64,
    /// The last problem seen, if any.
    pub last_error: Option<String>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Health {
        let l = |a: &AtomicU64| a.load(Relaxed);
        Health {
            spans_created: self.app.sum(|c| &c.spans_created),
            spans_finished: self.app.sum(|c| &c.spans_finished),
            traces_enqueued: self.app.sum(|c| &c.traces_enqueued),
            spans_dropped_queue_full: l(&self.spans_dropped_queue_full),
            traces_dropped_queue_full: l(&self.traces_dropped_queue_full),
            spans_dropped_trace_too_large: l(&self.spans_dropped_trace_too_large),
            spans_dropped_shutdown: l(&self.spans_dropped_shutdown),
            spans_dropped_send_failed: l(&self.spans_dropped_send_failed),
            traces_dropped_send_failed: l(&self.traces_dropped_send_failed),
            traces_sent: l(&self.traces_sent),
            spans_sent: l(&self.spans_sent),
            payloads_sent: l(&self.payloads_sent),
            payloads_failed: l(&self.payloads_failed),
            send_retries: l(&self.send_retries),
            bytes_sent: l(&self.bytes_sent),
            agent_rate_updates: l(&self.agent_rate_updates),
            info_fetches: l(&self.info_fetches),
            p0_traces_dropped: l(&self.p0_traces_dropped),
            p0_spans_dropped: l(&self.p0_spans_dropped),
            stats_payloads_sent: l(&self.stats_payloads_sent),
            stats_payloads_failed: l(&self.stats_payloads_failed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    pub(crate) fn set_last_error(&self, msg: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.to_owned());
        }
    }
}

/// Classes of problems, each logged once until it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    AgentUnreachable,
    AgentRejected,
    QueueFull,
    TraceTooLarge,
    BadAgentResponse,
    FinishedAfterShutdown,
    WorkerPanic,
}

const PROBLEMS: usize = 7;

/// One flag per [`Problem`]: the first occurrence logs a warning, later ones stay quiet
/// until [`ProblemLog::clear`] logs the recovery.
#[derive(Debug, Default)]
pub(crate) struct ProblemLog {
    raised: [AtomicBool; PROBLEMS],
}

impl ProblemLog {
    /// Logs `msg` if `p` is not already raised; returns whether it logged.
    pub(crate) fn raise(&self, p: Problem, msg: impl FnOnce() -> String) -> bool {
        let Some(flag) = self.raised.get(p as usize) else {
            return false;
        };
        if flag.swap(true, Relaxed) {
            return false;
        }
        tracing::warn!(target: "tracer::health", problem = ?p, "{}", msg());
        true
    }

    /// Marks `p` as cleared, logging the recovery if it was raised.
    pub(crate) fn clear(&self, p: Problem, msg: &str) {
        if let Some(flag) = self.raised.get(p as usize) {
            if flag.swap(false, Relaxed) {
                tracing::info!(target: "tracer::health", problem = ?p, "{msg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_counters_sum_across_threads() {
        let c = std::sync::Arc::new(PerThread::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| AppCounters::bump(&c.local().spans_created, 1)))
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        AppCounters::bump(&c.local().spans_created, 5);
        assert_eq!(c.sum(|s| &s.spans_created), 4005);
    }

    #[test]
    fn problems_log_once_until_cleared() {
        let log = ProblemLog::default();
        assert!(log.raise(Problem::QueueFull, || "full".into()));
        assert!(!log.raise(Problem::QueueFull, || "full".into()));
        assert!(log.raise(Problem::AgentUnreachable, || "down".into()));
        log.clear(Problem::QueueFull, "ok again");
        assert!(log.raise(Problem::QueueFull, || "full".into()));
    }
}
