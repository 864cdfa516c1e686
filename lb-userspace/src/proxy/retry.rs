//! Whether a failed try may be retried: the route's policy, the request's retry safety, and
//! a pool's retry budget, which keeps retries from multiplying load on a failing pool.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::Method;

use crate::config::RetryPolicy;

/// Whether `method` may be retried under `policy`: idempotent methods always, others (POST,
/// PATCH, ...) only with `non_idempotent`.
pub fn method_allows(policy: &RetryPolicy, method: &Method) -> bool {
    method.is_idempotent() || policy.non_idempotent
}

/// Whether a response status is one the policy retries.
pub fn status_retried(policy: &RetryPolicy, status: u16) -> bool {
    policy
        .on
        .iter()
        .any(|on| matches!(on, crate::config::RetryOn::Status(s) if *s == status))
}

/// Requests and retries in flight on one pool. A retry may start only while retries in
/// flight stay within `budget_percent` of the requests in flight (at least one retry is
/// always allowed, so a lone request can still be retried).
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicUsize,
    retries: AtomicUsize,
}

impl RetryBudget {
    /// Counts a request as in flight until the guard drops.
    pub fn request(&self) -> InFlight<'_> {
        self.active.fetch_add(1, Relaxed);
        InFlight(&self.active)
    }

    /// Counts a request as in flight unless `max` are already; pair with
    /// [`RetryBudget::leave`]. For a count that must outlive a borrow of the budget (a
    /// request whose body is still streaming to the client).
    pub fn try_enter(&self, max: usize) -> bool {
        self.active
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Ends a request counted by [`RetryBudget::try_enter`].
    pub fn leave(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// Takes a retry slot if the budget and `max_retries` allow one; the slot is held until
    /// the guard drops.
    pub fn try_retry(
        &self,
        budget_percent: u8,
        max_retries: usize,
    ) -> Result<InFlight<'_>, RetryDenied> {
        let active = self.active.load(Relaxed);
        let budget = (active * usize::from(budget_percent) / 100).max(1);
        self.retries
            .fetch_update(Relaxed, Relaxed, |r| {
                (r < budget.min(max_retries)).then_some(r + 1)
            })
            .map(|_| InFlight(&self.retries))
            .map_err(|r| {
                if r >= max_retries {
                    RetryDenied::MaxRetries
                } else {
                    RetryDenied::Budget
                }
            })
    }

    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> usize {
        self.retries.load(Relaxed)
    }
}

/// Why a retry was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDenied {
    /// The pool's retry budget is spent.
    Budget,
    /// `max_retries` retries are in flight (a circuit breaker).
    MaxRetries,
}

/// Decrements its counter when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;

    fn policy(non_idempotent: bool) -> RetryPolicy {
        RetryPolicy {
            on: vec![RetryOn::ConnectFailure, RetryOn::Status(503)],
            attempts: 2,
            per_try_timeout: None,
            non_idempotent,
            budget_percent: 20,
        }
    }

    #[test]
    fn idempotent_methods_only_unless_allowed() {
        assert!(method_allows(&policy(false), &Method::GET));
        assert!(method_allows(&policy(false), &Method::PUT));
        assert!(!method_allows(&policy(false), &Method::POST));
        assert!(!method_allows(&policy(false), &Method::PATCH));
        assert!(method_allows(&policy(true), &Method::POST));
        assert!(status_retried(&policy(false), 503));
        assert!(!status_retried(&policy(false), 500));
    }

    #[test]
    fn budget_bounds_retries_in_flight() {
        let budget = RetryBudget::default();
        let requests: Vec<_> = (0..10).map(|_| budget.request()).collect();
        // 20% of 10 requests: two retries at once, not three.
        let first = budget.try_retry(20, 10).expect("first retry");
        let second = budget.try_retry(20, 10).expect("second retry");
        assert_eq!(budget.try_retry(20, 10).err(), Some(RetryDenied::Budget));
        drop(first);
        let third = budget.try_retry(20, 10).expect("a slot freed");
        drop((second, third, requests));
        assert_eq!(budget.retries_in_flight(), 0);
        // A lone request may still retry once at a time.
        let _one = budget.request();
        let retry = budget.try_retry(20, 10).expect("minimum of one");
        assert!(budget.try_retry(20, 10).is_err());
        drop(retry);
    }

    #[test]
    fn circuit_breakers_bound_requests_and_retries() {
        let budget = RetryBudget::default();
        assert!(budget.try_enter(2), "first");
        assert!(budget.try_enter(2), "second");
        assert!(!budget.try_enter(2), "max_requests reached");
        budget.leave();
        assert!(budget.try_enter(2), "a slot freed");
        let _many: Vec<_> = (0..100).map(|_| budget.request()).collect();
        let _r = budget.try_retry(100, 1).expect("one retry");
        assert_eq!(
            budget.try_retry(100, 1).err(),
            Some(RetryDenied::MaxRetries)
        );
    }
}
