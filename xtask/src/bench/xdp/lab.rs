//! The bench's network namespace and services: a veth whose FIB and permanent neighbours make
//! every `bpf_fib_lookup` succeed, and one DSR and one NAT service per family with Maglev
//! tables of 65537 slots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{Array, HashMap, Map};
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::hash::DEFAULT_TABLE_SIZE;
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use lb_common::maps;
use lb_common::service::{SERVICE_DSR, SERVICE_NAT, ServiceKey, ServiceValue};
use sluice_tests::{Netns, add_addr, format_mac, if_index, link_up, sysctl};

/// eth0, where every frame arrives (and, by the FIB, leaves again: XDP_TX).
pub const ETH0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe0];
const ETH1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe1];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x10];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x10);
/// Backends per service, each with a permanent neighbour entry on eth0.
pub const BACKENDS: usize = 8;
/// Every service listens here; DSR backends keep it, NAT backends listen on [`NAT_PORT`].
pub const SERVICE_PORT: u16 = 80;
pub const NAT_PORT: u16 = 8080;
const HASH_SEED: u32 = 0x5eed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dsr,
    Nat,
}

pub fn client_ip(family: Family) -> IpAddr {
    match family {
        Family::V4 => CLIENT4.into(),
        Family::V6 => CLIENT6.into(),
    }
}

/// The VIP of the family's DSR (`.1`) or NAT (`.2`) service.
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

/// Backend `i`: 10.2.0.(0x11+i) or fd02::(0x11+i), MAC 02:b0:00:00:00:(0x11+i).
pub fn backend_ip(i: usize, ipv6: bool) -> IpAddr {
    let host = 0x11 + i as u8;
    if ipv6 {
        Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, host.into()).into()
    } else {
        Ipv4Addr::new(10, 2, 0, host).into()
    }
}

fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0xb0, 0, 0, 0, 0x11 + i as u8]
}

/// Which backend a MAC address is, if any.
pub fn backend_index_of_mac(mac: &[u8]) -> Option<usize> {
    (0..BACKENDS).find(|&i| mac == backend_mac(i))
}

/// The namespace: eth0 (with its veth peer eth1) holding the client and backend networks,
/// forwarding on, permanent neighbours for the client and every backend. Deleted on drop.
pub struct Lab {
    pub ns: Netns,
    pub eth0: u32,
}

impl Lab {
    /// Creates the namespace. The helpers panic with the failing `ip` command's stderr.
    pub fn new() -> Lab {
        let ns = Netns::new("bench");
        let (mac0, mac1) = (format_mac(ETH0_MAC), format_mac(ETH1_MAC));
        ns.ip([
            "link", "add", "eth0", "address", &mac0, "type", "veth", "peer", "name", "eth1",
            "address", &mac1,
        ]);
        link_up(&ns, "eth0");
        link_up(&ns, "eth1");
        for cidr in ["10.1.0.1/16", "10.2.0.1/24", "fd01::1/64", "fd02::1/64"] {
            add_addr(&ns, "eth0", cidr);
        }
        sysctl(&ns, "net.ipv4.conf.all.forwarding", "1");
        sysctl(&ns, "net.ipv6.conf.all.forwarding", "1");
        let mut neighbours = vec![
            (IpAddr::from(CLIENT4), CLIENT_MAC),
            (CLIENT6.into(), CLIENT_MAC),
        ];
        for i in 0..BACKENDS {
            neighbours.push((backend_ip(i, false), backend_mac(i)));
            neighbours.push((backend_ip(i, true), backend_mac(i)));
        }
        for (addr, mac) in neighbours {
            let (addr, mac) = (addr.to_string(), format_mac(mac));
            ns.ip([
                "neigh",
                "add",
                &addr,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        let eth0 = if_index(&ns, "eth0");
        Lab { ns, eth0 }
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
/// slots, and `SETTING_FLAG_NAT`. Returns every backend by id, for reading flows back.
pub fn install_services(ebpf: &mut Ebpf) -> Result<std::collections::HashMap<u32, SocketAddr>> {
    let mut services =
        HashMap::<_, ServiceKey, ServiceValue>::try_from(take(ebpf, maps::SERVICES)?)?;
    let mut backends = Array::<_, BackendValue>::try_from(take(ebpf, maps::BACKENDS)?)?;
    let mut rings = Array::<_, u32>::try_from(take(ebpf, maps::MAGLEV_RINGS)?)?;
    let mut settings = Array::<_, u32>::try_from(take(ebpf, maps::SETTINGS)?)?;
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
                .map(|i| SocketAddr::new(backend_ip(i, family == Family::V6), port))
                .collect();
            for (id, addr) in (place.first_backend..).zip(&addrs) {
                let (wire, fam) = lb_common::addr::to_wire(addr.ip());
                let value = BackendValue {
                    addr: wire,
                    port: addr.port().to_be(),
                    family: fam,
                    flags: BACKEND_ACTIVE,
                    generation: 1,
                };
                backends
                    .set(id, value, 0)
                    .with_context(|| format!("BACKENDS[{id}]"))?;
                by_id.insert(id, *addr);
            }
            let members: Vec<MaglevBackend> = addrs
                .iter()
                .map(|a| MaglevBackend {
                    key: BackendKey::from(*a),
                    weight: 1,
                })
                .collect();
            let table = MaglevTable::build(&members, DEFAULT_TABLE_SIZE, HASH_SEED)
                .map_err(|e| anyhow::anyhow!("building the Maglev table: {e}"))?;
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
    Ok(by_id)
}

/// Takes a map out of the object. Only after the programs are loaded: loading needs the maps'
/// file descriptors, which dropping the taken map closes.
pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("the XDP object has no map {name}"))
}
