//! Carrying a running data path of the previous map schema over to this one, without a
//! moment with no program: its services, backends and Maglev tables are copied, its
//! connection and NAT entries converted into this schema's maps, then each interface's
//! pinned link is moved into this schema's folder and pointed at the new program by one
//! atomic update; the old folder goes last. Entries the old program makes between the copy
//! and the swap are copied by a second pass.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use aya::{Ebpf, Pod};
use lb_common::addr::WireAddr;
use lb_common::backend::BackendValue;
use lb_common::flow::{FlowKey, FlowValue, NatValue};
use lb_common::limits::SETTING_FLAGS;
use lb_common::maps;
use lb_common::service::{ServiceKey, ServiceValue};

use super::{Pins, pin_error};
use crate::dataplane::DataplaneError;
use crate::dataplane::kernel_maps::KernelMaps;
use crate::dataplane::sync::MapWriter;

/// `bpf_map_update_elem` flag: only insert a key that is not there yet.
const BPF_NOEXIST: u64 = 1;

/// The schema this build can carry a running data path over from.
pub const PREVIOUS_SCHEMA: u32 = 1;

/// Schema v1's connection-table value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValueV1 {
    pub backend_id: u32,
    pub backend_generation: u32,
}

/// Schema v1's NAT reverse value (no client port: the backend saw the client's own).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValueV1 {
    pub vip: WireAddr,
    pub vip_port: u16,
    pub client_mac: [u8; 6],
    pub local_mac: [u8; 6],
    pub _pad: [u8; 2],
    pub backend_id: u32,
    pub client_ifindex: u32,
}

const _: () = assert!(size_of::<FlowValueV1>() == 8);
const _: () = assert!(size_of::<NatValueV1>() == 40);
// SAFETY: repr(C), integers only, explicit padding (sizes asserted above).
unsafe impl Pod for FlowValueV1 {}
// SAFETY: as above.
unsafe impl Pod for NatValueV1 {}

/// The v1 entry as this schema's: refreshed now (its age is unknown), no TCP state seen yet,
/// the client's own port as the NAT port (v1 never changed it).
pub fn convert_flow(key: &FlowKey, old: &FlowValueV1, now_ns: u64) -> FlowValue {
    FlowValue {
        backend_id: old.backend_id,
        backend_generation: old.backend_generation,
        last_seen_ns: now_ns,
        nat_port: key.src_port,
        state: 0,
        _pad: [0; 5],
    }
}

/// The v1 reverse entry as this schema's: the client port is the reply's destination port.
pub fn convert_nat(reply: &FlowKey, old: &NatValueV1) -> NatValue {
    NatValue {
        vip: old.vip,
        vip_port: old.vip_port,
        client_mac: old.client_mac,
        local_mac: old.local_mac,
        client_port: reply.dst_port,
        backend_id: old.backend_id,
        client_ifindex: old.client_ifindex,
    }
}

/// CLOCK_MONOTONIC_COARSE, the clock the XDP program stamps entries with.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A data path of [`PREVIOUS_SCHEMA`] running from its pin folder.
#[derive(Debug)]
pub struct Previous {
    pins: Pins,
}

/// How many entries a copy carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct Carried {
    pub flows: usize,
    pub nat: usize,
}

impl Previous {
    /// The previous schema's folder under `pin_dir`, if a data path runs from it.
    pub fn find(pin_dir: &Path) -> Option<Self> {
        let dir = pin_dir.join(format!("v{PREVIOUS_SCHEMA}"));
        let pins = Pins { dir };
        (!pins.linked_interfaces().is_empty()).then_some(Self { pins })
    }

    pub fn dir(&self) -> &Path {
        self.pins.dir()
    }

    /// Interfaces its program is attached to.
    pub fn interfaces(&self) -> Vec<String> {
        self.pins.linked_interfaces()
    }

    /// Slots of its ring map: this schema's must hold every region its services use.
    pub fn ring_capacity(&self) -> Option<u32> {
        self.pins.ring_capacity()
    }

    /// Where its link on `interface` is pinned.
    pub fn link(&self, interface: &str) -> PathBuf {
        self.pins.link(interface)
    }

    fn open(&self, name: &'static str) -> Result<Map, DataplaneError> {
        let path = self.pins.map(name);
        let data = MapData::from_pin(&path)
            .map_err(|e| pin_error("opening the previous schema's map", &path)(e.into()))?;
        Map::from_map_data(data).map_err(DataplaneError::map)
    }

