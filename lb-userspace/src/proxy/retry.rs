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

    /// Takes a retry slot if the budget allows one; the slot is held until the guard drops.
    pub fn try_retry(&self, budget_percent: u8) -> Option<InFlight<'_>> {
        let active = self.active.load(Relaxed);
        let allowed = (active * usize::from(budget_percent) / 100).max(1);
        self.retries
            .fetch_update(Relaxed, Relaxed, |r| (r < allowed).then_some(r + 1))
            .ok()
            .map(|_| InFlight(&self.retries))
    }

    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> usize {
        self.retries.load(Relaxed)
    }
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
        let first = budget.try_retry(20).expect("first retry");
        let second = budget.try_retry(20).expect("second retry");
        assert!(budget.try_retry(20).is_none());
        drop(first);
        let third = budget.try_retry(20).expect("a slot freed");
        drop((second, third, requests));
        assert_eq!(budget.retries_in_flight(), 0);
        // A lone request may still retry once at a time.
        let _one = budget.request();
        let retry = budget.try_retry(20).expect("minimum of one");
        assert!(budget.try_retry(20).is_none());
        drop(retry);
    }
}
