//! The resource watchdog (`apm_config.max_memory`, `apm_config.max_cpu_percent`): while the
//! process is over either limit, the receiver refuses payloads with 429 (their bodies drained,
//! not read), like the rate limiter older Go agents drove from their watchdog. The Go agent
//! today only kills itself at 1.5 × `max_memory`; refusing keeps the agent alive and tells
//! tracers to back off.
//!
//! [`Watchdog::observe`] is the pure core (a reading and the time it was taken);
//! [`Watchdog::check`] samples `/proc/self` at most every [`SAMPLE_EVERY`] and answers from the
//! last sample in between.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two samples of `/proc/self`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Least wall time over which CPU use is averaged.
pub const CPU_WINDOW: Duration = Duration::from_secs(1);

/// Why the watchdog refuses payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// RSS over `max_memory`.
    Memory,
    /// CPU over `max_cpu_percent`.
    Cpu,
}

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time since the process started, in seconds.
    pub cpu_seconds: f64,
}

pub use crate::status::WatchdogStatus;

#[derive(Debug, Default)]
struct State {
    sampled_at: Option<Instant>,
    /// Start of the current CPU window and the CPU time then.
    window: Option<(Instant, f64)>,
    rss_bytes: u64,
    cpu_percent: f64,
    refusing: Option<Refusal>,
}

/// Memory and CPU limits, and the last reading.
#[derive(Debug)]
pub struct Watchdog {
    max_memory: u64,
    max_cpu_percent: f64,
    state: Mutex<State>,
}

impl Watchdog {
    /// A watchdog for `max_memory` bytes and `max_cpu_percent` (0 turns each off).
    pub fn new(max_memory: u64, max_cpu_percent: f64) -> Self {
        Self {
            max_memory,
            max_cpu_percent,
            state: Mutex::default(),
        }
    }

    /// The watchdog for `config`, registered in `stats` so that `status` shows it.
    pub fn shared(config: &crate::config::AgentConfig, stats: &crate::status::AgentStats) -> std::sync::Arc<Self> {
        let w = std::sync::Arc::new(Self::new(config.max_memory, config.max_cpu_percent));
        let (shown, limit) = (std::sync::Arc::clone(&w), config.connection_limit);
        let _ = stats
            .watchdog
            .set(crate::status::Source::new(move || shown.status(limit)));
        w
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.max_memory > 0 || self.max_cpu_percent > 0.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a reading made at `now` and returns the refusal it implies (pure: no I/O).
    pub fn observe(&self, now: Instant, reading: Reading) -> Option<Refusal> {
        let mut s = self.lock();
        s.sampled_at = Some(now);
        s.rss_bytes = reading.rss_bytes;
        match s.window {
            Some((start, cpu)) => {
                let wall = now.saturating_duration_since(start);
                if wall >= CPU_WINDOW {
                    s.cpu_percent = ((reading.cpu_seconds - cpu) / wall.as_secs_f64() * 100.0).max(0.0);
                    s.window = Some((now, reading.cpu_seconds));
                }
            }
            None => s.window = Some((now, reading.cpu_seconds)),
        }
        s.refusing = if self.max_memory > 0 && s.rss_bytes > self.max_memory {
            Some(Refusal::Memory)
        } else if self.max_cpu_percent > 0.0 && s.cpu_percent > self.max_cpu_percent {
            Some(Refusal::Cpu)
        } else {
            None
        };
        s.refusing
    }

    /// The refusal in force, sampling `/proc/self` first when the last sample is older than
    /// [`SAMPLE_EVERY`]. `None` at once when both limits are off.
    pub fn check(&self) -> Option<Refusal> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let due = self
            .lock()
            .sampled_at
            .is_none_or(|t| now.saturating_duration_since(t) >= SAMPLE_EVERY);
        if !due {
            return self.lock().refusing;
        }
        match read_self() {
            Some(r) => self.observe(now, r),
            // Not Linux (no /proc): the limits cannot be measured; never refuse for them.
            None => None,
        }
    }

    /// For `status`.
    pub fn status(&self, connection_limit: usize) -> WatchdogStatus {
        let s = self.lock();
        WatchdogStatus {
            max_memory: self.max_memory,
            max_cpu_percent: self.max_cpu_percent,
            connection_limit,
            rss_bytes: s.rss_bytes,
            cpu_percent: s.cpu_percent,
            refusing: s.refusing.map(|r| match r {
                Refusal::Memory => "memory over apm_config.max_memory".to_owned(),
                Refusal::Cpu => "CPU over apm_config.max_cpu_percent".to_owned(),
            }),
        }
    }
}

/// Clock ticks per second of `/proc/self/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// RSS (`VmRSS` of `/proc/self/status`) and CPU time (`utime + stime` of `/proc/self/stat`).
pub fn read_self() -> Option<Reading> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Reading {
        rss_bytes: rss_kb.saturating_mul(1024),
        cpu_seconds: (utime + stime) / CLOCK_TICKS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(rss_bytes: u64, cpu_seconds: f64) -> Reading {
        Reading { rss_bytes, cpu_seconds }
    }

    #[test]
    fn memory_over_the_limit_refuses_until_it_falls_back() {
        let w = Watchdog::new(100, 0.0);
        let t0 = Instant::now();
        assert_eq!(w.observe(t0, reading(99, 0.0)), None);
        assert_eq!(w.observe(t0 + SAMPLE_EVERY, reading(101, 0.0)), Some(Refusal::Memory));
        assert_eq!(
            w.status(0).refusing.as_deref(),
            Some("memory over apm_config.max_memory")
        );
        assert_eq!(w.observe(t0 + 2 * SAMPLE_EVERY, reading(100, 0.0)), None);
    }

    #[test]
    fn cpu_is_averaged_over_a_window_of_one_second() {
        let w = Watchdog::new(0, 50.0);
        let t0 = Instant::now();
        assert_eq!(w.observe(t0, reading(1, 10.0)), None);
        // 0.4 s of CPU in 0.5 s: not a full window yet, no verdict.
        assert_eq!(w.observe(t0 + Duration::from_millis(500), reading(1, 10.4)), None);
        // 0.8 s of CPU in 1 s: 80 % > 50 %.
        assert_eq!(
            w.observe(t0 + Duration::from_secs(1), reading(1, 10.8)),
            Some(Refusal::Cpu)
        );
        assert!((w.status(0).cpu_percent - 80.0).abs() < 1e-9);
        // 0.2 s in the next second: 20 %.
        assert_eq!(w.observe(t0 + Duration::from_secs(2), reading(1, 11.0)), None);
    }

    #[test]
    fn off_by_default_and_reads_this_process() {
        assert_eq!(Watchdog::new(0, 0.0).check(), None);
        let r = read_self().expect("/proc/self on Linux");
        assert!(r.rss_bytes > 1 << 20, "{r:?}");
        // A limit of one byte: this process is over it.
        assert_eq!(Watchdog::new(1, 0.0).check(), Some(Refusal::Memory));
    }
}
