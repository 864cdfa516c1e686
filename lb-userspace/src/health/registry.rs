//! The checker's mutable state: every backend's health, drain and outlier state, and the
//! rules that change it. No tasks and no clock: callers pass the time, and learn what to
//! publish and which probe tasks to start or stop.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use thiserror::Error;
use tokio::time::Instant;
use tracing::{info, warn};

use super::outlier::{Outlier, ejection_cap};
use super::probe::ProbeError;
use super::state::{Health, Transition};
use super::view::{BackendHealth, BackendView, HealthView, PoolView};
use crate::config::{Config, HealthCheck, HealthCheckKind, Pool};

/// A backend as the checker knows it: an address in a pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The pool's name.
    pub pool: String,
    /// The backend's address.
    pub address: SocketAddr,
}

/// A request about a backend the checker does not know.
#[derive(Debug, Error)]
pub enum HealthError {
    #[error("pool {pool:?} has no backend at {backend}; check the pool name and address")]
    UnknownBackend { pool: String, backend: SocketAddr },
}

/// Probe tasks to stop and to start after a config change.
#[derive(Debug, Default, PartialEq)]
pub struct TaskPlan {
    /// Backends whose probe task must end.
    pub stop: Vec<BackendKey>,
    /// Backends that need a probe task: the check to run, and the generation its results
    /// must carry (results of a stopped task still in flight are then ignored).
    pub start: Vec<(BackendKey, HealthCheck, u64)>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    address: SocketAddr,
    health: Health,
    drained: bool,
    outlier: Outlier,
    /// The last published snapshot shows the backend ejected.
    ejection_published: bool,
    last_change: Instant,
    transitions: u64,
    /// Generation of the probe task whose results count.
    generation: u64,
}

#[derive(Debug)]
struct PoolEntry {
    config: Pool,
    backends: Vec<Entry>,
}

impl PoolEntry {
    fn probed(&self) -> bool {
        self.config.health_check.kind != HealthCheckKind::None
    }

    fn entry_mut(&mut self, address: SocketAddr) -> Option<&mut Entry> {
        self.backends.iter_mut().find(|e| e.address == address)
    }
}

/// Health, drain and outlier state of every backend of every pool.
#[derive(Debug, Default)]
pub struct Registry {
    pools: BTreeMap<String, PoolEntry>,
    next_generation: u64,
}

impl Registry {
    /// Moves to `config`: backends that stay (same pool name and address) keep their state,
    /// new ones start fresh, removed ones are forgotten.
    pub fn update(&mut self, config: &Config, now: Instant) -> TaskPlan {
        let mut old = std::mem::take(&mut self.pools);
        let mut plan = TaskPlan::default();
        for pool in &config.pools {
            let mut previous = old.remove(&pool.name);
            let previously_probed = previous.as_ref().is_some_and(PoolEntry::probed);
            let same_check = previously_probed
                && previous
                    .as_ref()
                    .is_some_and(|p| p.config.health_check == pool.health_check);
            let needs_task = pool.health_check.kind != HealthCheckKind::None;
            // The previous entries, found by address through an index: a scan per backend
            // was quadratic, a noticeable part of a reload of 10,000 backends.
            let mut left: Vec<Option<Entry>> = previous
                .as_mut()
                .map(|p| std::mem::take(&mut p.backends))
                .unwrap_or_default()
                .into_iter()
                .map(Some)
                .collect();
            let mut index: HashMap<SocketAddr, usize> = HashMap::with_capacity(left.len());
            for (at, entry) in left.iter().enumerate() {
                if let Some(entry) = entry {
                    index.entry(entry.address).or_insert(at);
                }
            }
            let mut backends = Vec::with_capacity(pool.backends.len());
            for backend in &pool.backends {
                let kept = index
                    .get(&backend.address)
                    .and_then(|&at| left.get_mut(at)?.take());
                let key = BackendKey {
                    pool: pool.name.clone(),
                    address: backend.address,
                };
                let had_task = kept.is_some() && previously_probed;
                let mut entry = kept.unwrap_or_else(|| fresh(backend.address, now));
                entry.name.clone_from(&backend.name);
                if pool.outlier_detection.is_none() {
                    entry.outlier = Outlier::default();
                    entry.ejection_published = false;
                }
                if !needs_task {
                    set_health(&mut entry, Health::Up { failures: 0 }, now);
                }
                // A changed check restarts the task; the verdict so far is kept.
                if had_task && !(needs_task && same_check) {
                    plan.stop.push(key.clone());
                }
                if needs_task && !(had_task && same_check) {
                    self.next_generation += 1;
                    entry.generation = self.next_generation;
                    plan.start
                        .push((key, pool.health_check.clone(), entry.generation));
                }
                backends.push(entry);
            }
            // Backends of the pool that went away.
            if previous.as_ref().is_some_and(PoolEntry::probed) {
                plan.stop.extend(left.iter().flatten().map(|e| BackendKey {
                    pool: pool.name.clone(),
                    address: e.address,
                }));
            }
            let config = pool.clone();
            self.pools
                .insert(pool.name.clone(), PoolEntry { config, backends });
        }
        // Pools that went away.
        for (name, pool) in old.into_iter().filter(|(_, p)| p.probed()) {
            plan.stop.extend(pool.backends.iter().map(|e| BackendKey {
                pool: name.clone(),
                address: e.address,
            }));
        }
        plan.stop.sort();
        plan.stop.dedup();
        plan
    }

