//! Retry delays: full jitter, `random(0, min(max, base × 2^attempt))` (spec 7.1: base 100 ms,
//! max 10 s), with an attempt counter shared by the senders of one endpoint that grows on
//! every retry and halves after every success.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Backoff bounds (injectable so tests do not wait real seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay bound of the first retry (100 ms).
    pub base: Duration,
    /// Largest delay bound (10 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay bound of retry number `attempt` (1-based): `min(max, base × 2^attempt)`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A delay for retry `attempt`: `bound(attempt) × unit`, `unit` uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.bound(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The per-endpoint attempt counter.
#[derive(Debug, Default)]
pub(crate) struct Attempts(AtomicU32);

impl Attempts {
    /// Counts a retry; returns the new attempt number.
    pub(crate) fn retry(&self) -> u32 {
        let prev = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_add(1).min(64))
            })
            .unwrap_or(0);
        prev.saturating_add(1).min(64)
    }

    /// Halves the counter after a success.
    pub(crate) fn success(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| Some(a / 2));
    }

    /// Current value.
    #[cfg(test)]
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_doubles_then_caps_at_ten_seconds() {
        let b = Backoff::default();
        assert_eq!(b.bound(1), Duration::from_millis(200));
        assert_eq!(b.bound(3), Duration::from_millis(800));
        assert_eq!(b.bound(6), Duration::from_millis(6400));
        assert_eq!(b.bound(7), Duration::from_secs(10));
        assert_eq!(b.bound(1000), Duration::from_secs(10));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn attempts_grow_and_halve_after_success() {
        let a = Attempts::default();
        assert_eq!((a.retry(), a.retry(), a.retry(), a.retry()), (1, 2, 3, 4));
        a.success();
        assert_eq!(a.get(), 2);
        a.success();
        a.success();
        assert_eq!(a.get(), 0);
    }
}
