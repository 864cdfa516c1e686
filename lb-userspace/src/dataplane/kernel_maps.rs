//! The real maps behind [`MapWriter`]: typed aya handles taken from the loaded object.

use std::os::fd::{AsFd, OwnedFd};

use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::backend::BackendValue;
use lb_common::limits::SETTING_FLAGS;
use lb_common::maps;
use lb_common::service::{ServiceKey, ServiceValue};

use super::sync::{MapWriter, Snapshot, SyncError};
use super::{DataplaneError, batch};

/// The maps the agent writes.
pub struct KernelMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    rings: Array<MapData, u32>,
    settings: Array<MapData, u32>,
    /// Second descriptors of `backends` and `rings`, for batched writes (aya 0.14 keeps its
    /// own private).
    backends_fd: OwnedFd,
    rings_fd: OwnedFd,
}

impl KernelMaps {
    /// Takes the writable maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        let services = HashMap::try_from(take(maps::SERVICES)?).map_err(DataplaneError::map)?;
        let backends = take(maps::BACKENDS)?;
        let backends_fd = array_fd(&backends, maps::BACKENDS)?;
        let backends = Array::try_from(backends).map_err(DataplaneError::map)?;
        let rings = take(maps::MAGLEV_RINGS)?;
        let rings_fd = array_fd(&rings, maps::MAGLEV_RINGS)?;
        let rings = Array::try_from(rings).map_err(DataplaneError::map)?;
        let settings = Array::try_from(take(maps::SETTINGS)?).map_err(DataplaneError::map)?;
        Ok(Self {
            services,
            backends,
            rings,
            settings,
            backends_fd,
            rings_fd,
        })
    }
}

impl KernelMaps {
    /// Writes one settings slot (the connection-table timeouts; the flags go through
    /// [`MapWriter::set_settings_flags`]).
    pub fn set_setting(&mut self, slot: u32, value: u32) -> Result<(), DataplaneError> {
        self.settings
            .set(slot, value, 0)
            .map_err(DataplaneError::map)
    }

    /// Reads what pinned maps hold, for [`super::sync::MapSync::adopt`].
    pub fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let mut snapshot = Snapshot::default();
        for entry in self.services.iter() {
            snapshot.services.push(entry.map_err(DataplaneError::map)?);
        }
        for (id, value) in self.backends.iter().enumerate() {
            let value = value.map_err(DataplaneError::map)?;
            if value.generation != 0 {
                let id = u32::try_from(id).unwrap_or(u32::MAX);
                snapshot.backends.push((id, value));
            }
        }
        for (start, len) in Snapshot::regions_to_read(&snapshot.services) {
            let mut slots = Vec::with_capacity(len as usize);
            for index in start..start.saturating_add(len) {
                slots.push(self.rings.get(&index, 0).map_err(DataplaneError::map)?);
            }
            snapshot.regions.insert(start, slots);
        }
        Ok(snapshot)
    }
}

/// A second descriptor of an array map.
fn array_fd(map: &Map, name: &'static str) -> Result<OwnedFd, DataplaneError> {
    match map {
        Map::Array(data) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| DataplaneError::MapFd { map: name, source }),
        _ => Err(DataplaneError::MissingMap(name)),
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> SyncError {
    move |e| SyncError::Map {
        map,
        reason: e.to_string(),
    }
}

impl MapWriter for KernelMaps {
    fn set_backend(&mut self, id: u32, value: &BackendValue) -> Result<(), SyncError> {
        self.backends
            .set(id, value, 0)
            .map_err(map_error(maps::BACKENDS))
    }

    fn set_backends(&mut self, backends: &[(u32, BackendValue)]) -> Result<(), SyncError> {
        let (ids, values): (Vec<u32>, Vec<BackendValue>) = backends.iter().copied().unzip();
        let done = batch::update(self.backends_fd.as_fd(), &ids, &values);
        for (id, value) in &backends[done..] {
            self.set_backend(*id, value)?;
        }
        Ok(())
    }

    fn set_ring_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), SyncError> {
        let (indices, ids): (Vec<u32>, Vec<u32>) = slots.iter().copied().unzip();
        let done = batch::update(self.rings_fd.as_fd(), &indices, &ids);
        for (index, backend_id) in &slots[done..] {
            self.rings
                .set(*index, backend_id, 0)
                .map_err(map_error(maps::MAGLEV_RINGS))?;
        }
        Ok(())
    }

    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), SyncError> {
        self.services
            .insert(key, value, 0)
            .map_err(map_error(maps::SERVICES))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), SyncError> {
        self.services.remove(key).map_err(map_error(maps::SERVICES))
    }

    fn set_settings_flags(&mut self, flags: u32) -> Result<(), SyncError> {
        self.settings
            .set(SETTING_FLAGS, flags, 0)
            .map_err(map_error(maps::SETTINGS))
    }
}
