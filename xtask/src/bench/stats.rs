//! Summaries of timing samples: median and tail percentiles by nearest rank, so every figure
//! is a time some call actually took.

use std::collections::BTreeMap;

use serde::Serialize;

/// Order statistics of a set of samples, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub min: u32,
    pub median: u32,
    pub mean: f64,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

impl Summary {
    /// Summarises `samples` (sorting them). An empty set gives all zeros.
    pub fn of(samples: &mut [u32]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Summary {
            samples: samples.len(),
            min: samples[0],
            median: percentile(samples, 50),
            mean: sum as f64 / samples.len() as f64,
            p90: percentile(samples, 90),
            p99: percentile(samples, 99),
            max: samples[samples.len() - 1],
        }
    }
}

/// The nearest-rank `pct`th percentile of sorted, non-empty `samples`.
pub fn percentile(sorted: &[u32], pct: usize) -> u32 {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// How many samples took each number of nanoseconds: the whole distribution, compactly.
pub fn histogram(samples: &[u32]) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for &s in samples {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u32> = (1..=100).rev().collect();
        let s = Summary::of(&mut samples);
        assert_eq!((s.min, s.median, s.p90, s.p99, s.max), (1, 50, 90, 99, 100));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(Summary::of(&mut []).samples, 0);
    }

    #[test]
    fn histogram_counts_each_value() {
        let h = histogram(&[3, 1, 3]);
        assert_eq!(h.into_iter().collect::<Vec<_>>(), vec![(1, 1), (3, 2)]);
    }
}
