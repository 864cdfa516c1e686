//! Upstream pools: the backends of a config pool, the set of them that may take requests
//! (swapped atomically, so the health checker can replace it without stopping readers),
//! and the policy that picks one. Each backend sends through its kept-alive connections
//! ([`super::connections`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::Authority;
use http::{HeaderMap, Request};

use super::balance::{Selector, request_hash};
use super::body::RequestBody;
use super::connections::{
    BackendConnections, ConnectSettings, ConnectionRegistry, Exchange, PendingLimit,
};
use super::error::{ErrorKind, Overload, ProxyError, UpstreamError};
use super::retry::{InFlight, RetryBudget, RetryDenied};
use super::stats::{BackendStats, PoolStats, StatsRegistry};
use crate::config::{Pool, SLOW_START_FLOOR, UpstreamProtocol};
use crate::health::HealthHandle;

/// One backend of a pool.
#[derive(Debug)]
pub struct UpstreamBackend {
    /// The backend's name in the config.
    pub name: Arc<str>,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its weight.
    pub weight: u16,
    /// `address` as a URI authority, built once.
    pub authority: Authority,
    in_flight: AtomicUsize,
    /// Response time estimate, for least_response_time.
    latency: super::latency::PeakEwma,
    /// Failed tries in a row, so successes are reported to outlier detection only when they
    /// end a run of failures (the common case takes no lock).
    failed_in_row: AtomicU32,
    /// Its counters.
    pub stats: Arc<BackendStats>,
    /// Kept-alive connections to it, shared with other pools that reach it the same way.
    connections: Arc<BackendConnections>,
    /// When its slow-start window began (it joined or was readmitted); `None` when it never
    /// ramped. Written on the control path only, read when a backend set is built.
    ramp_start: Mutex<Option<Instant>>,
}

impl UpstreamBackend {
    /// Requests in flight to this backend now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Sends `request` (origin-form URI on HTTP/1.1, absolute on HTTP/2) to this backend;
    /// `pending` bounds the wait when every connection it may open is busy.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        pending: PendingLimit<'_>,
    ) -> Result<Exchange, UpstreamError> {
        self.connections.send(request, pending).await
    }

    fn ramp_start(&self) -> Option<Instant> {
        *self
            .ramp_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn start_ramp(&self, at: Option<Instant>) {
        *self
            .ramp_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Counts a request to this backend until the guard drops (least_request reads it).
    pub fn start(self: &Arc<Self>) -> BackendGuard {
        self.in_flight.fetch_add(1, Relaxed);
        BackendGuard(self.clone(), std::time::Instant::now())
    }
}

/// A request in flight to a backend, and when it started; see [`UpstreamBackend::start`].
#[derive(Debug)]
pub struct BackendGuard(Arc<UpstreamBackend>, std::time::Instant);

impl BackendGuard {
    /// The backend.
    pub fn backend(&self) -> &Arc<UpstreamBackend> {
        &self.0
    }
}

impl Drop for BackendGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        let now = std::time::Instant::now();
        self.0
            .latency
            .observe(now.saturating_duration_since(self.1), now);
    }
}

/// A request in flight to a pool, for `max_requests` and retry budgets; see
/// [`UpstreamPool::admit`].
#[derive(Debug)]
pub struct PoolSlot(Arc<UpstreamPool>);

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.0.budget.leave();
    }
}

/// A set of backends and the selector built for exactly that set.
#[derive(Debug)]
pub struct BackendSet {
    backends: Vec<Arc<UpstreamBackend>>,
    selector: Selector,
    slow_start: SlowStart,
}

/// The slow-start windows of a set's backends.
#[derive(Debug, Default)]
struct SlowStart {
    /// Each backend's window start, for those whose window may still be open.
    starts: Vec<Option<Instant>>,
    window: Duration,
    /// When the last window closes; `None` when none is open.
    until: Option<Instant>,
}

impl SlowStart {
    fn new(window: Option<Duration>, backends: &[Arc<UpstreamBackend>]) -> Self {
        let Some(window) = window else {
            return Self::default();
        };
        let starts: Vec<Option<Instant>> = backends.iter().map(|b| b.ramp_start()).collect();
        let until = starts.iter().flatten().max().map(|start| *start + window);
        Self {
            starts,
            window,
            until,
        }
    }

