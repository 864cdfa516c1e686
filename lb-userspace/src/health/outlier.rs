//! Passive health checking (outlier detection) of one backend, from the results the proxy
//! reports: pure, the caller passes the time.
//!
//! `consecutive_failures` failed requests in a row eject a backend for `base_ejection` times
//! the number of times it was ejected, capped at `max_ejection` (Envoy's rule). That count
//! decays by one for every `base_ejection` the backend spends back in the pool, so a backend
//! that misbehaved once last week does not get the long sentence today.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::OutlierDetection;

/// Outlier-detection state of one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outlier {
    consecutive_failures: u32,
    /// Ejections that lengthen the next one (decays, see the module docs).
    multiplier: u32,
    ejected_until: Option<Instant>,
    /// Ejections so far, for metrics.
    total: u64,
}

impl Outlier {
    /// The end of the last ejection, which may have passed: the next ejection measures good
    /// behaviour from it.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Whether the backend is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// Ejections so far.
    pub fn total_ejections(&self) -> u64 {
        self.total
    }

    /// Folds in one request result and says whether the backend should now be ejected;
    /// the caller checks the pool's cap and calls [`eject`](Outlier::eject). Results
    /// reported while the backend is ejected (panic mode still sends it requests) are ignored.
    pub fn record(&mut self, ok: bool, od: &OutlierDetection, now: Instant) -> bool {
        if self.is_ejected(now) {
            return false;
        }
        if ok {
            self.consecutive_failures = 0;
            return false;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_failures >= od.consecutive_failures.max(1)
    }

    /// Ejects the backend from `now`; returns when the ejection ends.
    pub fn eject(&mut self, od: &OutlierDetection, now: Instant) -> Instant {
        if let Some(released) = self.ejected_until
            && now > released
            && !od.base_ejection.is_zero()
        {
            let behaved = (now - released).as_nanos() / od.base_ejection.as_nanos();
            let decay = u32::try_from(behaved).unwrap_or(u32::MAX);
            self.multiplier = self.multiplier.saturating_sub(decay);
        }
        self.multiplier = self.multiplier.saturating_add(1);
        self.total += 1;
        self.consecutive_failures = 0;
        let until = now + ejection_time(od, self.multiplier);
        self.ejected_until = Some(until);
        until
    }
}

/// How long the `multiplier`-th ejection in a row lasts.
pub fn ejection_time(od: &OutlierDetection, multiplier: u32) -> Duration {
    od.base_ejection
        .saturating_mul(multiplier.max(1))
        .min(od.max_ejection.max(od.base_ejection))
}

/// How many of a pool's `pool_size` backends may be ejected at once.
///
/// `max_percent` of the pool, rounded down but at least one (as Envoy: otherwise the default
/// 10% would never eject anything from a pool under ten backends), and never the last
/// backend standing unless the pool has only one. 0% disables ejection.
pub fn ejection_cap(pool_size: usize, max_percent: u8) -> usize {
    if pool_size == 0 || max_percent == 0 {
        return 0;
    }
    let by_percent = (pool_size * usize::from(max_percent.min(100)) / 100).max(1);
    if pool_size == 1 {
        1
    } else {
        by_percent.min(pool_size - 1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Outlier, ejection_cap, ejection_time};
    use crate::config::OutlierDetection;

    const SEC: Duration = Duration::from_secs(1);

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection: 10 * SEC,
            max_ejection: 25 * SEC,
            max_ejected_percent: 10,
            count_5xx: true,
        }
    }

    /// Reports failures until the backend asks to be ejected; returns how many it took.
    fn fail_until_ejectable(o: &mut Outlier, now: Instant) -> usize {
        (1..=100).find(|_| o.record(false, &od(), now)).unwrap_or(0)
    }

    #[test]
    fn consecutive_failures_ask_for_ejection_and_a_success_resets_the_count() {
        let now = Instant::now();
        let mut o = Outlier::default();
        assert!(!o.record(false, &od(), now));
        assert!(!o.record(false, &od(), now));
        assert!(!o.record(true, &od(), now));
        assert_eq!(fail_until_ejectable(&mut o, now), 3);
    }

    #[test]
    fn ejections_grow_by_base_per_ejection_up_to_the_cap() {
        let mut now = Instant::now();
        let mut o = Outlier::default();
        let mut lengths = Vec::new();
        for _ in 0..4 {
            assert_eq!(fail_until_ejectable(&mut o, now), 3);
            let until = o.eject(&od(), now);
            assert!(o.is_ejected(now));
            // Reports while ejected are ignored.
            assert!(!o.record(false, &od(), now));
            lengths.push((until - now).as_secs());
            now = until;
            assert!(!o.is_ejected(now));
        }
        assert_eq!(lengths, vec![10, 20, 25, 25]);
        assert_eq!(o.total_ejections(), 4);
    }

    #[test]
    fn the_multiplier_decays_by_one_per_base_ejection_of_good_behaviour() {
        let start = Instant::now();
        let mut o = Outlier::default();
        let first = o.eject(&od(), start); // 10 s
        let second = o.eject(&od(), first); // 20 s
        assert_eq!(second - first, 20 * SEC);
        // 10 s of good behaviour: multiplier 2 -> 1, so the next ejection is 2 x base.
        let third = o.eject(&od(), second + 10 * SEC);
        assert_eq!(third - (second + 10 * SEC), 20 * SEC);
        // Long good behaviour: back to the base.
        let later = third + 3600 * SEC;
        assert_eq!(o.eject(&od(), later) - later, 10 * SEC);
    }

    #[test]
    fn ejection_time_never_exceeds_the_maximum() {
        assert_eq!(ejection_time(&od(), 0), 10 * SEC);
        assert_eq!(ejection_time(&od(), u32::MAX), 25 * SEC);
    }

    #[test]
    fn the_cap_keeps_a_share_of_the_pool_but_always_allows_one() {
        assert_eq!(ejection_cap(10, 10), 1);
        assert_eq!(ejection_cap(30, 10), 3);
        assert_eq!(ejection_cap(3, 10), 1);
        assert_eq!(ejection_cap(4, 50), 2);
        // Never the last one standing...
        assert_eq!(ejection_cap(4, 100), 3);
        assert_eq!(ejection_cap(2, 100), 1);
        // ...unless there is only one.
        assert_eq!(ejection_cap(1, 10), 1);
        assert_eq!(ejection_cap(5, 0), 0);
        assert_eq!(ejection_cap(0, 50), 0);
    }
}
