//! The test bench: one network namespace whose FIB and neighbour tables make every
//! `bpf_fib_lookup` answer known in advance, and the real `sluice_xdp` loaded into it, its maps
//! filled by hand and its frames run through BPF_PROG_TEST_RUN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use aya::Pod;
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::flood::{SourceKey, TokenBucket};
use lb_common::flow::{FlowKey, FlowValue};
use lb_common::icmp::{IcmpReason, VipKey};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS};
use lb_common::service::{ServiceKey, ServiceValue};
use lb_common::stats::{Counter, Reason};
use lb_common::{XDP_PROGRAM_NAME, maps};
use sluice_tests::{Netns, add_addr, ebpf_object, format_mac, if_index, link_up, sysctl};

use crate::frames::L4;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The load balancer's interface, where every test frame arrives.
pub const ETH0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe0];
/// eth0's veth peer, in the same namespace: a second interface to redirect to.
pub const ETH1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe1];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x10];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x10);
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 1);
/// Backends with a permanent neighbour entry on eth0: `backend_ip(i, ..)` for `i < BACKENDS`.
pub const BACKENDS: usize = 8;
/// A backend on eth1's network (10.3.0.20, fd03::20).
pub const FAR_MAC: [u8; 6] = [0x02, 0xb1, 0, 0, 0, 0x20];
pub const FAR4: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 20);
pub const FAR6: Ipv6Addr = Ipv6Addr::new(0xfd03, 0, 0, 0, 0, 0, 0, 0x20);
/// On eth0's network but with no neighbour entry.
pub const UNRESOLVED4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 99);
/// No route at all (the namespace has no default route).
pub const UNROUTABLE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Behind the gateway 10.2.0.254, so not on link.
pub const ROUTED4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 5);

/// Which family a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

pub fn client_ip(family: Family) -> IpAddr {
    match family {
        Family::V4 => CLIENT4.into(),
        Family::V6 => CLIENT6.into(),
    }
}

pub fn vip(family: Family) -> IpAddr {
    match family {
        Family::V4 => VIP4.into(),
        Family::V6 => VIP6.into(),
    }
}

/// Backend `i`: 10.2.0.(11+i) or fd02::(11+i) hex, MAC 02:b0:00:00:00:(11+i).
pub fn backend_ip(i: usize, family: Family) -> IpAddr {
    let host = 0x11 + u8::try_from(i).unwrap_or_else(|_| panic!("backend index {i}"));
    match family {
        Family::V4 => Ipv4Addr::new(10, 2, 0, host).into(),
        Family::V6 => Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, host.into()).into(),
    }
}

pub fn backend_mac(i: usize) -> [u8; 6] {
    let host = 0x11 + u8::try_from(i).unwrap_or_else(|_| panic!("backend index {i}"));
    [0x02, 0xb0, 0, 0, 0, host]
}

/// An active backend map value for `addr`, generation 1.
pub fn backend_value(addr: SocketAddr) -> BackendValue {
    let (wire, family) = lb_common::addr::to_wire(addr.ip());
    BackendValue {
        addr: wire,
        port: addr.port().to_be(),
        family,
        flags: BACKEND_ACTIVE,
        generation: 1,
    }
}

/// A service value: id 1, seed 0.
pub fn service(flags: u32, ring_offset: u32, table_size: u32) -> ServiceValue {
    ServiceValue {
        id: 1,
        flags,
        ring_offset,
        table_size,
        hash_seed: 0,
        region_start: 0,
    }
}

/// A namespace holding a veth pair (eth0, eth1) with addresses, forwarding on, and permanent
/// neighbours for the client and every backend. Deleted on drop.
pub struct Lab {
    ns: Netns,
    eth0: u32,
}

