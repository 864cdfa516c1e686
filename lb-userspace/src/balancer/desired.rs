//! Desired kernel state, computed from the config.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lb_common::addr::{PROTO_TCP, PROTO_UDP, to_wire};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevError, MaglevTable};
use lb_common::service::ServiceKey;

use crate::config::{Config, ForwardingMode, Protocol, Service, ServiceKind, WhenNoHealthy};

/// A backend as the kernel knows it: an address in a pool. The same address in two pools is
/// two backends, so their counters and drain states stay apart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredBackend {
    pub pool: String,
    pub address: SocketAddr,
}

/// How an L4 service forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    Dsr,
    Nat,
}

/// An L4 service's desired data-plane state.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredL4 {
    pub mode: ServiceMode,
    /// Drop new flows when no backend is usable (otherwise pass them to the host).
    pub refuse_when_empty: bool,
    pub hash_seed: u32,
    pub table_size: u32,
    /// Every backend a flow may be on: new flows go by `table`, established flows stay on
    /// any of these.
    pub backends: Vec<DesiredBackend>,
    /// Slot to index into `backends`, or `None` when no backend takes new flows.
    pub table: Option<Vec<u32>>,
}

/// A service's desired state.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredService {
    pub name: String,
    pub key: ServiceKey,
    /// `None` for an L7 service: its packets are passed up to the agent.
    pub l4: Option<DesiredL4>,
}

/// Everything the kernel should hold, keyed by service key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    pub services: BTreeMap<ServiceKey, DesiredService>,
}

impl DesiredState {
    /// Whether any service forwards by NAT (the program then checks for backend replies).
    pub fn nat_in_use(&self) -> bool {
        self.services
            .values()
            .any(|s| s.l4.as_ref().is_some_and(|l4| l4.mode == ServiceMode::Nat))
    }
}

/// The desired state for `config`, with every configured backend taking new flows.
pub fn desired(config: &Config) -> Result<DesiredState, MaglevError> {
    let mut state = DesiredState::default();
    for service in &config.services {
        let desired = desired_service(config, service)?;
        state.services.insert(desired.key, desired);
    }
    Ok(state)
}

fn desired_service(config: &Config, service: &Service) -> Result<DesiredService, MaglevError> {
    let (addr, family) = to_wire(service.vip);
    let protocol = match service.protocol {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    };
    let key = ServiceKey {
        addr,
        port: service.port.to_be(),
        protocol,
        family,
    };
    let l4 = match &service.kind {
        ServiceKind::L7(_) => None,
        ServiceKind::L4(l4) => {
            // Validation resolved every pool reference; an empty pool is the safe reading.
            let empty = Vec::new();
            let (pool_name, pool_backends, when_no_healthy) = match config.pool(l4.pool) {
                Some(pool) => (pool.name.as_str(), &pool.backends, pool.when_no_healthy),
                None => ("", &empty, WhenNoHealthy::FailOpen),
            };
            let backends: Vec<DesiredBackend> = pool_backends
                .iter()
                .map(|b| DesiredBackend {
                    pool: pool_name.to_string(),
                    address: b.address,
                })
                .collect();
            let weights: Vec<u32> = pool_backends.iter().map(|b| u32::from(b.weight)).collect();
            let table = maglev_table(&backends, &weights, l4.maglev_table_size, l4.maglev_seed)?;
            Some(DesiredL4 {
                mode: match l4.mode {
                    ForwardingMode::Dsr => ServiceMode::Dsr,
                    ForwardingMode::Nat => ServiceMode::Nat,
                },
                refuse_when_empty: when_no_healthy == WhenNoHealthy::Refuse,
                hash_seed: l4.maglev_seed,
                table_size: l4.maglev_table_size,
                backends,
                table,
            })
        }
    };
    Ok(DesiredService {
        name: service.name.clone(),
        key,
        l4,
    })
}

/// The Maglev table over the backends with a nonzero weight, as indices into `backends`;
/// `None` when none has weight.
pub fn maglev_table(
    backends: &[DesiredBackend],
    weights: &[u32],
    table_size: u32,
    seed: u32,
) -> Result<Option<Vec<u32>>, MaglevError> {
    if weights.iter().all(|w| *w == 0) {
        return Ok(None);
    }
    let input: Vec<MaglevBackend> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| MaglevBackend {
            key: BackendKey::from(b.address),
            weight: *w,
        })
        .collect();
    let table = MaglevTable::build(&input, table_size, seed)?;
    Ok(Some(table.slots().to_vec()))
}
