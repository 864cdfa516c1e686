//! A service's Maglev table as the kernel holds it: how many slots each backend owns,
//! read from the running program's maps (not from the agent), so weights are checked where
//! they take effect.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::addr::{PROTO_TCP, from_wire, to_wire};
use lb_common::backend::BackendValue;
use lb_common::maps;
use lb_common::service::{ServiceKey, ServiceValue};

use crate::program_map;

/// Slots of the TCP service `vip:port`'s active Maglev table per backend address, in the
/// maps of program `prog_id`; empty when the service has no table.
pub fn maglev_shares(
    prog_id: u32,
    vip: IpAddr,
    port: u16,
) -> Result<BTreeMap<SocketAddr, usize>, String> {
    let services: HashMap<MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(Map::HashMap(program_map(prog_id, maps::SERVICES)?))
            .map_err(|e| format!("SERVICES: {e}"))?;
    let (addr, family) = to_wire(vip);
    let key = ServiceKey {
        addr,
        port: port.to_be(),
        protocol: PROTO_TCP,
        family,
    };
    let service = services
        .get(&key, 0)
        .map_err(|e| format!("no service {vip}:{port} in SERVICES: {e}"))?;
    let rings: Array<MapData, u32> =
        Array::try_from(Map::Array(program_map(prog_id, maps::MAGLEV_RINGS)?))
            .map_err(|e| format!("MAGLEV_RINGS: {e}"))?;
    let backends: Array<MapData, BackendValue> =
        Array::try_from(Map::Array(program_map(prog_id, maps::BACKENDS)?))
            .map_err(|e| format!("BACKENDS: {e}"))?;
    let mut by_id: BTreeMap<u32, usize> = BTreeMap::new();
    for slot in service.ring_offset..service.ring_offset + service.table_size {
        let id = rings
            .get(&slot, 0)
            .map_err(|e| format!("MAGLEV_RINGS[{slot}]: {e}"))?;
        *by_id.entry(id).or_default() += 1;
    }
    let mut shares = BTreeMap::new();
    for (id, slots) in by_id {
        let backend = backends
            .get(&id, 0)
            .map_err(|e| format!("BACKENDS[{id}]: {e}"))?;
        let ip = from_wire(&backend.addr, backend.family)
            .ok_or_else(|| format!("BACKENDS[{id}] has family {}", backend.family))?;
        *shares
            .entry(SocketAddr::new(ip, u16::from_be(backend.port)))
            .or_default() += slots;
    }
    Ok(shares)
}
