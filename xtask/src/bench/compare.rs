//! What the comparisons share: the contenders, the order they run in, medians and ratios.

use serde::Serialize;

/// A load balancer measured against the others on the same topology and load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Contender {
    Sluice,
    Nginx,
    Haproxy,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Sluice, Contender::Nginx, Contender::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Sluice => "sluice",
            Contender::Nginx => "nginx",
            Contender::Haproxy => "haproxy",
        }
    }
}

/// The contenders in the order of round `round`: rotated by one each round, so none always
/// runs first (on a cold machine) or right after the same neighbour.
pub fn order<T: Copy>(items: &[T], round: u32) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let shift = round as usize % items.len();
    items[shift..]
        .iter()
        .chain(&items[..shift])
        .copied()
        .collect()
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` when
/// empty or when any value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    })
}

/// The median of the values some runs have.
pub fn median_of<T>(runs: &[T], value: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(value).collect();
    median(&values)
}

/// `ours / theirs`, when both exist and `theirs` is positive.
pub fn ratio(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A figure for a Markdown cell: `-` when missing.
pub fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A ratio for a Markdown cell, marked with whether it meets its target.
pub fn ratio_cell(value: Option<f64>, meets: impl Fn(f64) -> bool) -> String {
    match value {
        Some(v) if meets(v) => format!("{v:.2}x ✓"),
        Some(v) => format!("{v:.2}x ✗"),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_order() {
        assert_eq!(order(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(order(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(order(&[1, 2, 3], 5), [3, 1, 2]);
        assert!(order::<u8>(&[], 1).is_empty());
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio_cell(Some(1.25), |r| r >= 1.2), "1.25x ✓");
        assert_eq!(ratio_cell(Some(1.25), |r| r <= 1.0), "1.25x ✗");
        assert_eq!(cell(None, 1), "-");
    }
}