    /// Folds in a probe result from the task of `generation`; returns whether the snapshot
    /// changed.
    pub fn record_probe(
        &mut self,
        key: &BackendKey,
        generation: u64,
        result: &Result<(), ProbeError>,
        now: Instant,
    ) -> bool {
        let Some(pool) = self.pools.get_mut(&key.pool) else {
            return false;
        };
        let check = &pool.config.health_check;
        let (rise, fall, probed) = (check.rise, check.fall, check.kind != HealthCheckKind::None);
        let Some(entry) = pool.entry_mut(key.address) else {
            return false;
        };
        if !probed || entry.generation != generation {
            return false;
        }
        let Some(transition) = entry.health.record(result.is_ok(), rise, fall) else {
            return false;
        };
        entry.transitions += 1;
        entry.last_change = now;
        match (transition, result) {
            (Transition::Rose, _) => {
                info!(pool = %key.pool, backend = %entry.name, "backend is up")
            }
            (Transition::Fell, Err(err)) => {
                warn!(pool = %key.pool, backend = %entry.name, "backend is down: {err}")
            }
            (Transition::Fell, Ok(())) => {}
        }
        true
    }

    /// Drains (`drained = true`) or re-enables a backend; returns whether anything changed.
    pub fn set_drained(
        &mut self,
        pool: &str,
        address: SocketAddr,
        drained: bool,
        now: Instant,
    ) -> Result<bool, HealthError> {
        let entry = self
            .pools
            .get_mut(pool)
            .and_then(|p| p.entry_mut(address))
            .ok_or_else(|| HealthError::UnknownBackend {
                pool: pool.to_owned(),
                backend: address,
            })?;
        if entry.drained == drained {
            return Ok(false);
        }
        entry.drained = drained;
        entry.last_change = now;
        let what = if drained { "drained" } else { "enabled" };
        info!(pool, backend = %entry.name, "backend {what} by hand");
        Ok(true)
    }

    /// Folds in the result of a request the proxy sent; returns whether the backend was
    /// ejected. Unknown backends (a reload raced the report) are ignored.
    pub fn report(&mut self, pool: &str, address: SocketAddr, ok: bool, now: Instant) -> bool {
        let Some(pool) = self.pools.get_mut(pool) else {
            return false;
        };
        let PoolEntry { config, backends } = pool;
        let Some(od) = &config.outlier_detection else {
            return false;
        };
        let Some(at) = backends.iter().position(|e| e.address == address) else {
            return false;
        };
        // The common case, a success or a failure below the threshold, ends here.
        if !backends[at].outlier.record(ok, od, now) {
            return false;
        }
        let ejected = backends
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        if ejected >= ejection_cap(backends.len(), od.max_ejected_percent) {
            // Keep the count: the next failure ejects once a slot frees up.
            return false;
        }
        let entry = &mut backends[at];
        let until = entry.outlier.eject(od, now);
        entry.ejection_published = true;
        entry.last_change = now;
        warn!(
            pool = %config.name,
            backend = %entry.name,
            ejection = ?until.saturating_duration_since(now),
            "backend ejected after consecutive failed requests"
        );
        true
    }

    /// Ends ejections that are over by `now`; returns whether the snapshot changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for pool in self.pools.values_mut() {
            for entry in &mut pool.backends {
                if entry.ejection_published && !entry.outlier.is_ejected(now) {
                    entry.ejection_published = false;
                    entry.last_change = entry.outlier.ejected_until().unwrap_or(now);
                    info!(pool = %pool.config.name, backend = %entry.name, "ejection over");
                    changed = true;
                }
            }
        }
        changed
    }

    /// When the earliest ejection in force ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.pools
            .values()
            .flat_map(|p| &p.backends)
            .filter(|e| e.ejection_published)
            .filter_map(|e| e.outlier.ejected_until())
            .min()
    }

    /// The snapshot of every pool at `now`.
    pub fn view(&self, now: Instant) -> HealthView {
        let pools = self
            .pools
            .iter()
            .map(|(name, pool)| {
                let backends = pool
                    .backends
                    .iter()
                    .map(|e| BackendView {
                        name: e.name.clone(),
                        address: e.address,
                        health: BackendHealth {
                            healthy: e.health.is_healthy(),
                            drained: e.drained,
                            ejected_until: e.outlier.ejected_until().filter(|u| *u > now),
                            last_change: e.last_change,
                            transitions: e.transitions,
                            ejections: e.outlier.total_ejections(),
                        },
                    })
                    .collect();
                (name.clone(), PoolView::new(&pool.config, backends, now))
            })
            .collect();
        HealthView::new(now, pools)
    }
}

fn fresh(address: SocketAddr, now: Instant) -> Entry {
    Entry {
        name: String::new(),
        address,
        health: Health::initial(),
        drained: false,
        outlier: Outlier::default(),
        ejection_published: false,
        last_change: now,
        transitions: 0,
        generation: 0,
    }
}

fn set_health(entry: &mut Entry, health: Health, now: Instant) {
    if entry.health.is_healthy() != health.is_healthy() {
        entry.transitions += 1;
        entry.last_change = now;
    }
    entry.health = health;
}