    fn ramping(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// Backend `i`'s share of its weight at `now`: linear from [`SLOW_START_FLOOR`] to 1.
    fn factor(&self, i: usize, now: Instant) -> f64 {
        let Some(Some(start)) = self.starts.get(i) else {
            return 1.0;
        };
        let elapsed = now.saturating_duration_since(*start).as_secs_f64();
        let progress = (elapsed / self.window.as_secs_f64()).min(1.0);
        SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress
    }
}

impl BackendSet {
    fn new(pool: &Pool, backends: Vec<Arc<UpstreamBackend>>) -> Self {
        let weighted: Vec<(SocketAddr, u16)> =
            backends.iter().map(|b| (b.address, b.weight)).collect();
        Self {
            selector: Selector::build(&pool.policy, &weighted),
            slow_start: SlowStart::new(pool.slow_start, &backends),
            backends,
        }
    }

    /// The backends in the set.
    pub fn backends(&self) -> &[Arc<UpstreamBackend>] {
        &self.backends
    }

    fn pick(&self, headers: &HeaderMap, client: IpAddr) -> Option<&Arc<UpstreamBackend>> {
        let hash = self
            .selector
            .hash_on()
            .and_then(|on| request_hash(on, headers, client));
        let index = self.selector.pick(hash, Loads(self, Instant::now()))?;
        self.backends.get(index)
    }
}

/// The backends' loads (and slow-start ramps) as the selector reads them.
struct Loads<'a>(&'a BackendSet, Instant);

impl super::balance::BackendLoad for Loads<'_> {
    fn in_flight(&self, i: usize) -> usize {
        self.0.backends.get(i).map_or(0, |b| b.in_flight())
    }

    fn latency(&self, i: usize) -> Option<f64> {
        self.0.backends.get(i).and_then(|b| b.latency.cost(self.1))
    }

    fn ramping(&self) -> bool {
        self.0.slow_start.ramping(self.1)
    }

    fn weight_factor(&self, i: usize) -> f64 {
        self.0.slow_start.factor(i, self.1)
    }
}

