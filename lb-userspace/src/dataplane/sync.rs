//! Keeps the kernel maps in step with a desired state, changing only what changed.
//!
//! Each L4 service owns a region of the ring map holding two Maglev tables (the double
//! buffer). A change writes the inactive table (only the slots that differ from what it
//! held), then flips the service's `ring_offset` to it with one map update, so the data path
//! never reads a half-written table. Backends no longer referenced are deactivated only after
//! every service stopped pointing new flows at them; established flows on them then re-steer.

mod adopt;
#[cfg(test)]
mod adopt_tests;
mod backends;
mod rings;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::limits::SETTING_FLAG_NAT;
use lb_common::service::{
    SERVICE_DSR, SERVICE_L7, SERVICE_NAT, SERVICE_REFUSE_WHEN_EMPTY, ServiceKey, ServiceValue,
};
use thiserror::Error;

use crate::balancer::{DesiredL4, DesiredService, DesiredState, ServiceMode};
pub use adopt::Snapshot;
use backends::BackendIds;
use rings::{RingAllocator, RingRegion};

/// Writes to the kernel's maps. Implemented by the real maps and by an in-memory fake.
pub trait MapWriter {
    fn set_backend(&mut self, id: u32, value: &BackendValue) -> Result<(), SyncError>;
    /// Writes several backends (the real maps in one batch).
    fn set_backends(&mut self, backends: &[(u32, BackendValue)]) -> Result<(), SyncError> {
        backends
            .iter()
            .try_for_each(|(id, value)| self.set_backend(*id, value))
    }
    /// Writes `(index, backend_id)` pairs into the ring map.
    fn set_ring_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), SyncError>;
    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), SyncError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), SyncError>;
    fn set_settings_flags(&mut self, flags: u32) -> Result<(), SyncError>;
}

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("writing the {map} map: {reason}")]
    Map { map: &'static str, reason: String },
    #[error(
        "the ring map holds {capacity} slots and this config needs more. The map is pinned and \
         outlives restarts: stop sluice, run `sluice detach` (established L4 flows are lost) \
         and start it again, so it sizes the map for the new config"
    )]
    RingsFull { capacity: u32 },
    #[error("more than {max} backends or services; the maps cannot hold them")]
    TooMany { max: u32 },
    #[error(
        "the pinned maps do not hold what this agent writes ({reason}); `sluice detach` \
         removes them, and the next start begins afresh"
    )]
    Adopt { reason: String },
}

/// What an `apply` did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub services_added: usize,
    pub services_changed: usize,
    pub services_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub ring_slots_written: usize,
}

/// What is applied for one service.
#[derive(Clone, Debug)]
struct AppliedService {
    /// `None` for a service adopted from pinned maps: it differs from any desired one.
    desired: Option<DesiredService>,
    /// For an adopted service, the service map's value as found: rewritten only if it differs.
    pinned: Option<ServiceValue>,
    id: u32,
    /// The ring region and the table each half holds (L4 only).
    ring: Option<AppliedRing>,
}

#[derive(Clone, Debug)]
struct AppliedRing {
    region: RingRegion,
    /// Backend ids per slot, per half; `None` until the half was written.
    halves: [Option<Vec<u32>>; 2],
    active: usize,
}

/// The applied state of the kernel maps, and the code that moves it to a desired state.
#[derive(Debug)]
pub struct MapSync {
    services: BTreeMap<ServiceKey, AppliedService>,
    service_ids: IdPool,
    backends: BackendIds,
    rings: RingAllocator,
    settings_flags: Option<u32>,
}

impl MapSync {
    /// An empty state for maps sized `ring_capacity` slots, `max_services` and `max_backends`.
    pub fn new(ring_capacity: u32, max_services: u32, max_backends: u32) -> Self {
        Self {
            services: BTreeMap::new(),
            service_ids: IdPool::new(max_services),
            backends: BackendIds::new(max_backends),
            rings: RingAllocator::new(ring_capacity),
            settings_flags: None,
        }
    }

