//! Wall-clock timestamps from the monotonic clock.
//!
//! Spans need a start in nanoseconds since the epoch and a duration. Reading the wall
//! clock for the start and the monotonic clock for the duration costs two clock reads and
//! lets a wall-clock step produce nonsense durations; instead the process takes one
//! (wall, monotonic) anchor and derives every timestamp from the monotonic clock.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    wall_ns: i64,
    mono: Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        wall_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0),
        mono: Instant::now(),
    })
}

/// The monotonic instant `t` as nanoseconds since the unix epoch.
pub(crate) fn unix_nanos(t: Instant) -> i64 {
    let a = anchor();
    match t.checked_duration_since(a.mono) {
        Some(d) => a
            .wall_ns
            .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        None => {
            let back = a.mono.saturating_duration_since(t);
            a.wall_ns
                .saturating_sub(i64::try_from(back.as_nanos()).unwrap_or(i64::MAX))
        }
    }
}

/// Nanoseconds between two instants, never negative.
pub(crate) fn nanos_between(start: Instant, end: Instant) -> i64 {
    i64::try_from(end.saturating_duration_since(start).as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn derived_wall_clock_tracks_instants() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(unix_nanos(t1) - unix_nanos(t0), 1_500_000_000);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        assert!((unix_nanos(Instant::now()) - wall).abs() < 1_000_000_000);
        assert_eq!(nanos_between(t1, t0), 0);
    }
}
