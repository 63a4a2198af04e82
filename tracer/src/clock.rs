//! Span timestamps from the monotonic clock.
//!
//! Spans need a start in nanoseconds since the epoch and a duration. Reading the wall
//! clock for the start and the monotonic clock for the duration costs two clock reads and
//! lets a wall-clock step produce nonsense durations; instead the process takes one
//! (wall, monotonic) anchor and derives every timestamp from monotonic nanoseconds, read
//! as a plain `u64` (`CLOCK_MONOTONIC`, the clock `std::time::Instant` uses on unix).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    wall_ns: i64,
    mono_ns: u64,
    instant: Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let instant = Instant::now();
        let mono_ns = raw_mono();
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Anchor {
            wall_ns,
            mono_ns,
            instant,
        }
    })
}

#[cfg(unix)]
fn raw_mono() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(unix))]
fn raw_mono() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Monotonic nanoseconds now.
pub(crate) fn now() -> u64 {
    // Make sure the anchor predates every reading.
    let _ = anchor();
    raw_mono()
}

/// The monotonic reading of an `Instant`.
pub(crate) fn from_instant(t: Instant) -> u64 {
    let a = anchor();
    match t.checked_duration_since(a.instant) {
        Some(d) => a
            .mono_ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        None => a
            .mono_ns
            .saturating_sub(u64::try_from((a.instant - t).as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// A monotonic reading as nanoseconds since the unix epoch.
pub(crate) fn unix_nanos(mono: u64) -> i64 {
    let a = anchor();
    let delta = mono as i128 - a.mono_ns as i128;
    i64::try_from(a.wall_ns as i128 + delta).unwrap_or(i64::MAX)
}

/// The monotonic reading matching a wall-clock time (for APIs that pass `SystemTime`,
/// such as OpenTelemetry's).
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
pub(crate) fn from_system_time(t: SystemTime) -> u64 {
    let a = anchor();
    let wall = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let mono = a.mono_ns as i128 + (wall - a.wall_ns as i128);
    u64::try_from(mono.max(0)).unwrap_or(u64::MAX)
}

/// Nanoseconds between two readings, never negative.
pub(crate) fn nanos_between(start: u64, end: u64) -> i64 {
    i64::try_from(end.saturating_sub(start)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn derived_wall_clock_tracks_instants() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1500);
        let (m0, m1) = (from_instant(t0), from_instant(t1));
        assert_eq!(m1 - m0, 1_500_000_000);
        assert_eq!(unix_nanos(m1) - unix_nanos(m0), 1_500_000_000);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        assert!((unix_nanos(now()) - wall).abs() < 1_000_000_000);
        assert_eq!(nanos_between(m1, m0), 0);
        let wall_t1 = UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_nanos(m1)).unwrap_or(0));
        assert_eq!(from_system_time(wall_t1), m1);
        let a = now();
        assert!(
            from_instant(Instant::now()) >= a,
            "raw readings and Instant share one clock"
        );
    }
}
