//! Request counters and latency histograms per route, pool and backend, as plain atomics a
//! metrics endpoint can read at any time. The request path only does relaxed atomic adds on
//! counters it holds directly; the registry's locks are taken when tables are compiled and
//! when metrics are read, never per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::error::Overload;
use super::tls::HandshakeFailure;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram: per-bucket counts (not cumulative), their sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative bucket counts (Prometheus style, last = `+Inf`), the sum in microseconds and
    /// the count.
    pub fn snapshot(&self) -> (Vec<u64>, u64, u64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            self.sum_us.load(Relaxed),
            self.count.load(Relaxed),
        )
    }
}

/// Counters of requests through one route, pool or backend.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Requests answered (by any status, including errors).
    pub requests: AtomicU64,
    /// Responses by status class: index 0 is 1xx ... index 4 is 5xx.
    pub by_class: [AtomicU64; 5],
    /// Response body bytes sent to clients.
    pub bytes_sent: AtomicU64,
    /// Time from the request head to the end of the response.
    pub latency: Histogram,
}

impl RequestStats {
    /// Records a finished request.
    pub fn record(&self, status: u16, bytes: u64, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        let class = usize::from(status / 100).saturating_sub(1).min(4);
        if let Some(c) = self.by_class.get(class) {
            c.fetch_add(1, Relaxed);
        }
        self.bytes_sent.fetch_add(bytes, Relaxed);
        self.latency.record(elapsed);
    }
}

/// Per-route statistics.
pub type RouteStats = RequestStats;

/// Per-pool statistics: requests plus what the retry machinery did.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests sent to the pool, by final status.
    pub requests: RequestStats,
    /// Retries sent.
    pub retries: AtomicU64,
    /// Retries not sent because the budget was spent.
    pub retries_over_budget: AtomicU64,
    /// Requests answered 503 because the pool had no backend.
    pub no_backend: AtomicU64,
    /// Requests (or retries) a circuit breaker refused, by [`Overload`] in declaration order.
    pub overflow: [AtomicU64; 4],
}

impl PoolStats {
    /// Counts a refusal by circuit breaker `limit`.
    pub fn overflowed(&self, limit: Overload) {
        self.overflow[limit as usize].fetch_add(1, Relaxed);
    }
}

/// Every circuit breaker, in the order of [`PoolStats::overflow`].
pub const OVERLOADS: [Overload; 4] = [
    Overload::MaxConnections,
    Overload::MaxPendingRequests,
    Overload::MaxRequests,
    Overload::MaxRetries,
];

/// Lowest status counted in [`ListenerStats::local`]; statuses are 100..=599.
const FIRST_STATUS: u16 = 100;

/// Per-listener statistics of what the proxy answered itself.
#[derive(Debug)]
pub struct ListenerStats {
    /// Responses the proxy made without a backend's answer (no route, bad requests,
    /// timeouts, redirects, direct responses, gateway errors), by status - 100.
    local: [AtomicU64; 500],
    /// Connections closed at accept because their client had `max_connections_per_client`.
    pub refused_per_client: AtomicU64,
    /// Failed client TLS handshakes, by [`HandshakeFailure::index`].
    tls_failures: [AtomicU64; HandshakeFailure::ALL.len()],
}

impl Default for ListenerStats {
    fn default() -> Self {
        Self {
            local: std::array::from_fn(|_| AtomicU64::new(0)),
            refused_per_client: AtomicU64::new(0),
            tls_failures: Default::default(),
        }
    }
}

impl ListenerStats {
    /// Counts a response the proxy made itself.
    pub fn local_response(&self, status: u16) {
        if let Some(counter) = status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| self.local.get(usize::from(i)))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts a client TLS handshake that failed.
    pub fn tls_failure(&self, failure: HandshakeFailure) {
        if let Some(counter) = self.tls_failures.get(failure.index()) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Failed client TLS handshakes so far, by failure.
    pub fn tls_failures(&self) -> impl Iterator<Item = (HandshakeFailure, u64)> + '_ {
        HandshakeFailure::ALL
            .into_iter()
            .zip(&self.tls_failures)
            .map(|(failure, counter)| (failure, counter.load(Relaxed)))
    }

