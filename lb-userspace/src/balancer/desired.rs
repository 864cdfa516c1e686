//! Desired kernel state, computed from the config and, optionally, a health snapshot.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use lb_common::addr::{PROTO_TCP, PROTO_UDP, to_wire};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevError, MaglevTable};
use lb_common::service::ServiceKey;

use crate::config::{Config, ForwardingMode, Pool, Protocol, Service, ServiceKind, WhenNoHealthy};
use crate::health::HealthView;

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
    build(config, None)
}

/// The desired state for `config` under the health snapshot `health`.
///
/// Each L4 table holds only its pool's usable backends ([`HealthView::usable`]: panic mode
/// and `when_no_healthy` included; no table when the set is empty). Backends that take no
/// new flows but are alive (drained, or ejected by outlier detection) stay in
/// [`DesiredL4::backends`], so flows established on them go on; backends whose active
/// checks fail and that are not in the table are left out of both, so their flows re-steer.
/// A pool the snapshot does not know takes new flows on every backend; a backend it does
/// not know (call `HealthChecker::update` before this on reload) stays but takes none.
pub fn desired_with(config: &Config, health: &HealthView) -> Result<DesiredState, MaglevError> {
    build(config, Some(health))
}

fn build(config: &Config, health: Option<&HealthView>) -> Result<DesiredState, MaglevError> {
    let mut state = DesiredState::default();
    for service in &config.services {
        let desired = desired_service(config, service, health)?;
        state.services.insert(desired.key, desired);
    }
    Ok(state)
}

/// The backends of `pool` an L4 service keeps, each with its Maglev weight: 0 for those
/// that keep established flows but take no new ones.
fn l4_backends(pool: &Pool, health: Option<&HealthView>) -> Vec<(DesiredBackend, u32)> {
    // A set, not `UsableSet::contains` (a scan): with 10,000 backends the scans were most of
    // a reload's time.
    let usable: Option<HashSet<SocketAddr>> = health
        .and_then(|h| h.usable(&pool.name))
        .map(|set| set.backends.iter().copied().collect());
    pool.backends
        .iter()
        .filter_map(|b| {
            let in_table = usable.as_ref().is_none_or(|set| set.contains(&b.address));
            let alive = health
                .and_then(|h| h.state(&pool.name, b.address))
                .is_none_or(|state| state.healthy);
            let backend = DesiredBackend {
                pool: pool.name.clone(),
                address: b.address,
            };
            match (in_table, alive) {
                (true, _) => Some((backend, u32::from(b.weight))),
                (false, true) => Some((backend, 0)),
                (false, false) => None,
            }
        })
        .collect()
}

fn desired_service(
    config: &Config,
    service: &Service,
    health: Option<&HealthView>,
) -> Result<DesiredService, MaglevError> {
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
            let (kept, when_no_healthy) = match config.pool(l4.pool) {
                Some(pool) => (l4_backends(pool, health), pool.when_no_healthy),
                None => (Vec::new(), WhenNoHealthy::FailOpen),
            };
            let (backends, weights): (Vec<DesiredBackend>, Vec<u32>) = kept.into_iter().unzip();
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
