//! Latency summaries of a run: nearest-rank percentiles and the maximum of
//! measured round trips, at microsecond resolution.

use std::time::Duration;

/// Percentiles of one run's round trips, in microseconds (`NaN` when nothing
/// was measured).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Round trips measured.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Summary {
    /// Summarizes `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let us = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_nanos() as f64 / 1e3);
        Summary {
            samples: u64::try_from(samples.len()).unwrap_or(u64::MAX),
            p50_us: us(percentile(samples, 500)),
            p99_us: us(percentile(samples, 990)),
            max_us: us(samples.last().copied()),
        }
    }
}

/// Nearest-rank percentile of sorted values; `per_mille` 500 is the median,
/// 1000 the maximum. `None` for no values.
pub fn percentile<T: Copy>(sorted: &[T], per_mille: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = sorted
        .len()
        .saturating_mul(per_mille.min(1000))
        .div_ceil(1000)
        .max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 500), Some(50));
        assert_eq!(percentile(&v, 990), Some(99));
        assert_eq!(percentile(&v, 1000), Some(100));
        assert_eq!(percentile(&v, 0), Some(1));
        assert_eq!(percentile::<u32>(&[], 500), None);
        // One value is every percentile; two: the median is the lower.
        assert_eq!(percentile(&[7], 990), Some(7));
        assert_eq!(percentile(&[1, 2], 500), Some(1));
        assert_eq!(percentile(&[1, 2], 990), Some(2));
        // Of 1000 values p99 is the 990th, not the largest.
        let k: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&k, 990), Some(990));
    }

    #[test]
    fn summary_in_microseconds() {
        let mut v: Vec<Duration> = (1..=200u64).rev().map(Duration::from_micros).collect();
        v.push(Duration::from_nanos(1_234_567));
        let s = Summary::of(&mut v);
        assert_eq!(s.samples, 201);
        assert_eq!(s.p50_us, 101.0);
        assert_eq!(s.p99_us, 199.0);
        assert_eq!(s.max_us, 1234.567);
        let e = Summary::of(&mut []);
        assert_eq!(e.samples, 0);
        assert!(e.p50_us.is_nan() && e.p99_us.is_nan() && e.max_us.is_nan());
    }
}
