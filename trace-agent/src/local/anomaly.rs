//! Anomaly bands: the range a chart's next point is expected in, from the points before it.
//!
//! **Method** (robust rolling median / MAD, trailing): for point `i`, take the last
//! [`BandParams::history`] points before it that have a value (gaps are skipped). With fewer
//! than [`BandParams::min_history`], the point has no band. Otherwise
//!
//! * `expected = median(history)`,
//! * `spread = 1.4826 · median(|x − expected|)` (the MAD scaled to a normal's σ),
//! * `half = max(k · spread, min_relative · |expected|, min_absolute)`,
//! * the band is `[expected − half, expected + half]` (clamped at 0: latencies and rates are
//!   never negative), and the point is **anomalous** when its value is outside.
//!
//! The median and the MAD ignore a few outliers in the history (up to half of it), so a spike
//! does not widen the band of the points after it, and a lasting level shift becomes the new
//! normal after `history / 2` points. The floors keep a perfectly flat history from
//! flagging the smallest wobble. Parameters of the charts: [`LATENCY`] and [`ERROR_RATE`].

use serde::Serialize;

/// Parameters of [`bands`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandParams {
    /// Points of history (trailing, with a value).
    pub history: usize,
    /// Fewest points of history for a band.
    pub min_history: usize,
    /// Width in robust standard deviations.
    pub k: f64,
    /// Smallest half-width relative to the expected value.
    pub min_relative: f64,
    /// Smallest half-width in the series' unit.
    pub min_absolute: f64,
}

/// Latency charts (p95 per slot): 10 points of history, 3σ, at least ±20 % of the median.
pub const LATENCY: BandParams = BandParams {
    history: 10,
    min_history: 5,
    k: 3.0,
    min_relative: 0.2,
    min_absolute: 0.0,
};

/// Error-rate charts (errors / hits per slot): 10 points of history, 3σ, at least ±5 points
/// of percentage (a few requests per slot make the rate jumpy).
pub const ERROR_RATE: BandParams = BandParams {
    history: 10,
    min_history: 5,
    k: 3.0,
    min_relative: 0.0,
    min_absolute: 0.05,
};

/// The band of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Band {
    /// Median of the history.
    pub expected: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// The point's value is outside `[lo, hi]`.
    pub anomaly: bool,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted.get(n / 2).copied().unwrap_or(0.0),
        _ => (sorted.get(n / 2 - 1).copied().unwrap_or(0.0) + sorted.get(n / 2).copied().unwrap_or(0.0)) / 2.0,
    }
}

fn sort(v: &mut [f64]) {
    v.sort_by(f64::total_cmp);
}

/// The band of every point of `series` (`None`: too little history). Linear in the series'
/// length times `history`.
pub fn bands(series: &[Option<f64>], p: &BandParams) -> Vec<Option<Band>> {
    let mut out = Vec::with_capacity(series.len());
    let mut past: Vec<f64> = Vec::with_capacity(p.history);
    for value in series {
        out.push(if past.len() >= p.min_history.max(1) {
            let mut h = past.clone();
            sort(&mut h);
            let expected = median(&h);
            let mut dev: Vec<f64> = h.iter().map(|x| (x - expected).abs()).collect();
            sort(&mut dev);
            let spread = 1.4826 * median(&dev);
            let half = (p.k * spread).max(p.min_relative * expected.abs()).max(p.min_absolute);
            let (lo, hi) = ((expected - half).max(0.0), expected + half);
            Some(Band {
                expected,
                lo,
                hi,
                anomaly: value.is_some_and(|v| v < lo || v > hi),
            })
        } else {
            None
        });
        if let Some(v) = value.filter(|v| v.is_finite()) {
            if past.len() == p.history.max(1) {
                past.remove(0);
            }
            past.push(v);
        }
    }
    out
}

/// Indexes of the anomalous points.
pub fn anomalies(bands: &[Option<Band>]) -> Vec<usize> {
    bands
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_some_and(|b| b.anomaly))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in `[-1, 1)` (an LCG: the same series on every run).
    fn noise(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// A daily-looking latency series: 100 ms ± 8 ms noise plus a slow wave, 300 points.
    fn latency_series(seed: u64) -> Vec<Option<f64>> {
        let mut s = seed;
        (0..300)
            .map(|i| Some(100e6 + 8e6 * noise(&mut s) + 10e6 * (f64::from(i) / 40.0).sin()))
            .collect()
    }

    #[test]
    fn injected_latency_spikes_are_found_and_noise_is_not() {
        for seed in 1..=5 {
            let mut series = latency_series(seed);
            let injected = [40, 97, 150, 151, 220, 271];
            for &i in &injected {
                if let Some(Some(v)) = series.get_mut(i) {
                    *v *= 2.5;
                }
            }
            // A dip: the service answering much faster (failing fast) is an anomaly too.
            if let Some(Some(v)) = series.get_mut(180) {
                *v *= 0.3;
            }
            let found = anomalies(&bands(&series, &LATENCY));
            for i in injected.iter().chain(&[180]) {
                assert!(found.contains(i), "seed {seed}: point {i} not flagged; found {found:?}");
            }
            let false_positives = found.len() - injected.len() - 1;
            assert!(
                false_positives <= 3,
                "seed {seed}: {false_positives} false positives of 293: {found:?}"
            );
        }
    }

    #[test]
    fn a_spike_does_not_widen_the_band_after_it() {
        let mut series: Vec<Option<f64>> = vec![Some(10.0); 20];
        series[10] = Some(1000.0);
        let b = bands(&series, &LATENCY);
        assert!(b[10].unwrap().anomaly);
        let after = b[11].unwrap();
        assert!(!after.anomaly && after.hi < 13.0, "{after:?}");
    }

    #[test]
    fn a_level_shift_becomes_normal() {
        let mut series: Vec<Option<f64>> = vec![Some(100.0); 20];
        series.extend(vec![Some(300.0); 20]);
        let found = anomalies(&bands(&series, &LATENCY));
        // Flagged while the shift is new, then the median moves.
        assert_eq!(found, (20..25).collect::<Vec<_>>());
    }

    #[test]
    fn gaps_and_short_history_have_no_band() {
        let series = [
            Some(1.0),
            None,
            Some(1.0),
            None,
            Some(1.0),
            Some(1.0),
            None,
            Some(1.0),
            Some(1.0),
            None,
            Some(50.0),
        ];
        let b = bands(&series, &LATENCY);
        // Five values (the minimum) come before point 8; a gap has a band but no anomaly.
        assert!(b[..8].iter().all(Option::is_none), "{b:?}");
        assert!(b[8].is_some_and(|b| !b.anomaly));
        assert!(b[9].is_some_and(|b| !b.anomaly));
        assert!(b[10].is_some_and(|b| b.anomaly));
    }

    #[test]
    fn injected_error_bursts_are_found() {
        let mut s = 7;
        // 100 requests per slot, ~2 % errors, binomial-ish noise.
        let mut series: Vec<Option<f64>> = (0..200).map(|_| Some((0.02 + 0.01 * noise(&mut s)).max(0.0))).collect();
        for i in [30, 90, 91, 160] {
            series[i] = Some(0.35);
        }
        let found = anomalies(&bands(&series, &ERROR_RATE));
        assert_eq!(found, vec![30, 90, 91, 160]);
    }
}