impl Lab {
    pub fn new() -> Lab {
        let ns = Netns::new("xdp");
        let (mac0, mac1) = (format_mac(ETH0_MAC), format_mac(ETH1_MAC));
        ns.ip([
            "link", "add", "eth0", "address", &mac0, "type", "veth", "peer", "name", "eth1",
            "address", &mac1,
        ]);
        link_up(&ns, "eth0");
        link_up(&ns, "eth1");
        for cidr in ["10.1.0.1/24", "10.2.0.1/24", "fd01::1/64", "fd02::1/64"] {
            add_addr(&ns, "eth0", cidr);
        }
        for cidr in ["10.3.0.1/24", "fd03::1/64"] {
            add_addr(&ns, "eth1", cidr);
        }
        sysctl(&ns, "net.ipv4.conf.all.forwarding", "1");
        sysctl(&ns, "net.ipv6.conf.all.forwarding", "1");
        let mut neighbours = vec![
            (IpAddr::from(CLIENT4), CLIENT_MAC, "eth0"),
            (CLIENT6.into(), CLIENT_MAC, "eth0"),
            (FAR4.into(), FAR_MAC, "eth1"),
            (FAR6.into(), FAR_MAC, "eth1"),
            (
                Ipv4Addr::new(10, 2, 0, 254).into(),
                [0x02, 0xb0, 0, 0, 0, 0xfe],
                "eth0",
            ),
        ];
        for i in 0..BACKENDS {
            for family in [Family::V4, Family::V6] {
                neighbours.push((backend_ip(i, family), backend_mac(i), "eth0"));
            }
        }
        for (addr, mac, dev) in neighbours {
            let (addr, mac) = (addr.to_string(), format_mac(mac));
            ns.ip([
                "neigh",
                "add",
                &addr,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        ns.ip(["route", "add", "10.50.0.0/24", "via", "10.2.0.254"]);
        let eth0 = if_index(&ns, "eth0");
        Lab { ns, eth0 }
    }

    /// The namespace, to change its neighbours or routes mid-test.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Loads the program (a fresh load: maps start empty) inside the namespace and runs `f`
    /// on that thread, so the test run's ingress ifindex and FIB lookups are the namespace's.
    pub fn run<T: Send>(&self, f: impl FnOnce(&mut Dataplane) -> T + Send) -> T {
        let object = ebpf_object();
        self.ns.in_ns(|| {
            let mut dp = Dataplane::load(&object, self.eth0);
            f(&mut dp)
        })
    }
}

/// How often a load that failed with EAGAIN is tried again. The verifier gives up with EAGAIN
/// when a signal is pending, as it can be with tests spawning `ip` on other threads; libbpf
/// retries the same way.
const LOAD_ATTEMPTS: usize = 5;

/// What one frame did.
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
    /// Every reason counted for this frame but `Seen` (checked to be counted once), in slot order.
    pub reasons: Vec<Reason>,
    /// Every `ICMP_STATS` reason counted for this frame (each once), in slot order.
    pub icmp: Vec<IcmpReason>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    ifindex: u32,
}

impl Dataplane {
    /// Loads the object and verifies `sluice_xdp`; its maps start empty.
    fn load(object: &Path, ifindex: u32) -> Dataplane {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ebpf = EbpfLoader::new()
                .load_file(object)
                .unwrap_or_else(|e| panic!("loading {}: {e}", object.display()));
            let mut dp = Dataplane { ebpf, ifindex };
            let error = match dp.program_mut().load() {
                Ok(()) => return dp,
                Err(error) => error,
            };
            let again = matches!(&error, ProgramError::LoadError { io_error, .. }
                if io_error.raw_os_error() == Some(libc::EAGAIN));
            assert!(
                again && attempt < LOAD_ATTEMPTS,
                "verifying {XDP_PROGRAM_NAME} (attempt {attempt}): {error:?}"
            );
        }
    }

    fn program_mut(&mut self) -> &mut Xdp {
        let program = self.ebpf.program_mut(XDP_PROGRAM_NAME);
        program
            .unwrap_or_else(|| panic!("no program {XDP_PROGRAM_NAME} in the object"))
            .try_into()
            .unwrap_or_else(|e| panic!("{XDP_PROGRAM_NAME} is not XDP: {e}"))
    }

    /// Runs one frame through the program (repeat 1) as if it arrived on eth0.
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let program: &Xdp = self
            .ebpf
            .program(XDP_PROGRAM_NAME)
            .unwrap_or_else(|| panic!("no program {XDP_PROGRAM_NAME}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{XDP_PROGRAM_NAME} is not XDP: {e}"));
        let len = u32::try_from(frame.len()).unwrap_or_else(|_| panic!("frame too long"));
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data = metadata length (none), data_end = the
        // frame's length, data_meta and egress_ifindex zero.
        let ctx: Vec<u8> = [0, len, 0, self.ifindex, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: 1,
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {len}-byte frame: {e:?}"));
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// Runs one frame and reports which counters it moved.
    pub fn run_counted(&self, frame: &[u8]) -> Outcome {
        let before = self.packet_counts();
        let icmp_before = self.icmp_counts();
        let (action, frame) = self.run(frame);
        let after = self.packet_counts();
        let icmp_moved: Vec<(IcmpReason, u64)> = IcmpReason::ALL
            .iter()
            .zip(icmp_before.iter().zip(&self.icmp_counts()))
            .filter(|(_, (b, a))| a != b)
            .map(|(reason, (b, a))| (*reason, a - b))
            .collect();
        assert!(
            icmp_moved.iter().all(|(_, n)| *n == 1),
            "an ICMP frame counts at most once in ICMP_STATS; moved: {icmp_moved:?}"
        );
        let moved: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a != b)
            .map(|(reason, (b, a))| (*reason, a - b))
            .collect();
        assert!(
            moved.contains(&(Reason::Seen, 1)) && moved.iter().all(|(_, n)| *n == 1),
            "every frame counts once in Seen and at most once elsewhere; moved: {moved:?}"
        );
        let reasons = moved
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| *r != Reason::Seen)
            .collect();
        Outcome {
            action,
            frame,
            reasons,
            icmp: icmp_moved.into_iter().map(|(r, _)| r).collect(),
        }
    }

