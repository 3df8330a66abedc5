//! The figures of one run ([`Sample`]) and of several ([`Summary`]: each
//! figure as median, min and max over runs).
//!
//! Percentiles are nearest-rank over every latency of a run (sorted Vec; a
//! run holds at most a few hundred thousand), so p99 of a run is an
//! observed latency, not an interpolation.

use crate::measure::cpu::CpuTimes;

/// One run's figures. A figure the run could not observe is NaN.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Deliveries (one message to one receiver) per second.
    pub delivered_per_sec: f64,
    pub requests_per_delivery: f64,
    pub bytes_per_delivery: f64,
    /// CPU seconds per 1000 deliveries.
    pub cpu_per_1k: CpuTimes,
    /// Publishes the server refused (error frames to the publisher).
    pub rejected: u64,
}

/// A figure over several runs.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Median, min and max of the finite `values` (NaN when there are none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }

    /// This median over `other`'s.
    pub fn ratio(&self, other: &Spread) -> f64 {
        self.median / other.median
    }
}

/// Several runs' figures.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50_ms: Spread,
    pub p95_ms: Spread,
    pub p99_ms: Spread,
    pub delivered_per_sec: Spread,
    pub requests_per_delivery: Spread,
    pub bytes_per_delivery: Spread,
    /// Both workerd processes, CPU s per 1000 deliveries.
    pub cpu_workerd: Spread,
    /// Of which the runtime (the share production would pay).
    pub cpu_runtime: Spread,
    /// wrangler (node) CPU s per 1000 deliveries.
    pub cpu_tooling: Spread,
    /// The benchmark's own CPU s per 1000 deliveries.
    pub cpu_bench: Spread,
    /// Publishes refused over all runs.
    pub rejected: u64,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Summary {
        let spread = |f: fn(&Sample) -> f64| Spread::of(samples.iter().map(f));
        Summary {
            p50_ms: spread(|s| s.p50_ms),
            p95_ms: spread(|s| s.p95_ms),
            p99_ms: spread(|s| s.p99_ms),
            delivered_per_sec: spread(|s| s.delivered_per_sec),
            requests_per_delivery: spread(|s| s.requests_per_delivery),
            bytes_per_delivery: spread(|s| s.bytes_per_delivery),
            cpu_workerd: spread(|s| s.cpu_per_1k.workerd()),
            cpu_runtime: spread(|s| s.cpu_per_1k.runtime),
            cpu_tooling: spread(|s| s.cpu_per_1k.tooling),
            cpu_bench: spread(|s| s.cpu_per_1k.bench),
            rejected: samples.iter().map(|s| s.rejected).sum(),
        }
    }
}

/// The `q` quantile (0..=1) of `sorted` µs, in ms, by nearest rank.
pub fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[7000], 0.5), 7.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }

    #[test]
    fn spread_skips_missing_figures() {
        let s = Spread::of([3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 4.0]).median, 2.5);
        assert!(Spread::of([]).median.is_nan());
    }
}