    /// Backend id of `backend`, if it is applied.
    pub fn backend_id(&self, backend: &crate::balancer::DesiredBackend) -> Option<u32> {
        self.backends.id(backend)
    }

    /// Service id of the service at `key`, if it is applied.
    pub fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        self.services.get(key).map(|s| s.id)
    }

    /// Moves the maps from the applied state to `desired`, touching only what differs.
    pub fn apply(
        &mut self,
        desired: &DesiredState,
        maps: &mut impl MapWriter,
    ) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();

        // 1. Backends that appear: written active before any table can point at them.
        let wanted = desired_backends(desired);
        let mut added = Vec::new();
        for backend in &wanted {
            if self.backends.id(backend).is_none() {
                let (id, generation) = self.backends.allocate(backend)?;
                added.push((id, backend_value(backend, generation)));
            }
        }
        maps.set_backends(&added)?;
        report.backends_added += added.len();

        // 2. Services added or changed: tables first, then the flip.
        for (key, service) in &desired.services {
            let existing = self.services.get(key).cloned();
            if existing
                .as_ref()
                .is_some_and(|applied| applied.desired.as_ref() == Some(service))
            {
                continue;
            }
            let changed = existing.is_some();
            let applied = self.apply_service(service, existing, maps, &mut report)?;
            if changed {
                report.services_changed += 1;
            } else {
                report.services_added += 1;
            }
            self.services.insert(*key, applied);
        }

        // 3. Services removed.
        let removed: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !desired.services.contains_key(k))
            .copied()
            .collect();
        for key in removed {
            maps.remove_service(&key)?;
            if let Some(applied) = self.services.remove(&key) {
                self.service_ids.free(applied.id);
                if let Some(ring) = applied.ring {
                    self.rings.free(ring.region);
                }
            }
            report.services_removed += 1;
        }

        // 4. Backends no service references any more: deactivated, so flows on them re-steer.
        let unreferenced = self.backends.unreferenced(&wanted);
        let deactivated: Vec<(u32, BackendValue)> = unreferenced
            .iter()
            .map(|(backend, id, generation)| {
                let mut value = backend_value(backend, *generation);
                value.flags = 0;
                (*id, value)
            })
            .collect();
        maps.set_backends(&deactivated)?;
        for (backend, _, _) in &unreferenced {
            self.backends.free(backend);
        }
        report.backends_removed += unreferenced.len();

        let flags = if desired.nat_in_use() {
            SETTING_FLAG_NAT
        } else {
            0
        };
        if self.settings_flags != Some(flags) {
            maps.set_settings_flags(flags)?;
            self.settings_flags = Some(flags);
        }
        Ok(report)
    }

    fn apply_service(
        &mut self,
        service: &DesiredService,
        existing: Option<AppliedService>,
        maps: &mut impl MapWriter,
        report: &mut SyncReport,
    ) -> Result<AppliedService, SyncError> {
        let id = match &existing {
            Some(applied) => applied.id,
            None => self.service_ids.allocate()?,
        };
        let pinned = existing.as_ref().and_then(|e| e.pinned);
        let Some(l4) = &service.l4 else {
            let value = ServiceValue {
                id,
                flags: SERVICE_L7,
                ..ServiceValue::default()
            };
            if pinned != Some(value) {
                maps.set_service(&service.key, &value)?;
            }
            if let Some(ring) = existing.and_then(|e| e.ring) {
                self.rings.free(ring.region);
            }
            return Ok(AppliedService {
                desired: Some(service.clone()),
                pinned: None,
                id,
                ring: None,
            });
        };

        let table = self.table_ids(l4);
        // A new service, or a new table size, gets a fresh region; the old one is freed once
        // the service points away from it.
        let mut retired = None;
        let mut ring = match existing.and_then(|e| e.ring) {
            Some(ring) if ring.region.table_size == l4.table_size => ring,
            other => {
                let region = self.rings.allocate(l4.table_size)?;
                retired = other.map(|old| old.region);
                AppliedRing {
                    region,
                    halves: [None, None],
                    active: 1,
                }
            }
        };

        let (ring_offset, table_size) = match &table {
            // Adopted, and the active table already is the desired one: nothing to write.
            Some(slots) if pinned.is_some() && ring.halves[ring.active].as_ref() == Some(slots) => {
                (ring.region.half_offset(ring.active), l4.table_size)
            }
            Some(slots) => {
                let half = 1 - ring.active;
                let base = ring.region.half_offset(half);
                let writes: Vec<(u32, u32)> = slots
                    .iter()
                    .enumerate()
                    .filter(|(i, id)| {
                        ring.halves[half]
                            .as_ref()
                            .is_none_or(|old| old.get(*i) != Some(*id))
                    })
                    .map(|(i, id)| (base + i as u32, *id))
                    .collect();
                maps.set_ring_slots(&writes)?;
                report.ring_slots_written += writes.len();
                ring.halves[half] = Some(slots.clone());
                ring.active = half;
                (base, l4.table_size)
            }
            None => (ring.region.half_offset(ring.active), 0),
        };
        let mut flags = match l4.mode {
            ServiceMode::Dsr => SERVICE_DSR,
            ServiceMode::Nat => SERVICE_NAT,
        };
        if l4.refuse_when_empty {
            flags |= SERVICE_REFUSE_WHEN_EMPTY;
        }
        let value = ServiceValue {
            id,
            flags,
            ring_offset,
            table_size,
            hash_seed: l4.hash_seed,
            region_start: ring.region.start,
        };
        if pinned != Some(value) {
            maps.set_service(&service.key, &value)?;
        }
        if let Some(region) = retired {
            self.rings.free(region);
        }
        Ok(AppliedService {
            desired: Some(service.clone()),
            pinned: None,
            id,
            ring: Some(ring),
        })
    }

    /// The service's table as backend ids.
    /// Every backend of the table was allocated in step 1 of `apply`, so lookups succeed;
    /// `u32::MAX` (no such backend: the data path treats the slot as empty) is a safe fallback.
    fn table_ids(&self, l4: &DesiredL4) -> Option<Vec<u32>> {
        let table = l4.table.as_ref()?;
        let ids: Vec<u32> = l4
            .backends
            .iter()
            .map(|b| self.backends.id(b).unwrap_or(u32::MAX))
            .collect();
        Some(
            table
                .iter()
                .map(|&index| ids.get(index as usize).copied().unwrap_or(u32::MAX))
                .collect(),
        )
    }
}

fn desired_backends(desired: &DesiredState) -> Vec<crate::balancer::DesiredBackend> {
    let mut all: Vec<_> = desired
        .services
        .values()
        .filter_map(|s| s.l4.as_ref())
        .flat_map(|l4| l4.backends.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

fn backend_value(backend: &crate::balancer::DesiredBackend, generation: u32) -> BackendValue {
    let (addr, family) = lb_common::addr::to_wire(backend.address.ip());
    BackendValue {
        addr,
        port: backend.address.port().to_be(),
        family,
        flags: BACKEND_ACTIVE,
        generation,
    }
}

/// Small integer ids handed out and returned.
#[derive(Debug)]
struct IdPool {
    free: Vec<u32>,
    next: u32,
    max: u32,
}

impl IdPool {
    fn new(max: u32) -> Self {
        Self {
            free: Vec::new(),
            next: 0,
            max,
        }
    }

    fn allocate(&mut self) -> Result<u32, SyncError> {
        if let Some(id) = self.free.pop() {
            return Ok(id);
        }
        if self.next >= self.max {
            return Err(SyncError::TooMany { max: self.max });
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    fn free(&mut self, id: u32) {
        self.free.push(id);
    }
}
