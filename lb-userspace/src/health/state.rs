//! The rise/fall state machine of one backend's active checks: pure, no clocks or I/O.
//!
//! A backend starts [`Health::Unconfirmed`]: healthy, so a fresh start or a reload sends
//! traffic at once, but not yet vouched for by a probe, so its first failed probe takes it
//! down without waiting for `fall` failures (HAProxy's `init-state up`). After one passed
//! probe it is [`Health::Up`] and the usual thresholds apply.

/// Active-check health of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Healthy until the first probe says otherwise.
    Unconfirmed,
    /// Healthy, with the failures seen since the last success.
    Up {
        /// Consecutive failed probes, below `fall`.
        failures: u8,
    },
    /// Unhealthy, with the successes seen since the last failure.
    Down {
        /// Consecutive passed probes, below `rise`.
        successes: u8,
    },
}

/// A change of [`Health::is_healthy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The backend became healthy.
    Rose,
    /// The backend became unhealthy.
    Fell,
}

impl Health {
    /// The state of a backend nothing is known about yet.
    pub const fn initial() -> Self {
        Health::Unconfirmed
    }

    /// Whether the backend takes traffic as far as active checks go.
    pub fn is_healthy(&self) -> bool {
        !matches!(self, Health::Down { .. })
    }

    /// Folds in one probe result; `rise` and `fall` are at least 1 (validated, clamped here).
    pub fn record(&mut self, passed: bool, rise: u8, fall: u8) -> Option<Transition> {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let (next, transition) = match (*self, passed) {
            (Health::Unconfirmed | Health::Up { .. }, true) => (Health::Up { failures: 0 }, None),
            (Health::Unconfirmed, false) => (Health::Down { successes: 0 }, Some(Transition::Fell)),
            (Health::Up { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= fall {
                    (Health::Down { successes: 0 }, Some(Transition::Fell))
                } else {
                    (Health::Up { failures }, None)
                }
            }
            (Health::Down { .. }, false) => (Health::Down { successes: 0 }, None),
            (Health::Down { successes }, true) => {
                let successes = successes.saturating_add(1);
                if successes >= rise {
                    (Health::Up { failures: 0 }, Some(Transition::Rose))
                } else {
                    (Health::Down { successes }, None)
                }
            }
        };
        *self = next;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, Transition};

    /// Feeds `results` and returns the transitions, in order, with the probe that caused them.
    fn run(health: &mut Health, results: &[bool], rise: u8, fall: u8) -> Vec<(usize, Transition)> {
        results
            .iter()
            .enumerate()
            .filter_map(|(i, ok)| health.record(*ok, rise, fall).map(|t| (i, t)))
            .collect()
    }

    #[test]
    fn starts_healthy_and_the_first_failure_before_any_success_takes_it_down() {
        let mut h = Health::initial();
        assert!(h.is_healthy());
        assert_eq!(run(&mut h, &[false], 2, 3), vec![(0, Transition::Fell)]);
        assert!(!h.is_healthy());
    }

    #[test]
    fn once_confirmed_it_falls_after_fall_consecutive_failures_only() {
        let mut h = Health::initial();
        // A success confirms; two failures, a success (resets), then three failures.
        let results = [true, false, false, true, false, false, false];
        assert_eq!(run(&mut h, &results, 2, 3), vec![(6, Transition::Fell)]);
    }

    #[test]
    fn rises_after_rise_consecutive_successes_and_a_failure_restarts_the_count() {
        let mut h = Health::Down { successes: 0 };
        let results = [true, false, true, true, true];
        assert_eq!(run(&mut h, &results, 3, 3), vec![(4, Transition::Rose)]);
        assert_eq!(h, Health::Up { failures: 0 });
    }

    #[test]
    fn thresholds_of_one_flip_on_every_change_and_zero_is_treated_as_one() {
        let mut h = Health::Up { failures: 0 };
        let results = [false, true, false, true];
        let expected = vec![
            (0, Transition::Fell),
            (1, Transition::Rose),
            (2, Transition::Fell),
            (3, Transition::Rose),
        ];
        assert_eq!(run(&mut h, &results, 1, 1), expected);
        assert_eq!(run(&mut h, &results, 0, 0), expected);
    }

    #[test]
    fn repeated_results_in_a_settled_state_change_nothing() {
        let mut h = Health::Up { failures: 0 };
        assert!(run(&mut h, &[true; 10], 2, 3).is_empty());
        let mut h = Health::Down { successes: 0 };
        assert!(run(&mut h, &[false; 10], 2, 3).is_empty());
    }
}
