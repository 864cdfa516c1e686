//! What the status page (and `GET /api/overview`, `GET /api/backends`) shows: the config in
//! force, services and pools with summed counters, the XDP program's packet counters by
//! reason, and one page of a pool's backends at a time, so a pool of 10,000 backends costs
//! the page no more than one of ten.
//!
//! Counters are cumulative; the page turns them into rates and shares from one poll to the
//! next, so the agent keeps no history for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Status;
use crate::dataplane::StatsReader;
use crate::dataplane::inspect::FlowInspector;
use crate::health::{HealthHandle, HealthView, PoolMode};
use crate::metrics::{Metrics, ReloadRecord};
use crate::proxy::stats::{LATENCY_BOUNDS_US, RequestStats, StatsRegistry};

/// Most backends one `GET /api/backends` returns.
pub const MAX_PAGE: usize = 500;
/// Backends per page when the request does not say.
pub const DEFAULT_PAGE: usize = 50;

/// The live sources the page reads besides the published [`Status`]. Each is optional so
/// the admin API serves (with fewer numbers) without a data plane, proxy or checker.
#[derive(Clone, Default)]
pub struct Live {
    /// The XDP program's counters.
    pub xdp: Option<Arc<StatsReader>>,
    /// The proxy's counters.
    pub l7: Option<Arc<StatsRegistry>>,
    /// The health checker's latest snapshot.
    pub health: Option<HealthHandle>,
    /// The XDP program's maps, read-only, for `GET /debug/flow`.
    pub flows: Option<Arc<FlowInspector>>,
}