    /// ICMP_STATS packet counts, summed over CPUs, in `IcmpReason` slot order.
    pub fn icmp_counts(&self) -> Vec<u64> {
        let map = self
            .ebpf
            .map(maps::ICMP_STATS)
            .unwrap_or_else(|| panic!("no ICMP_STATS"));
        let array =
            PerCpuArray::<_, Counter>::try_from(map).unwrap_or_else(|e| panic!("ICMP_STATS: {e}"));
        IcmpReason::ALL
            .iter()
            .map(|reason| {
                let per_cpu = array
                    .get(&(*reason as u32), 0)
                    .unwrap_or_else(|e| panic!("ICMP_STATS[{reason:?}]: {e}"));
                per_cpu.iter().map(|c| c.packets).sum()
            })
            .collect()
    }

    /// Adds `addr` to the VIP set echo requests are checked against.
    pub fn set_vip(&mut self, addr: IpAddr) {
        let (addr, family) = lb_common::addr::to_wire(addr);
        let key = VipKey {
            addr,
            family,
            _pad: [0; 3],
        };
        let map = self.ebpf.map_mut(maps::VIPS);
        let map = map.unwrap_or_else(|| panic!("no map VIPS"));
        HashMap::<_, VipKey, u32>::try_from(map)
            .unwrap_or_else(|e| panic!("VIPS: {e}"))
            .insert(key, 1, 0)
            .unwrap_or_else(|e| panic!("VIPS[{key:?}]: {e}"));
    }

    /// GLOBAL_STATS packet counts, summed over CPUs, in `Reason` slot order.
    pub fn packet_counts(&self) -> Vec<u64> {
        let map = self
            .ebpf
            .map(maps::GLOBAL_STATS)
            .unwrap_or_else(|| panic!("no GLOBAL_STATS"));
        let array = PerCpuArray::<_, Counter>::try_from(map)
            .unwrap_or_else(|e| panic!("GLOBAL_STATS: {e}"));
        Reason::ALL
            .iter()
            .map(|reason| {
                let per_cpu = array
                    .get(&(*reason as u32), 0)
                    .unwrap_or_else(|e| panic!("GLOBAL_STATS[{reason:?}]: {e}"));
                per_cpu.iter().map(|c| c.packets).sum()
            })
            .collect()
    }