    /// Copies services, backends, the Maglev regions they use and the flags into `maps`
    /// (layouts unchanged since v1), so the first apply adopts them by the usual diff.
    pub fn copy_tables(&self, maps: &mut KernelMaps) -> Result<(), DataplaneError> {
        let services: HashMap<MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.open(maps::SERVICES)?).map_err(DataplaneError::map)?;
        let backends: Array<MapData, BackendValue> =
            Array::try_from(self.open(maps::BACKENDS)?).map_err(DataplaneError::map)?;
        let rings: Array<MapData, u32> =
            Array::try_from(self.open(maps::MAGLEV_RINGS)?).map_err(DataplaneError::map)?;
        let settings: Array<MapData, u32> =
            Array::try_from(self.open(maps::SETTINGS)?).map_err(DataplaneError::map)?;
        for (id, backend) in backends.iter().enumerate() {
            let backend = backend.map_err(DataplaneError::map)?;
            if backend.generation != 0 {
                let id = u32::try_from(id).unwrap_or(u32::MAX);
                maps.set_backend(id, &backend)?;
            }
        }
        let mut slots = Vec::new();
        let mut all = Vec::new();
        for entry in services.iter() {
            all.push(entry.map_err(DataplaneError::map)?);
        }
        for (start, len) in crate::dataplane::sync::Snapshot::regions_to_read(&all) {
            for index in start..start.saturating_add(len) {
                let id = rings.get(&index, 0).map_err(DataplaneError::map)?;
                slots.push((index, id));
            }
        }
        maps.set_ring_slots(&slots)?;
        // Services last: a service never points at a ring not written yet.
        for (key, value) in &all {
            maps.set_service(key, value)?;
        }
        let flags = settings
            .get(&SETTING_FLAGS, 0)
            .map_err(DataplaneError::map)?;
        maps.set_settings_flags(flags)?;
        Ok(())
    }

    /// Converts its connection and NAT entries into this schema's maps in `ebpf`;
    /// `only_missing` leaves entries already there alone (the second pass, after the swap).
    pub fn copy_flows(
        &self,
        ebpf: &mut Ebpf,
        only_missing: bool,
    ) -> Result<Carried, DataplaneError> {
        let now = coarse_now_ns();
        let flag = if only_missing { BPF_NOEXIST } else { 0 };
        let mut carried = Carried::default();
        let old: HashMap<MapData, FlowKey, FlowValueV1> =
            HashMap::try_from(self.open(maps::CONNTRACK)?).map_err(DataplaneError::map)?;
        let mut new: HashMap<&mut MapData, FlowKey, FlowValue> = take(ebpf, maps::CONNTRACK)?;
        for entry in old.iter() {
            let (key, value) = entry.map_err(DataplaneError::map)?;
            if inserted(new.insert(key, convert_flow(&key, &value, now), flag))? {
                carried.flows += 1;
            }
        }
        let old: HashMap<MapData, FlowKey, NatValueV1> =
            HashMap::try_from(self.open(maps::NAT_REVERSE)?).map_err(DataplaneError::map)?;
        let mut new: HashMap<&mut MapData, FlowKey, NatValue> = take(ebpf, maps::NAT_REVERSE)?;
        for entry in old.iter() {
            let (key, value) = entry.map_err(DataplaneError::map)?;
            if inserted(new.insert(key, convert_nat(&key, &value), flag))? {
                carried.nat += 1;
            }
        }
        Ok(carried)
    }

    /// Removes its folder: the links left there (interfaces this agent does not attach to)
    /// and its maps.
    pub fn remove(self) -> Result<(), DataplaneError> {
        super::detach::remove_folder(self.pins.dir()).map(|_| ())
    }
}

fn take<'a, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, FlowKey, V>, DataplaneError> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
    HashMap::try_from(map).map_err(DataplaneError::map)
}

/// Whether an insert went in: `false` when the key was there already (BPF_NOEXIST).
fn inserted(result: Result<(), MapError>) -> Result<bool, DataplaneError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
            Ok(false)
        }
        Err(e) => Err(DataplaneError::map(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_entries_convert_with_the_client_port_and_a_fresh_clock() {
        let key = FlowKey {
            src_addr: [1, 0, 0, 0],
            dst_addr: [2, 0, 0, 0],
            src_port: 4444u16.to_be(),
            dst_port: 80u16.to_be(),
            protocol: 6,
            family: 4,
            _pad: [0; 2],
        };
        let flow = convert_flow(
            &key,
            &FlowValueV1 {
                backend_id: 7,
                backend_generation: 3,
            },
            42,
        );
        assert_eq!(
            (flow.backend_id, flow.backend_generation, flow.last_seen_ns),
            (7, 3, 42)
        );
        assert_eq!((flow.nat_port, flow.state), (key.src_port, 0));
        let reply = FlowKey {
            src_addr: [3, 0, 0, 0],
            dst_addr: [1, 0, 0, 0],
            src_port: 8080u16.to_be(),
            dst_port: 4444u16.to_be(),
            ..key
        };
        let old = NatValueV1 {
            vip: [2, 0, 0, 0],
            vip_port: 80u16.to_be(),
            client_mac: [1; 6],
            local_mac: [2; 6],
            _pad: [0; 2],
            backend_id: 7,
            client_ifindex: 9,
        };
        let nat = convert_nat(&reply, &old);
        assert_eq!(nat.client_port, 4444u16.to_be());
        assert_eq!(
            (nat.vip, nat.vip_port, nat.backend_id),
            (old.vip, old.vip_port, 7)
        );
        assert_eq!(
            (nat.client_mac, nat.local_mac, nat.client_ifindex),
            ([1; 6], [2; 6], 9)
        );
    }
}