/// `GET /api/overview`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overview {
    pub config_version: u64,
    pub config_path: String,
    pub config_applied_at: f64,
    /// The last reload's outcome (none yet: `null`).
    pub last_reload: Option<LastReload>,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Packets and bytes the XDP program saw, by reason.
    pub xdp: Vec<ReasonCount>,
    pub services: Vec<ServiceOverview>,
    pub pools: Vec<PoolOverview>,
    /// Upper bounds (milliseconds) of the latency buckets in [`PoolOverview::latency`].
    pub latency_bounds_ms: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LastReload {
    pub ok: bool,
    pub at: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceOverview {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    pub kind: String,
    pub pools: Vec<String>,
    /// L4: packets, bytes and new flows the XDP program forwarded.
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// L7: requests answered, by status class (1xx..5xx), over all routes.
    pub requests: [u64; 5],
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolOverview {
    pub name: String,
    pub policy: String,
    /// `normal`, `panic`, `fail_open` or `empty`.
    pub mode: String,
    pub backends: usize,
    pub healthy: usize,
    pub drained: usize,
    pub ejected: usize,
    pub usable: usize,
    /// L7: requests by final status class, retries, 503s for want of a backend.
    pub requests: [u64; 5],
    pub retries: u64,
    pub no_backend: u64,
    /// L7: cumulative request counts per latency bucket (last: `+Inf`).
    pub latency: Vec<u64>,
}

/// `GET /api/backends?pool=NAME&offset=N&limit=N`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendPage {
    pub pool: String,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// Sums over every backend of the pool (not only this page), so shares are of the pool.
    pub pool_new_flows: u64,
    pub pool_responses: u64,
    pub backends: Vec<BackendRow>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackendRow {
    pub name: String,
    pub address: String,
    pub weight: u16,
    pub healthy: bool,
    pub drained: bool,
    pub ejected: bool,
    /// Takes new flows and requests.
    pub usable: bool,
    /// L4: packets and new flows the XDP program sent it.
    pub packets: u64,
    pub new_flows: u64,
    /// L7: responses by status class, failed connects, failures after connecting.
    pub responses: [u64; 5],
    pub connect_errors: u64,
    pub failures: u64,
}

fn classes(stats: &RequestStats) -> [u64; 5] {
    std::array::from_fn(|i| stats.by_class[i].load(Relaxed))
}

fn add(a: &mut [u64; 5], b: [u64; 5]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

fn mode_name(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Normal => "normal",
        PoolMode::Panic => "panic",
        PoolMode::FailOpen => "fail_open",
        PoolMode::Empty => "empty",
    }
}

impl Live {
    fn view(&self) -> Option<Arc<HealthView>> {
        self.health.as_ref().map(HealthHandle::view)
    }

    /// The overview of `status` with the live counters.
    pub fn overview(&self, status: &Status, metrics: &Metrics) -> Overview {
        let view = self.view();
        let now = Instant::now();
        let xdp = self
            .xdp
            .as_ref()
            .and_then(|x| x.reasons().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(reason, c)| ReasonCount {
                reason: reason.name().to_string(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        let l4: BTreeMap<String, (u64, u64, u64)> = self
            .xdp
            .as_ref()
            .and_then(|x| x.services().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let c = s.counter;
                (s.label, (c.packets, c.bytes, c.new_flows))
            })
            .collect();
        let mut l7: BTreeMap<String, [u64; 5]> = BTreeMap::new();
        let mut pool_stats = BTreeMap::new();
        if let Some(registry) = &self.l7 {
            for (service, _, stats) in registry.routes() {
                add(l7.entry(service.to_string()).or_default(), classes(&stats));
            }
            pool_stats = registry.pools().into_iter().collect();
        }
        let services = status
            .services
            .iter()
            .map(|s| {
                let (packets, bytes, new_flows) = l4.get(&s.name).copied().unwrap_or_default();
                ServiceOverview {
                    name: s.name.clone(),
                    vip: s.vip.clone(),
                    port: s.port,
                    protocol: s.protocol.clone(),
                    kind: s.kind.clone(),
                    pools: s.pools.clone(),
                    packets,
                    bytes,
                    new_flows,
                    requests: l7.get(&s.name).copied().unwrap_or_default(),
                }
            })
            .collect();
        let pools = status
            .pools
            .iter()
            .map(|p| {
                let pool_view = view.as_ref().and_then(|v| {
                    v.pools()
                        .find(|(name, _)| *name == p.name)
                        .map(|(_, pv)| pv.clone())
                });
                let (mut healthy, mut drained, mut ejected) = (0, 0, 0);
                match &pool_view {
                    Some(pv) => {
                        for b in &pv.backends {
                            healthy += usize::from(b.health.healthy);
                            drained += usize::from(b.health.drained);
                            ejected += usize::from(b.health.is_ejected(now));
                        }
                    }
                    None => {
                        healthy = p.backends.iter().filter(|b| b.healthy).count();
                        drained = p.backends.iter().filter(|b| b.drained).count();
                    }
                }
                let stats = pool_stats.get(p.name.as_str());
                PoolOverview {
                    name: p.name.clone(),
                    policy: p.policy.clone(),
                    mode: pool_view
                        .as_ref()
                        .map_or("normal", |pv| mode_name(pv.usable.mode))
                        .to_string(),
                    backends: p.backends.len(),
                    healthy,
                    drained,
                    ejected,
                    usable: pool_view
                        .as_ref()
                        .map_or(healthy, |pv| pv.usable.backends.len()),
                    requests: stats.map(|s| classes(&s.requests)).unwrap_or_default(),
                    retries: stats.map_or(0, |s| s.retries.load(Relaxed)),
                    no_backend: stats.map_or(0, |s| s.no_backend.load(Relaxed)),
                    latency: stats
                        .map(|s| s.requests.latency.snapshot().0)
                        .unwrap_or_default(),
                }
            })
            .collect();
        let (reloads_applied, reloads_rejected) = metrics.reload_counts();
        Overview {
            config_version: status.config_version,
            config_path: status.config_path.clone(),
            config_applied_at: status.config_applied_at,
            last_reload: metrics
                .last_reload()
                .map(|ReloadRecord { ok, at }| LastReload { ok, at }),
            reloads_applied,
            reloads_rejected,
            xdp,
            services,
            pools,
            latency_bounds_ms: LATENCY_BOUNDS_US.iter().map(|b| *b as f64 / 1e3).collect(),
        }
    }

    /// Backends `offset..offset + limit` of `pool` (`None`: no such pool).
    pub fn backends(
        &self,
        status: &Status,
        pool: &str,
        offset: usize,
        limit: usize,
    ) -> Option<BackendPage> {
        let config = status.pools.iter().find(|p| p.name == pool)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let view = self.view();
        let pool_view = view
            .as_ref()
            .and_then(|v| v.pools().find(|(name, _)| *name == pool).map(|(_, pv)| pv));
        let by_address: std::collections::HashMap<_, _> = pool_view
            .map(|pv| pv.backends.iter().map(|b| (b.address, b)).collect())
            .unwrap_or_default();
        let now = Instant::now();
        let mut l4: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for b in self
            .xdp
            .as_ref()
            .and_then(|x| x.backends().ok())
            .unwrap_or_default()
        {
            if b.label.0 == pool {
                let c = b.counter;
                l4.insert(b.label.1.to_string(), (c.packets, c.new_flows));
            }
        }
        let mut l7 = BTreeMap::new();
        if let Some(registry) = &self.l7 {
            for (p, name, stats) in registry.backends() {
                if &*p == pool {
                    l7.insert(name, stats);
                }
            }
        }
        let pool_new_flows = l4.values().map(|(_, f)| f).sum();
        let pool_responses = l7
            .values()
            .map(|s| s.responses.requests.load(Relaxed))
            .sum();
        let backends = config
            .backends
            .iter()
            .skip(offset)
            .take(limit)
            .map(|b| {
                let health = b
                    .address
                    .parse::<std::net::SocketAddr>()
                    .ok()
                    .and_then(|a| by_address.get(&a).copied());
                let (packets, new_flows) = l4.get(&b.address).copied().unwrap_or_default();
                let stats = l7.get(&b.name);
                BackendRow {
                    name: b.name.clone(),
                    address: b.address.clone(),
                    weight: b.weight,
                    healthy: health.map_or(b.healthy, |h| h.health.healthy),
                    drained: health.map_or(b.drained, |h| h.health.drained),
                    ejected: health.is_some_and(|h| h.health.is_ejected(now)),
                    usable: match (pool_view, health) {
                        (Some(pv), Some(h)) => pv.usable.contains(h.address),
                        _ => b.healthy && !b.drained,
                    },
                    packets,
                    new_flows,
                    responses: stats.map(|s| classes(&s.responses)).unwrap_or_default(),
                    connect_errors: stats.map_or(0, |s| s.connect_failures.load(Relaxed)),
                    failures: stats.map_or(0, |s| s.failures.load(Relaxed)),
                }
            })
            .collect();
        Some(BackendPage {
            pool: pool.to_string(),
            total: config.backends.len(),
            offset,
            limit,
            pool_new_flows,
            pool_responses,
            backends,
        })
    }
}