    fn array<V: Pod>(&mut self, name: &str) -> Array<&mut MapData, V> {
        let map = self.ebpf.map_mut(name);
        let map = map.unwrap_or_else(|| panic!("no map {name}"));
        Array::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn set_service(&mut self, vip: SocketAddr, l4: L4, value: ServiceValue) {
        let (addr, family) = lb_common::addr::to_wire(vip.ip());
        let key = ServiceKey {
            addr,
            port: vip.port().to_be(),
            protocol: l4.protocol(),
            family,
        };
        let map = self.ebpf.map_mut(maps::SERVICES);
        let map = map.unwrap_or_else(|| panic!("no map SERVICES"));
        HashMap::<_, ServiceKey, ServiceValue>::try_from(map)
            .unwrap_or_else(|e| panic!("SERVICES: {e}"))
            .insert(key, value, 0)
            .unwrap_or_else(|e| panic!("SERVICES[{vip} {l4:?}]: {e}"));
    }

    pub fn set_backend(&mut self, id: u32, value: BackendValue) {
        self.array(maps::BACKENDS)
            .set(id, value, 0)
            .unwrap_or_else(|e| panic!("BACKENDS[{id}]: {e}"));
    }

    /// Writes `slots` (backend ids) into the ring map from `offset` on.
    pub fn set_ring(&mut self, offset: u32, slots: &[u32]) {
        let mut ring = self.array::<u32>(maps::MAGLEV_RINGS);
        for (index, id) in (offset..).zip(slots) {
            ring.set(index, id, 0)
                .unwrap_or_else(|e| panic!("MAGLEV_RINGS[{index}]: {e}"));
        }
    }

    /// Writes the SETTING_FLAGS slot.
    pub fn set_flags(&mut self, flags: u32) {
        self.array(maps::SETTINGS)
            .set(SETTING_FLAGS, flags, 0)
            .unwrap_or_else(|e| panic!("SETTINGS: {e}"));
    }

    /// Writes one settings slot (`lb_common::limits::SETTING_*`).
    pub fn set_setting(&mut self, slot: u32, value: u32) {
        self.array(maps::SETTINGS)
            .set(slot, value, 0)
            .unwrap_or_else(|e| panic!("SETTINGS[{slot}]: {e}"));
    }

    fn conntrack(&mut self) -> HashMap<&mut MapData, FlowKey, FlowValue> {
        let map = self.ebpf.map_mut(maps::CONNTRACK);
        let map = map.unwrap_or_else(|| panic!("no map CONNTRACK"));
        HashMap::try_from(map).unwrap_or_else(|e| panic!("CONNTRACK: {e}"))
    }

    /// The connection-table entry of `key`, if any.
    pub fn flow_entry(&mut self, key: &FlowKey) -> Option<FlowValue> {
        match self.conntrack().get(key, 0) {
            Ok(value) => Some(value),
            Err(MapError::KeyNotFound) => None,
            Err(e) => panic!("CONNTRACK[{key:?}]: {e}"),
        }
    }

    /// Deletes the connection-table entry of `key`, if any.
    pub fn forget_flow(&mut self, key: &FlowKey) {
        if self.flow_entry(key).is_some() {
            self.conntrack()
                .remove(key)
                .unwrap_or_else(|e| panic!("deleting CONNTRACK[{key:?}]: {e}"));
        }
    }

    /// Moves the entry of `key` `seconds` into the past (its last-seen time earlier): the
    /// test's clock for timeouts.
    pub fn age_flow(&mut self, key: &FlowKey, seconds: f64) {
        let mut entry = self
            .flow_entry(key)
            .unwrap_or_else(|| panic!("no CONNTRACK entry to age for {key:?}"));
        let by = (seconds * 1e9) as u64;
        entry.last_seen_ns = entry.last_seen_ns.saturating_sub(by);
        self.conntrack()
            .insert(key, entry, 0)
            .unwrap_or_else(|e| panic!("CONNTRACK[{key:?}]: {e}"));
    }

    /// Moves the new-flow bucket of source `addr` `seconds` into the past, so it refills.
    pub fn age_source(&mut self, addr: IpAddr, seconds: u64) {
        let (addr, family) = lb_common::addr::to_wire(addr);
        let key = SourceKey {
            addr,
            family,
            _pad: [0; 3],
        };
        let map = self.ebpf.map_mut("SOURCE_BUCKETS");
        let map = map.unwrap_or_else(|| panic!("no map SOURCE_BUCKETS"));
        let mut buckets: HashMap<&mut MapData, SourceKey, TokenBucket> =
            HashMap::try_from(map).unwrap_or_else(|e| panic!("SOURCE_BUCKETS: {e}"));
        let mut bucket = buckets
            .get(&key, 0)
            .unwrap_or_else(|e| panic!("SOURCE_BUCKETS[{key:?}]: {e}"));
        bucket.last_ns = bucket.last_ns.saturating_sub(seconds * 1_000_000_000);
        buckets
            .insert(key, bucket, 0)
            .unwrap_or_else(|e| panic!("SOURCE_BUCKETS[{key:?}]: {e}"));
    }

    /// Sets SETTING_FLAG_NAT, so packets for no service are looked up as NAT replies.
    pub fn enable_nat(&mut self) {
        self.set_flags(SETTING_FLAG_NAT);
    }

    /// A service at `vip` whose 7-slot ring sends everything to backend `id`, set to `backend`.
    pub fn single_backend_service(
        &mut self,
        vip: SocketAddr,
        l4: L4,
        flags: u32,
        id: u32,
        backend: SocketAddr,
    ) {
        let offset = 7 * id;
        self.set_backend(id, backend_value(backend));
        self.set_ring(offset, &[id; 7]);
        self.set_service(vip, l4, service(flags, offset, 7));
    }
}
