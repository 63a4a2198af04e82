//! Token-bucket limiter behind the sampling rules (`DD_TRACE_RATE_LIMIT`).

use std::time::Instant;

/// Allows at most `rate` traces per second with a burst of `ceil(rate)`, and reports its
/// effective rate (allowed / seen over the current and previous second) for `_dd.limit_psr`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_refill: Option<Instant>,
    window_start: Option<Instant>,
    seen: u64,
    allowed: u64,
    prev_rate: Option<f64>,
}

impl RateLimiter {
    /// A limiter of `rate` per second; a negative rate means no limit, 0 allows nothing.
    pub fn new(rate: f64) -> Self {
        let burst = if rate > 0.0 { rate.ceil() } else { 0.0 };
        Self {
            rate,
            burst,
            tokens: burst,
            last_refill: None,
            window_start: None,
            seen: 0,
            allowed: 0,
            prev_rate: None,
        }
    }

    /// Asks for one token at `now`; returns whether it was granted and the effective rate.
    pub fn allow(&mut self, now: Instant) -> (bool, f64) {
        self.roll_window(now);
        self.seen += 1;
        let granted = if self.rate < 0.0 {
            true
        } else {
            self.refill(now);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        };
        if granted {
            self.allowed += 1;
        }
        (granted, self.effective_rate())
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last_refill = Some(now);
    }

    fn roll_window(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        if elapsed >= 1.0 {
            self.prev_rate = if elapsed < 2.0 && self.seen > 0 {
                Some(self.allowed as f64 / self.seen as f64)
            } else {
                None
            };
            self.window_start = Some(now);
            self.seen = 0;
            self.allowed = 0;
        }
    }

    fn effective_rate(&self) -> f64 {
        let current = if self.seen == 0 {
            1.0
        } else {
            self.allowed as f64 / self.seen as f64
        };
        match self.prev_rate {
            Some(prev) => (current + prev) / 2.0,
            None => current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_rate_per_second_over_a_simulated_minute() {
        let mut rl = RateLimiter::new(100.0);
        let t0 = Instant::now();
        let mut allowed = 0;
        // 1000 traces per second for 60 s, every millisecond.
        for ms in 0..60_000u64 {
            if rl.allow(t0 + Duration::from_millis(ms)).0 {
                allowed += 1;
            }
        }
        // burst of 100 then 100/s
        assert!((6_000..=6_101).contains(&allowed), "{allowed}");
    }

    #[test]
    fn reports_effective_rate() {
        let mut rl = RateLimiter::new(1.0);
        let t0 = Instant::now();
        assert_eq!(rl.allow(t0), (true, 1.0));
        assert_eq!(rl.allow(t0), (false, 0.5));
        let (ok, eff) = rl.allow(t0 + Duration::from_millis(1500));
        assert!(ok);
        // previous window 1/2, current 1/1
        assert!((eff - 0.75).abs() < 1e-9, "{eff}");
    }

    #[test]
    fn zero_allows_nothing_negative_allows_all() {
        let t0 = Instant::now();
        assert!(!RateLimiter::new(0.0).allow(t0).0);
        let mut all = RateLimiter::new(-1.0);
        assert!((0..1000).all(|_| all.allow(t0).0));
    }
}