    /// `(status, count)` of every status answered at least once.
    pub fn local_responses(&self) -> Vec<(u16, u64)> {
        (FIRST_STATUS..)
            .zip(&self.local)
            .map(|(status, c)| (status, c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Per-backend statistics: each try sent to it.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Tries that got a response head, by status.
    pub responses: RequestStats,
    /// Tries that failed to connect.
    pub connect_failures: AtomicU64,
    /// Tries that failed after connecting (reset, timeout, invalid response).
    pub failures: AtomicU64,
}

/// Decisions of one filter: requests it let go on, and those it answered, by reason.
#[derive(Debug)]
pub struct FilterStats {
    /// The filter type (`rate_limit`, ...).
    pub filter_type: &'static str,
    /// Requests it let go on.
    pub allowed: AtomicU64,
    /// Requests it answered, by reason; the last entry is `other`, for a reason the filter
    /// did not declare.
    denied: Box<[(&'static str, AtomicU64)]>,
    /// Other things the filter counts (`jwks_fetch_failed`, ...).
    events: Box<[(&'static str, AtomicU64)]>,
}

impl FilterStats {
    fn new(filter_type: &'static str, reasons: &[&'static str], events: &[&'static str]) -> Self {
        Self {
            filter_type,
            allowed: AtomicU64::new(0),
            denied: reasons
                .iter()
                .chain(&["other"])
                .map(|r| (*r, AtomicU64::new(0)))
                .collect(),
            events: events.iter().map(|e| (*e, AtomicU64::new(0))).collect(),
        }
    }

    /// Counts one `event` (one the filter type declared; others are not counted).
    pub fn event(&self, event: &str) {
        if let Some((_, counter)) = self.events.iter().find(|(e, _)| *e == event) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `(event, count)` of every declared event.
    pub fn events(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.events.iter().map(|(e, c)| (*e, c.load(Relaxed)))
    }

    /// Counts a decision: `allow` or a deny reason.
    pub fn record(&self, decision: &str) {
        if decision == "allow" {
            self.allowed.fetch_add(1, Relaxed);
            return;
        }
        let slot = self
            .denied
            .iter()
            .find(|(reason, _)| *reason == decision)
            .or(self.denied.last());
        if let Some((_, counter)) = slot {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `(reason, count)` of every deny reason.
    pub fn denied(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.denied.iter().map(|(r, c)| (*r, c.load(Relaxed)))
    }
}

type RouteKey = (Arc<str>, Arc<str>);
type FilterKey = (Arc<str>, Arc<str>);
type BackendKey = (Arc<str>, String);

/// Every counter of the proxy, by name; entries persist across reloads so counters keep
/// counting when the config changes around them.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    listeners: Mutex<BTreeMap<Arc<str>, Arc<ListenerStats>>>,
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteStats>>>,
    pools: Mutex<BTreeMap<Arc<str>, Arc<PoolStats>>>,
    backends: Mutex<BTreeMap<BackendKey, Arc<BackendStats>>>,
    filters: Mutex<BTreeMap<FilterKey, Arc<FilterStats>>>,
}

impl StatsRegistry {
    /// The counters of route `route` (`virtual-host#n`) of `service`, created on first use.
    pub fn route(&self, service: &str, route: &str) -> Arc<RouteStats> {
        let mut routes = lock(&self.routes);
        routes
            .entry((service.into(), route.into()))
            .or_default()
            .clone()
    }

    /// The counters of listener (service) `service`.
    pub fn listener(&self, service: &str) -> Arc<ListenerStats> {
        lock(&self.listeners)
            .entry(service.into())
            .or_default()
            .clone()
    }

    /// Every listener's counters.
    pub fn listeners(&self) -> Vec<(Arc<str>, Arc<ListenerStats>)> {
        lock(&self.listeners)
            .iter()
            .map(|(s, st)| (s.clone(), st.clone()))
            .collect()
    }

    /// The counters of pool `pool`.
    pub fn pool(&self, pool: &str) -> Arc<PoolStats> {
        lock(&self.pools).entry(pool.into()).or_default().clone()
    }

    /// The counters of backend `backend` (its name) of pool `pool`.
    pub fn backend(&self, pool: &str, backend: &str) -> Arc<BackendStats> {
        lock(&self.backends)
            .entry((pool.into(), backend.to_owned()))
            .or_default()
            .clone()
    }

    /// Every route's counters: `(service, route, stats)`.
    pub fn routes(&self) -> Vec<(Arc<str>, Arc<str>, Arc<RouteStats>)> {
        lock(&self.routes)
            .iter()
            .map(|((s, r), st)| (s.clone(), r.clone(), st.clone()))
            .collect()
    }

    /// Every pool's counters.
    pub fn pools(&self) -> Vec<(Arc<str>, Arc<PoolStats>)> {
        lock(&self.pools)
            .iter()
            .map(|(p, st)| (p.clone(), st.clone()))
            .collect()
    }

    /// The decision counters of filter `filter` of `service`, created on first use (and
    /// anew when the name now holds another filter type).
    pub fn filter(
        &self,
        service: &str,
        filter: &str,
        filter_type: &'static str,
        reasons: &[&'static str],
        events: &[&'static str],
    ) -> Arc<FilterStats> {
        let mut filters = lock(&self.filters);
        let entry = filters
            .entry((service.into(), filter.into()))
            .or_insert_with(|| Arc::new(FilterStats::new(filter_type, reasons, events)));
        let declared = entry
            .events
            .iter()
            .map(|(e, _)| *e)
            .eq(events.iter().copied());
        if entry.filter_type != filter_type || !declared {
            *entry = Arc::new(FilterStats::new(filter_type, reasons, events));
        }
        entry.clone()
    }

    /// Every filter's counters: `(service, filter, stats)`.
    pub fn filters(&self) -> Vec<(Arc<str>, Arc<str>, Arc<FilterStats>)> {
        lock(&self.filters)
            .iter()
            .map(|((s, f), st)| (s.clone(), f.clone(), st.clone()))
            .collect()
    }

    /// Every backend's counters: `(pool, backend, stats)`.
    pub fn backends(&self) -> Vec<(Arc<str>, String, Arc<BackendStats>)> {
        lock(&self.backends)
            .iter()
            .map(|((p, b), st)| (p.clone(), b.clone(), st.clone()))
            .collect()
    }
}

/// Locks `mutex`, ignoring poison: counters stay readable after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(sum, 100 + 3_000 + 60_000_000);
        assert_eq!(buckets[0], 1, "<= 0.5 ms");
        assert_eq!(buckets[3], 2, "<= 5 ms");
        assert_eq!(buckets[LATENCY_BOUNDS_US.len() - 1], 2, "<= 10 s");
        assert_eq!(buckets[LATENCY_BOUNDS_US.len()], 3, "+Inf");
    }

    #[test]
    fn registry_hands_out_the_same_counters_for_a_name() {
        let registry = StatsRegistry::default();
        let a = registry.route("svc", "www#1");
        a.record(200, 10, Duration::from_millis(1));
        let b = registry.route("svc", "www#1");
        assert_eq!(b.requests.load(Relaxed), 1);
        assert_eq!(b.by_class[1].load(Relaxed), 1);
        assert_eq!(registry.routes().len(), 1);
        registry.pool("app").retries.fetch_add(1, Relaxed);
        assert_eq!(registry.pool("app").retries.load(Relaxed), 1);
    }
}
