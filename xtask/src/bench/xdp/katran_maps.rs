//! Katran's maps as the bench fills them: their byte layouts (Katran's `balancer_structs.h`
//! and `balancer_consts.h` at the commit the user builds; x86-64, addresses and ports in
//! network byte order; only the bytes are written here, no code of Katran's), and the
//! provisioning for the bench's DSR services.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData};
use lb_common::hash::DEFAULT_TABLE_SIZE;
use lb_common::limits::DEFAULT_CONNTRACK_ENTRIES;
use sluice_tests::xdp_lab::{BACKENDS, Family, backend_ip};

use super::katran::NEXT_HOP_MAC;
use super::services::{Mode, SERVICE_PORT, maglev_table, take, vip};

const RING_SIZE: u32 = 65_537;
/// `real_definition.flags`: the real's address is IPv6.
const F_IPV6: u8 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// `struct vip_definition`, 20 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct VipKey {
    addr: [u8; 16],
    port: u16,
    proto: u8,
    _pad: u8,
}

/// `struct vip_meta`, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct VipMeta {
    flags: u32,
    vip_num: u32,
}

/// `struct real_definition`, 20 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Real {
    addr: [u8; 16],
    flags: u8,
    _pad: [u8; 3],
}

/// `struct lb_stats`: two counters, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stats {
    pub v1: u64,
    pub v2: u64,
}

// SAFETY: plain old data, `repr(C)`, no padding the kernel could leave uninitialised that we
// read as anything but bytes.
unsafe impl aya::Pod for VipKey {}
// SAFETY: as above.
unsafe impl aya::Pod for VipMeta {}
// SAFETY: as above.
unsafe impl aya::Pod for Real {}
// SAFETY: as above.
unsafe impl aya::Pod for Stats {}

const _: () = assert!(size_of::<VipKey>() == 20 && size_of::<Real>() == 20);

/// Fills Katran's maps: one VIP per family (Sluice's DSR VIPs, TCP and UDP), its reals (ids
/// from 1: id 0 means an uninitialised ring), its ring from lb-common's Maglev table for the
/// same backends, the next hop, and `cpu`'s LRU, the size of Sluice's connection table.
pub fn provision(ebpf: &mut Ebpf, cpu: usize) -> Result<HashMap<MapData, [u8; 40], [u8; 16]>> {
    let mut vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(take(ebpf, "vip_map")?)?;
    let mut reals: Array<MapData, Real> = Array::try_from(take(ebpf, "reals")?)?;
    let mut rings: Array<MapData, u32> = Array::try_from(take(ebpf, "ch_rings")?)?;
    let mut ctl: Array<MapData, u64> = Array::try_from(take(ebpf, "ctl_array")?)?;
    let mut lrus: ArrayOfMaps<MapData> = ArrayOfMaps::try_from(take(ebpf, "lru_mapping")?)?;
    for (vip_num, family) in [Family::V4, Family::V6].into_iter().enumerate() {
        let ipv6 = family == Family::V6;
        let first = 1 + vip_num as u32 * BACKENDS as u32;
        let addrs: Vec<SocketAddr> = (0..BACKENDS)
            .map(|i| SocketAddr::new(backend_ip(i, family), SERVICE_PORT))
            .collect();
        for (id, addr) in (first..).zip(&addrs) {
            let real = Real {
                addr: wire(addr.ip()),
                flags: if ipv6 { F_IPV6 } else { 0 },
                _pad: [0; 3],
            };
            reals
                .set(id, real, 0)
                .with_context(|| format!("reals[{id}]"))?;
        }
        let table = maglev_table(&addrs)?;
        if table.table_size() != RING_SIZE {
            bail!("Katran's rings have {RING_SIZE} slots, the bench's tables {DEFAULT_TABLE_SIZE}");
        }
        let base = vip_num as u32 * RING_SIZE;
        for (slot, backend) in (0..).zip(table.slots()) {
            rings
                .set(base + slot, first + backend, 0)
                .with_context(|| format!("ch_rings[{}]", base + slot))?;
        }
        for proto in [lb_common::addr::PROTO_TCP, lb_common::addr::PROTO_UDP] {
            let key = VipKey {
                addr: wire(vip(family, Mode::Dsr)),
                port: SERVICE_PORT.to_be(),
                proto,
                _pad: 0,
            };
            let meta = VipMeta {
                flags: 0,
                vip_num: vip_num as u32,
            };
            vips.insert(key, meta, 0).context("vip_map")?;
        }
    }
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&NEXT_HOP_MAC);
    ctl.set(0, u64::from_ne_bytes(mac), 0)
        .context("ctl_array[0]")?;
    let lru =
        aya_obj::Map::new_from_params(BPF_MAP_TYPE_LRU_HASH, 40, 16, DEFAULT_CONNTRACK_ENTRIES, 0);
    let lru = MapData::create(lru, "katran_lru", None).context("creating Katran's LRU")?;
    let cpu = u32::try_from(cpu).context("CPU number")?;
    lrus.set(cpu, &lru, 0)
        .with_context(|| format!("lru_mapping[{cpu}]"))?;
    Ok(HashMap::try_from(Map::LruHashMap(lru))?)
}

/// An address as Katran stores it: IPv4 in the first 4 bytes, network order.
fn wire(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}
