//! Adopting maps a previous agent left pinned: the applied state is rebuilt from what the
//! kernel maps hold, so the next `apply` is the same diff a reload makes. Backend ids and
//! generations stay as they are (connection-table entries name them), every service keeps
//! its id and ring region, and a table is rewritten only where its inactive half differs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::service::{SERVICE_L7, ServiceKey, ServiceValue};

use super::backends::BackendIds;
use super::rings::{RingAllocator, RingRegion};
use super::{AppliedRing, AppliedService, IdPool, MapSync, SyncError, desired_backends};
use crate::balancer::{DesiredBackend, DesiredState};

/// What the pinned maps hold, as read by the agent that adopts them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<(ServiceKey, ServiceValue)>,
    /// Every backend slot ever handed out (generation above 0), by id.
    pub backends: Vec<(u32, BackendValue)>,
    /// For each L4 service with a table: its region's `2 * table_size` slots, by region start.
    pub regions: HashMap<u32, Vec<u32>>,
}

impl Snapshot {
    /// The ring regions (start, slots) to read for `services`.
    pub fn regions_to_read(services: &[(ServiceKey, ServiceValue)]) -> Vec<(u32, u32)> {
        services
            .iter()
            .filter(|(_, v)| v.flags & SERVICE_L7 == 0 && v.table_size > 0)
            .map(|(_, v)| (v.region_start, v.table_size.saturating_mul(2)))
            .collect()
    }
}

fn corrupt(reason: String) -> SyncError {
    SyncError::Adopt { reason }
}

impl MapSync {
    /// The applied state the pinned maps in `snapshot` stand for. `desired` only names the
    /// backends (their pools), matched to the pinned backends by address.
    pub fn adopt(
        snapshot: &Snapshot,
        desired: &DesiredState,
        ring_capacity: u32,
        max_services: u32,
        max_backends: u32,
    ) -> Result<Self, SyncError> {
        let mut sync = Self::new(ring_capacity, max_services, max_backends);
        sync.backends = adopt_backends(&snapshot.backends, desired, max_backends)?;
        for (key, value) in &snapshot.services {
            sync.service_ids.reserve(value.id)?;
            let ring = if value.flags & SERVICE_L7 != 0 || value.table_size == 0 {
                // No table in use: the next apply gives the service a fresh region.
                None
            } else {
                Some(adopt_ring(value, snapshot, &mut sync.rings)?)
            };
            sync.services.insert(
                *key,
                AppliedService {
                    desired: None,
                    pinned: Some(*value),
                    id: value.id,
                    ring,
                },
            );
        }
        Ok(sync)
    }
}

fn adopt_ring(
    value: &ServiceValue,
    snapshot: &Snapshot,
    rings: &mut RingAllocator,
) -> Result<AppliedRing, SyncError> {
    let region = RingRegion {
        start: value.region_start,
        table_size: value.table_size,
    };
    let active = if value.ring_offset == region.half_offset(0) {
        0
    } else if value.ring_offset == region.half_offset(1) {
        1
    } else {
        return Err(corrupt(format!(
            "service {} points at ring slot {} outside its region at {}",
            value.id, value.ring_offset, value.region_start
        )));
    };
    rings.reserve(region)?;
    let slots = snapshot
        .regions
        .get(&region.start)
        .ok_or_else(|| corrupt(format!("the ring region at {} was not read", region.start)))?;
    let size = region.table_size as usize;
    let half = |h: usize| slots.get(h * size..(h + 1) * size).map(<[u32]>::to_vec);
    Ok(AppliedRing {
        region,
        halves: [half(0), half(1)],
        active,
    })
}

/// Pinned backends to ids: each desired backend takes the pinned id of its address (in id
/// order when pools share an address: they send to the same place either way). Pinned
/// backends nobody wants are kept under a placeholder pool, so `apply` retires them only after
/// no table points at them.
fn adopt_backends(
    pinned: &[(u32, BackendValue)],
    desired: &DesiredState,
    max: u32,
) -> Result<BackendIds, SyncError> {
    let mut ids = BackendIds::new(max);
    let mut by_address: BTreeMap<SocketAddr, Vec<(u32, u32)>> = BTreeMap::new();
    for (id, value) in pinned {
        if value.flags & BACKEND_ACTIVE == 0 {
            ids.remember_generation(*id, value.generation)?;
            continue;
        }
        let Some(ip) = lb_common::addr::from_wire(&value.addr, value.family) else {
            return Err(corrupt(format!(
                "backend {id} has address family {}",
                value.family
            )));
        };
        by_address
            .entry(SocketAddr::new(ip, u16::from_be(value.port)))
            .or_default()
            .push((*id, value.generation));
    }
    for list in by_address.values_mut() {
        list.sort_unstable();
        list.reverse();
    }
    for backend in desired_backends(desired) {
        if let Some((id, generation)) = by_address
            .get_mut(&backend.address)
            .and_then(|list| list.pop())
        {
            ids.reserve(&backend, id, generation)?;
        }
    }
    for (address, list) in by_address {
        for (id, generation) in list {
            let orphan = DesiredBackend {
                pool: format!("(pinned backend {id})"),
                address,
            };
            ids.reserve(&orphan, id, generation)?;
        }
    }
    Ok(ids)
}

impl IdPool {
    /// Marks `id` as taken (adopted from pinned maps).
    pub(super) fn reserve(&mut self, id: u32) -> Result<(), SyncError> {
        if id >= self.max {
            return Err(SyncError::TooMany { max: self.max });
        }
        while self.next <= id {
            self.free.push(self.next);
            self.next += 1;
        }
        self.free.retain(|free| *free != id);
        Ok(())
    }
}
