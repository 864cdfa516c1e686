//! Desired kernel state, computed from the config and, optionally, a health snapshot.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;

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
    let wanted = TableInput {
        backends: backends
            .iter()
            .zip(weights)
            .map(|(b, w)| (b.address, *w))
            .collect(),
        table_size,
        seed,
    };
    // Poisoning cannot leave the list inconsistent: entries are pushed whole.
    let mut recent = RECENT_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = recent.iter().position(|(input, _)| *input == wanted) {
        let hit = recent.remove(at);
        let slots = hit.1.clone();
        recent.push(hit);
        return Ok(Some(slots));
    }
    let input: Vec<MaglevBackend> = wanted
        .backends
        .iter()
        .map(|&(address, weight)| MaglevBackend {
            key: BackendKey::from(address),
            weight,
        })
        .collect();
    let slots = MaglevTable::build(&input, table_size, seed)?
        .slots()
        .to_vec();
    if recent.len() == RECENT_TABLES_KEPT {
        recent.remove(0);
    }
    recent.push((wanted, slots.clone()));
    Ok(Some(slots))
}

/// What a table is built from: the same input gives the same table.
#[derive(PartialEq)]
struct TableInput {
    backends: Vec<(SocketAddr, u32)>,
    table_size: u32,
    seed: u32,
}

/// Tables most recently built, the last used at the end. A reload builds each table for the
/// running config (kept to restore it on failure), for the new one, and for the new one again
/// under the updated health view: with 10,000 backends these builds were a noticeable part of
/// the reload, and they mostly repeat each other.
static RECENT_TABLES: Mutex<Vec<(TableInput, Vec<u32>)>> = Mutex::new(Vec::new());

/// Tables kept in [`RECENT_TABLES`]: a few per L4 service of a small config, about 4 MiB
/// with `M = 65537` and 10,000 backends.
const RECENT_TABLES_KEPT: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u8) -> Vec<DesiredBackend> {
        (1..=n)
            .map(|i| DesiredBackend {
                pool: "p".into(),
                address: SocketAddr::from(([10, 7, 0, i], 80)),
            })
            .collect()
    }

    fn fresh(backends: &[DesiredBackend], weights: &[u32], size: u32, seed: u32) -> Vec<u32> {
        let input: Vec<MaglevBackend> = backends
            .iter()
            .zip(weights)
            .map(|(b, w)| MaglevBackend {
                key: BackendKey::from(b.address),
                weight: *w,
            })
            .collect();
        match MaglevTable::build(&input, size, seed) {
            Ok(table) => table.slots().to_vec(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn remembered_tables_are_the_tables_of_their_own_input() {
        // Inputs differing in order, weight, size or seed each get their own table, also
        // when asked again after the others (from the list of recent tables).
        let (three, two) = (pool(3), pool(2));
        let mut reversed = three.clone();
        reversed.reverse();
        let cases: [(&[DesiredBackend], &[u32], u32, u32); 5] = [
            (&three, &[1, 1, 1], 251, 0),
            (&reversed, &[1, 1, 1], 251, 0),
            (&three, &[1, 2, 1], 251, 0),
            (&three, &[1, 1, 1], 257, 0),
            (&two, &[1, 1], 251, 9),
        ];
        for _ in 0..2 {
            for (backends, weights, size, seed) in cases {
                let got = maglev_table(backends, weights, size, seed);
                assert_eq!(
                    got,
                    Ok(Some(fresh(backends, weights, size, seed))),
                    "{backends:?} {weights:?} {size} {seed}"
                );
            }
        }
        assert_eq!(maglev_table(&two, &[0, 0], 251, 0), Ok(None));
    }
}
