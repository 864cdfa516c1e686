//! The tasks: one probe loop per probed backend, bounded in concurrency by a semaphore, and
//! one timer that ends ejections. Every change publishes a new [`HealthView`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{ProbeError, Prober};
use super::registry::{BackendKey, HealthError, Registry, TaskPlan};
use super::view::HealthView;
use crate::config::{Config, HealthCheck};

/// Probes in flight at once, across all pools, unless told otherwise.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 64;

/// Tuning of a [`HealthChecker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckerOptions {
    /// Probes in flight at once (at least 1).
    pub max_concurrent_probes: usize,
    /// Seed of the jitter; `None` picks one at random. Tests fix it.
    pub seed: Option<u64>,
}

impl Default for CheckerOptions {
    fn default() -> Self {
        Self {
            max_concurrent_probes: DEFAULT_MAX_CONCURRENT_PROBES,
            seed: None,
        }
    }
}

/// State shared by the checker, its handles and its tasks.
struct Shared {
    registry: Mutex<Registry>,
    views: watch::Sender<Arc<HealthView>>,
    permits: Semaphore,
    /// Woken when an ejection starts, so the expiry timer looks again.
    ejections: Notify,
    running_probe_tasks: AtomicUsize,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry methods do not panic; if one did, its state is still the best there is.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the registry's state; called with the lock held so snapshots stay in order.
    fn publish(&self, registry: &Registry, now: Instant) {
        self.views.send_replace(Arc::new(registry.view(now)));
    }
}

/// A cheap, cloneable handle for what the proxy and the admin API do: drain, enable, report
/// request results, read the current snapshot.
#[derive(Clone)]
pub struct HealthHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HealthHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthHandle").finish_non_exhaustive()
    }
}

impl HealthHandle {
    /// Stops new flows and requests to a backend; established ones finish.
    pub fn drain(&self, pool: &str, backend: SocketAddr) -> Result<(), HealthError> {
        self.set_drained(pool, backend, true)
    }

    /// Undoes [`drain`](HealthHandle::drain).
    pub fn enable(&self, pool: &str, backend: SocketAddr) -> Result<(), HealthError> {
        self.set_drained(pool, backend, false)
    }

    fn set_drained(&self, pool: &str, backend: SocketAddr, on: bool) -> Result<(), HealthError> {
        let now = Instant::now();
        let mut registry = self.shared.registry();
        if registry.set_drained(pool, backend, on, now)? {
            self.shared.publish(&registry, now);
        }
        Ok(())
    }

    /// Reports the outcome of one request to a backend: `ok = false` for a failed connect,
    /// a reset or a 5xx. Feeds outlier detection; a no-op for pools without it or backends
    /// it does not know. Takes the registry lock for a lookup and a counter update.
    pub fn report_result(&self, pool: &str, backend: SocketAddr, ok: bool) {
        let now = Instant::now();
        let mut registry = self.shared.registry();
        if registry.report(pool, backend, ok, now) {
            self.shared.publish(&registry, now);
            self.shared.ejections.notify_one();
        }
    }

    /// The current snapshot.
    pub fn view(&self) -> Arc<HealthView> {
        self.shared.views.borrow().clone()
    }

    /// A new receiver of snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthView>> {
        self.shared.views.subscribe()
    }

    /// Probe tasks alive now: one per probed backend while running, none once stopped.
    pub fn running_probe_tasks(&self) -> usize {
        self.shared.running_probe_tasks.load(Ordering::Relaxed)
    }
}

/// Runs active checks, tracks drains and passive results, and publishes snapshots.
///
/// Dropping it aborts every task; [`stop`](HealthChecker::stop) also waits for them to end.
pub struct HealthChecker {
    handle: HealthHandle,
    runtime: Handle,
    rng: fastrand::Rng,
    probes: HashMap<BackendKey, JoinHandle<()>>,
    expiry: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("probes", &self.probes.len())
            .finish_non_exhaustive()
    }
}

impl HealthChecker {
    /// Starts checking every backend of `config` with default options. Must be called
    /// within a tokio runtime; tasks run on it.
    pub fn start(config: &Config) -> (Self, watch::Receiver<Arc<HealthView>>) {
        Self::start_with(config, CheckerOptions::default())
    }

    /// [`start`](HealthChecker::start) with explicit options.
    pub fn start_with(
        config: &Config,
        options: CheckerOptions,
    ) -> (Self, watch::Receiver<Arc<HealthView>>) {
        let now = Instant::now();
        let mut registry = Registry::default();
        let plan = registry.update(config, now);
        let (views, receiver) = watch::channel(Arc::new(registry.view(now)));
        let shared = Arc::new(Shared {
            registry: Mutex::new(registry),
            views,
            permits: Semaphore::new(options.max_concurrent_probes.max(1)),
            ejections: Notify::new(),
            running_probe_tasks: AtomicUsize::new(0),
        });
        let runtime = Handle::current();
        let expiry = runtime.spawn(expire_ejections(shared.clone()));
        let mut checker = Self {
            handle: HealthHandle { shared },
            runtime,
            rng: options
                .seed
                .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            probes: HashMap::new(),
            expiry: Some(expiry),
        };
        checker.apply(plan);
        (checker, receiver)
    }

