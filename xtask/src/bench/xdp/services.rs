//! The bench's services in the shared lab (`sluice_tests::xdp_lab`, whose FIB and permanent
//! neighbours make every `bpf_fib_lookup` succeed): one DSR and one NAT service per family with
//! Maglev tables of 65537 slots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{Array, HashMap, Map};
use lb_common::backend::BackendValue;
use lb_common::hash::DEFAULT_TABLE_SIZE;
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS, nat_source_port_bit};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use lb_common::maps;
use lb_common::service::{SERVICE_DSR, SERVICE_NAT, ServiceKey, ServiceValue};
use sluice_tests::xdp_lab::{BACKENDS, Family, backend_ip, backend_value};

/// Every service listens here; DSR backends keep it, NAT backends listen on [`NAT_PORT`].
pub const SERVICE_PORT: u16 = 80;
pub const NAT_PORT: u16 = 8080;
const HASH_SEED: u32 = 0x5eed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dsr,
    Nat,
}

/// The VIP of the family's DSR (`.1`, the lab's `vip`) or NAT (`.2`) service.
pub fn vip(family: Family, mode: Mode) -> IpAddr {
    let host = match mode {
        Mode::Dsr => 1,
        Mode::Nat => 2,
    };
    match family {
        Family::V4 => Ipv4Addr::new(10, 9, 0, host).into(),
        Family::V6 => Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, host.into()).into(),
    }
}

/// Where a service's backends and Maglev table live in the maps.
struct Layout {
    service_id: u32,
    /// The service's backends take ids `first_backend..first_backend + BACKENDS`.
    first_backend: u32,
    ring_offset: u32,
}

fn layout(family: Family, mode: Mode) -> Layout {
    let index = 2 * u32::from(family == Family::V6) + u32::from(mode == Mode::Nat);
    Layout {
        service_id: index + 1,
        first_backend: 1 + index * BACKENDS as u32,
        ring_offset: index * DEFAULT_TABLE_SIZE,
    }
}

/// Fills the maps (call after the programs are loaded): for each family, a DSR and a NAT
/// service on TCP and UDP port 80, [`BACKENDS`] backends each, a Maglev table of 65537
/// slots, `SETTING_FLAG_NAT` and the NAT backends' port in `NAT_SOURCE_PORTS`. Returns every
/// backend by id, for reading flows back.
pub fn install_services(ebpf: &mut Ebpf) -> Result<std::collections::HashMap<u32, SocketAddr>> {
    let mut services =
        HashMap::<_, ServiceKey, ServiceValue>::try_from(take(ebpf, maps::SERVICES)?)?;
    let mut backends = Array::<_, BackendValue>::try_from(take(ebpf, maps::BACKENDS)?)?;
    let mut rings = Array::<_, u32>::try_from(take(ebpf, maps::MAGLEV_RINGS)?)?;
    let mut settings = Array::<_, u32>::try_from(take(ebpf, maps::SETTINGS)?)?;
    let mut nat_ports = Array::<_, u64>::try_from(take(ebpf, maps::NAT_SOURCE_PORTS)?)?;
    let mut by_id = std::collections::HashMap::new();
    for family in [Family::V4, Family::V6] {
        for mode in [Mode::Dsr, Mode::Nat] {
            let place = layout(family, mode);
            let port = if mode == Mode::Nat {
                NAT_PORT
            } else {
                SERVICE_PORT
            };
            let addrs: Vec<SocketAddr> = (0..BACKENDS)
                .map(|i| SocketAddr::new(backend_ip(i, family), port))
                .collect();
            for (id, addr) in (place.first_backend..).zip(&addrs) {
                backends
                    .set(id, backend_value(*addr), 0)
                    .with_context(|| format!("BACKENDS[{id}]"))?;
                by_id.insert(id, *addr);
            }
            let table = maglev_table(&addrs)?;
            for (index, slot) in (place.ring_offset..).zip(table.slots()) {
                rings
                    .set(index, place.first_backend + slot, 0)
                    .with_context(|| format!("MAGLEV_RINGS[{index}]"))?;
            }
            let flags = if mode == Mode::Nat {
                SERVICE_NAT
            } else {
                SERVICE_DSR
            };
            let value = ServiceValue {
                id: place.service_id,
                flags,
                ring_offset: place.ring_offset,
                table_size: DEFAULT_TABLE_SIZE,
                hash_seed: HASH_SEED,
                region_start: 0,
            };
            let (addr, fam) = lb_common::addr::to_wire(vip(family, mode));
            for protocol in [lb_common::addr::PROTO_TCP, lb_common::addr::PROTO_UDP] {
                let key = ServiceKey {
                    addr,
                    port: SERVICE_PORT.to_be(),
                    protocol,
                    family: fam,
                };
                services.insert(key, value, 0).context("SERVICES")?;
            }
        }
    }
    settings
        .set(SETTING_FLAGS, SETTING_FLAG_NAT, 0)
        .context("SETTINGS")?;
    // As the agent does: the NAT backends' port is where replies are looked up from.
    let (word, bit) = nat_source_port_bit(NAT_PORT);
    nat_ports.set(word, bit, 0).context("NAT_SOURCE_PORTS")?;
    Ok(by_id)
}

/// The Maglev table of `addrs`, each of weight 1, of 65537 slots: the same for Sluice's
/// services and Katran's VIPs, so both place a flow on the same backend.
pub fn maglev_table(addrs: &[SocketAddr]) -> Result<MaglevTable> {
    let members: Vec<MaglevBackend> = addrs
        .iter()
        .map(|a| MaglevBackend {
            key: BackendKey::from(*a),
            weight: 1,
        })
        .collect();
    MaglevTable::build(&members, DEFAULT_TABLE_SIZE, HASH_SEED)
        .map_err(|e| anyhow::anyhow!("building the Maglev table: {e}"))
}

/// Takes a map out of the object. Only after the programs are loaded: loading needs the maps'
/// file descriptors, which dropping the taken map closes.
pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("the XDP object has no map {name}"))
}
