//! Peak-EWMA response time of a backend, as Finagle and linkerd use it for
//! `least_response_time`: a slower answer raises the estimate at once (the peak), faster
//! ones pull it down gradually, and with no answers it decays toward zero so an idle or
//! recovered backend is tried again.
//!
//! Lock-free: the estimate and its time are two atomics. Two updates racing may lose one
//! sample, which an estimate can afford; readers never wait.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How fast the estimate forgets: a sample weighs `1 - e^(-elapsed / DECAY)`. linkerd's
/// default.
pub const DECAY: Duration = Duration::from_secs(10);

/// A backend's response time estimate, in seconds.
#[derive(Debug)]
pub struct PeakEwma {
    /// Reference for `updated_ns`.
    epoch: Instant,
    /// The estimate's `f64` bits; `NO_SAMPLE` before the first answer.
    cost: AtomicU64,
    /// Nanoseconds after `epoch` of the last update.
    updated_ns: AtomicU64,
}

const NO_SAMPLE: u64 = u64::MAX;

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl PeakEwma {
    /// No sample yet; times are measured from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            cost: AtomicU64::new(NO_SAMPLE),
            updated_ns: AtomicU64::new(0),
        }
    }

    /// Records a response that took `rtt`, at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let next = match self.decayed(now) {
            // The peak: a slower answer counts in full at once.
            Some(cost) if rtt < cost => {
                let w = self.weight(now);
                cost * w + rtt * (1.0 - w)
            }
            _ => rtt,
        };
        self.cost.store(next.to_bits(), Relaxed);
        self.updated_ns.store(self.nanos(now), Relaxed);
    }

    /// The estimate at `now`, in seconds; `None` before the first answer.
    pub fn cost(&self, now: Instant) -> Option<f64> {
        self.decayed(now)
    }

    fn decayed(&self, now: Instant) -> Option<f64> {
        let bits = self.cost.load(Relaxed);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits) * self.weight(now))
    }

    /// `e^(-elapsed / DECAY)` since the last update.
    fn weight(&self, now: Instant) -> f64 {
        let elapsed = self
            .nanos(now)
            .saturating_sub(self.updated_ns.load(Relaxed));
        (-(elapsed as f64) / DECAY.as_nanos() as f64).exp()
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_sample_has_no_cost_and_the_first_sample_is_the_cost() {
        let t = Instant::now();
        let e = PeakEwma::new(t);
        assert_eq!(e.cost(t), None);
        e.observe(ms(100), t);
        assert!((e.cost(t).unwrap_or(0.0) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn a_slower_answer_counts_at_once_and_faster_ones_pull_down_gradually() {
        let t = Instant::now();
        let e = PeakEwma::new(t);
        e.observe(ms(1), t);
        e.observe(ms(200), t + ms(10));
        let peak = e.cost(t + ms(10)).unwrap_or(0.0);
        assert!((peak - 0.2).abs() < 1e-9, "{peak}");
        e.observe(ms(1), t + ms(20));
        let after = e.cost(t + ms(20)).unwrap_or(0.0);
        assert!(
            after > 0.19 && after < 0.2,
            "one fast answer moves it a little: {after}"
        );
        e.observe(ms(1), t + ms(20) + DECAY * 3);
        let later = e.cost(t + ms(20) + DECAY * 3).unwrap_or(1.0);
        assert!(
            later < 0.02,
            "fast answers after a while bring it down: {later}"
        );
    }

    #[test]
    fn without_answers_the_cost_decays_toward_zero() {
        let t = Instant::now();
        let e = PeakEwma::new(t);
        e.observe(ms(500), t);
        let one = e.cost(t + DECAY).unwrap_or(0.0);
        assert!((one - 0.5 / std::f64::consts::E).abs() < 1e-6, "{one}");
        assert!(e.cost(t + DECAY * 10).unwrap_or(1.0) < 0.001);
    }
}