    /// Moves to a reloaded config: backends that stay keep their health, drain and ejection
    /// state (and their probe task, if the pool's check is unchanged); added backends start
    /// fresh; removed ones stop being probed. Publishes the new snapshot before returning.
    pub fn update(&mut self, config: &Config) {
        let now = Instant::now();
        let plan = {
            let shared = &self.handle.shared;
            let mut registry = shared.registry();
            let plan = registry.update(config, now);
            shared.publish(&registry, now);
            plan
        };
        self.apply(plan);
    }

    /// A cloneable handle for draining, reporting and reading snapshots.
    pub fn handle(&self) -> HealthHandle {
        self.handle.clone()
    }

    /// See [`HealthHandle::drain`].
    pub fn drain(&self, pool: &str, backend: SocketAddr) -> Result<(), HealthError> {
        self.handle.drain(pool, backend)
    }

    /// See [`HealthHandle::enable`].
    pub fn enable(&self, pool: &str, backend: SocketAddr) -> Result<(), HealthError> {
        self.handle.enable(pool, backend)
    }

    /// See [`HealthHandle::report_result`].
    pub fn report_result(&self, pool: &str, backend: SocketAddr, ok: bool) {
        self.handle.report_result(pool, backend, ok);
    }

    /// Stops every task and waits until they have ended; probes in flight are dropped, their
    /// connections closed.
    pub async fn stop(mut self) {
        let tasks: Vec<JoinHandle<()>> = self
            .probes
            .drain()
            .map(|(_, task)| task)
            .chain(self.expiry.take())
            .collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Aborted: the error says so and nothing else.
            let _ = task.await;
        }
    }

    fn apply(&mut self, plan: TaskPlan) {
        for key in &plan.stop {
            if let Some(task) = self.probes.remove(key) {
                task.abort();
            }
        }
        for (key, check, generation) in plan.start {
            let rng = self.rng.fork();
            let shared = self.handle.shared.clone();
            let alive = TaskCount::enter(&shared);
            let task = self.runtime.spawn(probe_loop(
                shared,
                key.clone(),
                check,
                generation,
                rng,
                alive,
            ));
            if let Some(old) = self.probes.insert(key, task) {
                old.abort();
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for task in self.probes.values().chain(&self.expiry) {
            task.abort();
        }
    }
}

/// Counts a probe task from its spawn until its future is dropped (finished or aborted).
struct TaskCount(Arc<Shared>);

impl TaskCount {
    fn enter(shared: &Arc<Shared>) -> Self {
        shared.running_probe_tasks.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for TaskCount {
    fn drop(&mut self) {
        self.0.running_probe_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Probes one backend every `interval` (with jitter) until aborted.
async fn probe_loop(
    shared: Arc<Shared>,
    key: BackendKey,
    check: HealthCheck,
    generation: u64,
    mut rng: fastrand::Rng,
    _alive: TaskCount,
) {
    let prober = Prober::new(&check, key.address);
    tokio::time::sleep(first_delay(&check, &mut rng)).await;
    loop {
        let started = Instant::now();
        let result: Result<(), ProbeError> = match &prober {
            Ok(prober) => {
                let Ok(_permit) = shared.permits.acquire().await else {
                    return; // closed: never happens, but nothing to do then
                };
                prober.run().await
            }
            Err(err) => Err(ProbeError::Request {
                reason: err.to_string(),
            }),
        };
        let now = Instant::now();
        {
            let mut registry = shared.registry();
            if registry.record_probe(&key, generation, &result, now) {
                shared.publish(&registry, now);
            }
        }
        tokio::time::sleep_until(started + next_interval(&check, &mut rng)).await;
    }
}

/// Republishes when an ejection ends.
async fn expire_ejections(shared: Arc<Shared>) {
    loop {
        let next = shared.registry().next_expiry();
        // `notify_one` keeps a permit when nobody waits, so an ejection that starts between
        // reading `next` and waiting here is not missed.
        let woken = shared.ejections.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = woken => continue,
                }
            }
            None => {
                woken.await;
                continue;
            }
        }
        let now = Instant::now();
        let mut registry = shared.registry();
        if registry.expire(now) {
            shared.publish(&registry, now);
        }
    }
}

/// When a backend's first probe runs: at a random point within the first interval when the
/// pool has jitter, so many backends (and a restart of the agent) do not probe all at once;
/// at once without jitter.
pub fn first_delay(check: &HealthCheck, rng: &mut fastrand::Rng) -> Duration {
    if check.jitter_percent == 0 {
        Duration::ZERO
    } else {
        check.interval.mul_f64(rng.f64())
    }
}

/// Time from one probe's start to the next: `interval` plus or minus `jitter_percent`.
pub fn next_interval(check: &HealthCheck, rng: &mut fastrand::Rng) -> Duration {
    let jitter = f64::from(check.jitter_percent.min(100)) / 100.0;
    // Uniform in [1 - jitter, 1 + jitter).
    let factor = 1.0 - jitter + 2.0 * jitter * rng.f64();
    check.interval.mul_f64(factor)
}
