//! The packet tests' handle on a loaded `sluice_xdp`: frames run through it one at a time,
//! the counters each moved, and its maps filled and aged by hand. Every helper panics with
//! what failed, as the tests want.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use aya::Pod;
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::backend::BackendValue;
use lb_common::flood::{SourceKey, TokenBucket};
use lb_common::flow::{FlowKey, FlowValue};
use lb_common::icmp::{IcmpReason, VipKey};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS, nat_source_port_bit};
use lb_common::service::{ServiceKey, ServiceValue};
use lb_common::stats::{Counter, Reason};
use lb_common::{XDP_PROGRAM_NAME, maps};

use super::{L4, backend_value, packets, service, test_run};

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
    pub(super) fn load(object: &Path, ifindex: u32) -> Dataplane {
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
        let mut out = vec![0u8; frame.len() + 256];
        let result = test_run(program, self.ifindex, frame, &mut out, 1)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e:?}", frame.len()));
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
        let array = self.per_cpu_counters(maps::ICMP_STATS);
        IcmpReason::ALL
            .iter()
            .map(|reason| {
                packets(&array, *reason as u32)
                    .unwrap_or_else(|e| panic!("ICMP_STATS[{reason:?}]: {e}"))
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
        let array = self.per_cpu_counters(maps::GLOBAL_STATS);
        Reason::ALL
            .iter()
            .map(|reason| {
                packets(&array, *reason as u32)
                    .unwrap_or_else(|e| panic!("GLOBAL_STATS[{reason:?}]: {e}"))
            })
            .collect()
    }

    fn per_cpu_counters(&self, name: &str) -> PerCpuArray<&MapData, Counter> {
        let map = self.ebpf.map(name);
        let map = map.unwrap_or_else(|| panic!("no map {name}"));
        PerCpuArray::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
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

    /// Writes backend `id`, and adds its port to the NAT source ports (as the agent does for a
    /// NAT service's backends; a DSR backend's port there only widens the set).
    pub fn set_backend(&mut self, id: u32, value: BackendValue) {
        self.array(maps::BACKENDS)
            .set(id, value, 0)
            .unwrap_or_else(|e| panic!("BACKENDS[{id}]: {e}"));
        self.set_nat_source_port(u16::from_be(value.port), true);
    }

    /// Adds `port` (host order) to the ports NAT replies are looked up from, or takes it out.
    pub fn set_nat_source_port(&mut self, port: u16, on: bool) {
        let (word, bit) = nat_source_port_bit(port);
        let mut words = self.array::<u64>(maps::NAT_SOURCE_PORTS);
        let value = words
            .get(&word, 0)
            .unwrap_or_else(|e| panic!("NAT_SOURCE_PORTS[{word}]: {e}"));
        let value = if on { value | bit } else { value & !bit };
        words
            .set(word, value, 0)
            .unwrap_or_else(|e| panic!("NAT_SOURCE_PORTS[{word}]: {e}"));
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
