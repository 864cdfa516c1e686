//! The agent's status snapshot for `GET /status`, and finding a backend by what an operator
//! types (its name or its address).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::admin::{BackendStatus, PoolStatus, ServiceStatus, Status};
use crate::config::{Config, ForwardingMode, Policy, Protocol, RouteAction, ServiceKind};
use crate::health::HealthView;

/// The status of `config` (applied as `version` at `applied_at`) under `view`.
pub fn build(
    config: &Config,
    view: &HealthView,
    (version, applied_at): (u64, SystemTime),
    path: &Path,
) -> Status {
    let services = config
        .services
        .iter()
        .map(|service| {
            let (kind, pools) = match &service.kind {
                ServiceKind::L4(l4) => {
                    let kind = match l4.mode {
                        ForwardingMode::Dsr => "l4-dsr",
                        ForwardingMode::Nat => "l4-nat",
                    };
                    let pools = config
                        .pool(l4.pool)
                        .map(|p| p.name.clone())
                        .into_iter()
                        .collect();
                    (kind, pools)
                }
                ServiceKind::L7(l7) => {
                    let mut pools: Vec<String> = l7
                        .virtual_hosts
                        .iter()
                        .flat_map(|vh| vh.routes.iter())
                        .filter_map(|route| match &route.action {
                            RouteAction::Forward(targets) => Some(targets),
                            _ => None,
                        })
                        .flatten()
                        .filter_map(|target| config.pool(target.pool).map(|p| p.name.clone()))
                        .collect();
                    pools.sort();
                    pools.dedup();
                    ("l7", pools)
                }
            };
            ServiceStatus {
                name: service.name.clone(),
                vip: service.vip.to_string(),
                port: service.port,
                protocol: match service.protocol {
                    Protocol::Tcp => "tcp".into(),
                    Protocol::Udp => "udp".into(),
                },
                kind: kind.into(),
                pools,
            }
        })
        .collect();
    let pools = config
        .pools
        .iter()
        .map(|pool| PoolStatus {
            name: pool.name.clone(),
            policy: policy_name(&pool.policy).into(),
            backends: pool
                .backends
                .iter()
                .map(|backend| {
                    let health = view.state(&pool.name, backend.address);
                    BackendStatus {
                        name: backend.name.clone(),
                        address: backend.address.to_string(),
                        weight: backend.weight,
                        healthy: health.is_none_or(|h| h.healthy),
                        drained: health.is_some_and(|h| h.drained),
                    }
                })
                .collect(),
        })
        .collect();
    Status {
        config_version: version,
        config_path: path.display().to_string(),
        config_applied_at: applied_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        services,
        pools,
        config: Some(std::sync::Arc::new(config.clone())),
        // Filled in by the agent, which owns the announcer and the discovery book.
        announce: None,
        discovery: Vec::new(),
    }
}

fn policy_name(policy: &Policy) -> &'static str {
    match policy {
        Policy::RoundRobin => "round_robin",
        Policy::Weighted => "weighted",
        Policy::LeastRequest => "least_request",
        Policy::LeastResponseTime => "least_response_time",
        Policy::Random => "random",
        Policy::Maglev { .. } => "maglev",
    }
}

/// Why [`find_backend`] found nothing.
#[derive(Debug, thiserror::Error)]
pub enum BackendLookupError {
    /// No pool of that name in the config in force.
    #[error("no pool named {pool:?}")]
    NoPool {
        /// The name asked for.
        pool: String,
    },
    /// The pool has no backend by that name or address.
    #[error("pool {pool:?} has no backend named {backend:?}")]
    NoBackend {
        /// The pool.
        pool: String,
        /// The name or address asked for.
        backend: String,
    },
}

/// The address of the backend of `pool` named `backend` (its name, or its address:port).
pub fn find_backend(
    config: &Config,
    pool: &str,
    backend: &str,
) -> Result<SocketAddr, BackendLookupError> {
    let Some(found) = config.pools.iter().find(|p| p.name == pool) else {
        return Err(BackendLookupError::NoPool {
            pool: pool.to_owned(),
        });
    };
    found
        .backends
        .iter()
        .find(|b| b.name == backend || b.address.to_string() == backend)
        .map(|b| b.address)
        .ok_or_else(|| BackendLookupError::NoBackend {
            pool: pool.to_owned(),
            backend: backend.to_owned(),
        })
}