/// A pool as the proxy uses it.
pub struct UpstreamPool {
    /// The pool's name.
    pub name: Arc<str>,
    config: Pool,
    all: Arc<BackendSet>,
    usable: ArcSwap<BackendSet>,
    /// Requests and retries in flight, for retry budgets.
    pub budget: RetryBudget,
    /// The pool's counters.
    pub stats: Arc<PoolStats>,
    /// Where tries' outcomes go for outlier detection.
    outcomes: Option<HealthHandle>,
    /// Requests waiting for a backend connection (`max_pending_requests`).
    waiting: AtomicUsize,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Builds the pool with every backend usable. Must run inside the tokio runtime.
    /// `outcomes` receives failed tries (connect failures, resets, 5xx) and the success
    /// that ends a run of them.
    ///
    /// Backends take their connections from `connections`, so a pool rebuilt by a reload
    /// keeps the kept-alive connections of every backend that stays, and a removed
    /// backend's idle connections close when the last pool using it goes.
    ///
    /// `previous` is the running pool of the same name this one replaces: its backends keep
    /// their slow-start windows, and backends it lacked (added by the file or by discovery)
    /// start one now. A pool with no predecessor starts with every backend at full weight.
    pub fn new(
        pool: &Pool,
        stats: &StatsRegistry,
        outcomes: Option<HealthHandle>,
        connections: &ConnectionRegistry,
        previous: Option<&UpstreamPool>,
    ) -> Self {
        let now = Instant::now();
        let ramp_start = |address: SocketAddr| {
            let previous = previous?;
            match previous.backends().iter().find(|b| b.address == address) {
                Some(kept) => kept.ramp_start(),
                None => Some(now),
            }
        };
        let settings = ConnectSettings {
            protocol: pool.upstream_protocol,
            connect_timeout: pool.connect_timeout,
            max_connections: pool.circuit_breakers.max_connections,
        };
        let backends: Vec<Arc<UpstreamBackend>> = pool
            .backends
            .iter()
            .map(|b| {
                Arc::new(UpstreamBackend {
                    name: b.name.as_str().into(),
                    address: b.address,
                    weight: b.weight,
                    authority: authority(b.address),
                    in_flight: AtomicUsize::new(0),
                    latency: super::latency::PeakEwma::default(),
                    failed_in_row: AtomicU32::new(0),
                    stats: stats.backend(&pool.name, &b.name),
                    connections: connections.get(b.address, settings),
                    ramp_start: Mutex::new(ramp_start(b.address)),
                })
            })
            .collect();
        let all = Arc::new(BackendSet::new(pool, backends));
        Self {
            name: pool.name.as_str().into(),
            config: pool.clone(),
            usable: ArcSwap::new(all.clone()),
            all,
            budget: RetryBudget::default(),
            stats: stats.pool(&pool.name),
            outcomes,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Counts a request as in flight to the pool until the slot drops (when its response
    /// has ended), unless `max_requests` are already: then the request is refused (and
    /// counted).
    pub fn admit(self: &Arc<Self>) -> Result<PoolSlot, ProxyError> {
        if self
            .budget
            .try_enter(self.config.circuit_breakers.max_requests as usize)
        {
            Ok(PoolSlot(self.clone()))
        } else {
            Err(self.overloaded(Overload::MaxRequests))
        }
    }

    /// Takes a retry slot within the retry budget and `max_retries`; `None` (counted) when
    /// the retry must not be sent.
    pub fn try_retry(&self, budget_percent: u8) -> Option<InFlight<'_>> {
        let max = self.config.circuit_breakers.max_retries as usize;
        match self.budget.try_retry(budget_percent, max) {
            Ok(slot) => Some(slot),
            Err(RetryDenied::Budget) => {
                self.stats.retries_over_budget.fetch_add(1, Relaxed);
                None
            }
            Err(RetryDenied::MaxRetries) => {
                self.stats.overflowed(Overload::MaxRetries);
                None
            }
        }
    }

    /// The pool's queue for backend connections.
    pub fn pending_limit(&self) -> PendingLimit<'_> {
        PendingLimit {
            waiting: &self.waiting,
            max: self.config.circuit_breakers.max_pending_requests as usize,
        }
    }

    /// Counts a refusal by `limit` and makes its error.
    pub fn overloaded(&self, limit: Overload) -> ProxyError {
        self.stats.overflowed(limit);
        ProxyError::new(ErrorKind::Overloaded(limit))
    }

    /// The config this pool was built from (a reload keeps the pool when it is unchanged).
    pub fn config(&self) -> &Pool {
        &self.config
    }

    /// Every configured backend.
    pub fn backends(&self) -> &[Arc<UpstreamBackend>] {
        self.all.backends()
    }

    /// Replaces the set of backends that take requests with those at `usable` addresses
    /// (others are ignored). Readers switch atomically; requests in flight are unaffected.
    ///
    /// A backend that was not usable before and is now (readmitted after being unhealthy,
    /// ejected or drained) starts its slow-start window.
    pub fn set_usable(&self, usable: &[SocketAddr]) {
        if self.config.slow_start.is_some() {
            let before = self.usable.load();
            let now = Instant::now();
            for backend in self.all.backends() {
                let was = before.backends.iter().any(|b| b.address == backend.address);
                if !was && usable.contains(&backend.address) {
                    backend.start_ramp(Some(now));
                }
            }
        }
        let backends = self
            .all
            .backends()
            .iter()
            .filter(|b| usable.contains(&b.address))
            .cloned()
            .collect();
        self.usable
            .store(Arc::new(BackendSet::new(&self.config, backends)));
    }

    /// Picks a backend for a request from the usable set; `None` means answer 503. The
    /// health checker already applied the panic threshold and `when_no_healthy` when it
    /// computed that set (`health::usable_set`), so they are not applied twice here.
    pub fn pick(&self, headers: &HeaderMap, client: IpAddr) -> Option<Arc<UpstreamBackend>> {
        self.usable.load().pick(headers, client).cloned()
    }

    /// Records a response status from `backend` for passive health checking: 5xx counts as a
    /// failure unless the pool's outlier detection says otherwise.
    pub fn report_status(&self, backend: &UpstreamBackend, status: u16) {
        let counts_5xx = self
            .config
            .outlier_detection
            .as_ref()
            .is_none_or(|od| od.count_5xx);
        self.report(backend, status < 500 || !counts_5xx);
    }

    /// Records how a try to `backend` ended, for passive health checking.
    pub fn report(&self, backend: &UpstreamBackend, ok: bool) {
        let Some(outcomes) = &self.outcomes else {
            return;
        };
        if ok {
            if backend.failed_in_row.swap(0, Relaxed) > 0 {
                outcomes.report_result(&self.name, backend.address, true);
            }
        } else {
            backend.failed_in_row.fetch_add(1, Relaxed);
            outcomes.report_result(&self.name, backend.address, false);
        }
    }

    /// The HTTP version requests to this pool are sent with.
    pub fn version(&self) -> http::Version {
        match self.config.upstream_protocol {
            UpstreamProtocol::Http1 => http::Version::HTTP_11,
            UpstreamProtocol::Http2 => http::Version::HTTP_2,
        }
    }

    /// Whether the pool speaks HTTP/1.1 to its backends (upgrades need it).
    pub fn is_http1(&self) -> bool {
        self.config.upstream_protocol == UpstreamProtocol::Http1
    }
}

/// `ip:port`, with brackets for IPv6.
fn authority(address: SocketAddr) -> Authority {
    // A SocketAddr always renders as a valid authority.
    Authority::try_from(address.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("invalid.backend"))
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
