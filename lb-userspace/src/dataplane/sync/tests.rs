//! The diff logic against an in-memory fake of the maps, which also plays the data path's
//! part: after every single write it checks that each service points at a complete table of
//! live backends, so a half-written table would be caught.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::service::{SERVICE_L7, SERVICE_NAT, ServiceKey, ServiceValue};

use super::{MapSync, MapWriter, SyncError};
use crate::balancer::{
    DesiredBackend, DesiredL4, DesiredService, DesiredState, ServiceMode, desired::maglev_table,
};

pub(super) const M: u32 = 251;

#[derive(Default)]
pub(super) struct FakeMaps {
    pub(super) backends: HashMap<u32, BackendValue>,
    pub(super) ring: HashMap<u32, u32>,
    pub(super) services: BTreeMap<ServiceKey, ServiceValue>,
    pub(super) flags: u32,
    pub(super) ring_writes: usize,
    pub(super) service_writes: usize,
}

impl FakeMaps {
    /// What the data path would see now: every L4 service with a table points at slots that
    /// all hold active backends.
    fn assert_consistent(&self) {
        for (key, service) in &self.services {
            if service.flags & SERVICE_L7 != 0 || service.table_size == 0 {
                continue;
            }
            for slot in 0..service.table_size {
                let id = self.ring.get(&(service.ring_offset + slot));
                let backend = id.and_then(|id| self.backends.get(id));
                assert!(
                    backend.is_some_and(|b| b.flags & BACKEND_ACTIVE != 0),
                    "service {key:?} slot {slot} -> {id:?}: not an active backend"
                );
            }
        }
    }

    /// The backend address a service's slot sends new flows to.
    pub(super) fn slot_owner(&self, key: &ServiceKey, slot: u32) -> Option<SocketAddr> {
        let service = self.services.get(key)?;
        let id = self.ring.get(&(service.ring_offset + slot))?;
        let b = self.backends.get(id)?;
        let ip = lb_common::addr::from_wire(&b.addr, b.family)?;
        Some(SocketAddr::new(ip, u16::from_be(b.port)))
    }
}

impl MapWriter for FakeMaps {
    fn set_backend(&mut self, id: u32, value: &BackendValue) -> Result<(), SyncError> {
        self.backends.insert(id, *value);
        self.assert_consistent();
        Ok(())
    }
    fn set_ring_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), SyncError> {
        for (index, id) in slots {
            self.ring.insert(*index, *id);
            self.ring_writes += 1;
            self.assert_consistent();
        }
        Ok(())
    }
    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), SyncError> {
        self.services.insert(*key, *value);
        self.service_writes += 1;
        self.assert_consistent();
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), SyncError> {
        self.services.remove(key);
        self.assert_consistent();
        Ok(())
    }
    fn set_settings_flags(&mut self, flags: u32) -> Result<(), SyncError> {
        self.flags = flags;
        Ok(())
    }
}

pub(super) fn key(last_octet: u8, port: u16) -> ServiceKey {
    let (addr, family) = lb_common::addr::to_wire(
        format!("192.0.2.{last_octet}")
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    ServiceKey {
        addr,
        port: port.to_be(),
        protocol: lb_common::addr::PROTO_TCP,
        family,
    }
}

pub(super) fn backend(pool: &str, n: u8) -> DesiredBackend {
    DesiredBackend {
        pool: pool.into(),
        address: SocketAddr::new(
            format!("10.0.0.{n}")
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            80,
        ),
    }
}

pub(super) fn l4_service(
    k: ServiceKey,
    mode: ServiceMode,
    backends: Vec<DesiredBackend>,
) -> DesiredService {
    let weights = vec![1; backends.len()];
    let table = maglev_table(&backends, &weights, M, 0).unwrap_or_else(|e| panic!("{e}"));
    DesiredService {
        name: format!("svc-{}", u16::from_be(k.port)),
        key: k,
        l4: Some(DesiredL4 {
            mode,
            refuse_when_empty: false,
            hash_seed: 0,
            table_size: M,
            backends,
            table,
        }),
    }
}

pub(super) fn state(services: Vec<DesiredService>) -> DesiredState {
    DesiredState {
        services: services.into_iter().map(|s| (s.key, s)).collect(),
    }
}

pub(super) fn apply(
    sync: &mut MapSync,
    maps: &mut FakeMaps,
    desired: &DesiredState,
) -> super::SyncReport {
    sync.apply(desired, maps).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn first_apply_writes_whole_tables_and_flags_nat() {
    let mut sync = MapSync::new(4 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let (a, b) = (key(1, 80), key(2, 53));
    let desired = state(vec![
        l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 1), backend("web", 2)],
        ),
        l4_service(b, ServiceMode::Nat, vec![backend("dns", 3)]),
    ]);
    let report = apply(&mut sync, &mut maps, &desired);
    assert_eq!(report.services_added, 2);
    assert_eq!(report.backends_added, 3);
    assert_eq!(report.ring_slots_written, 2 * M as usize);
    assert_eq!(maps.flags, lb_common::limits::SETTING_FLAG_NAT);
    assert_eq!(maps.services[&b].flags & SERVICE_NAT, SERVICE_NAT);
    for slot in 0..M {
        assert_eq!(maps.slot_owner(&b, slot), Some(backend("dns", 3).address));
    }
}

#[test]
fn unchanged_config_writes_nothing() {
    let mut sync = MapSync::new(4 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let desired = state(vec![l4_service(
        key(1, 80),
        ServiceMode::Dsr,
        vec![backend("web", 1)],
    )]);
    apply(&mut sync, &mut maps, &desired);
    let (rings, services) = (maps.ring_writes, maps.service_writes);
    let report = apply(&mut sync, &mut maps, &desired);
    assert_eq!(report, super::SyncReport::default());
    assert_eq!((maps.ring_writes, maps.service_writes), (rings, services));
}

#[test]
fn adding_a_backend_writes_only_changed_slots_and_leaves_other_services_alone() {
    let mut sync = MapSync::new(4 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let (a, b) = (key(1, 80), key(2, 80));
    let web = vec![backend("web", 1), backend("web", 2)];
    let other = l4_service(b, ServiceMode::Dsr, vec![backend("other", 9)]);
    apply(
        &mut sync,
        &mut maps,
        &state(vec![
            l4_service(a, ServiceMode::Dsr, web.clone()),
            other.clone(),
        ]),
    );
    let other_before = maps.services[&b];
    let before: Vec<_> = (0..M).map(|s| maps.slot_owner(&a, s)).collect();

    let mut more = web.clone();
    more.push(backend("web", 3));
    let report = apply(
        &mut sync,
        &mut maps,
        &state(vec![l4_service(a, ServiceMode::Dsr, more), other]),
    );
    assert_eq!(report.services_changed, 1);
    assert_eq!(report.backends_added, 1);
    assert_eq!(
        maps.services[&b], other_before,
        "untouched service keeps its table"
    );
    // First write of the second half is whole; the next change writes only differences.
    assert_eq!(report.ring_slots_written, M as usize);
    let after: Vec<_> = (0..M).map(|s| maps.slot_owner(&a, s)).collect();
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert!(moved > 0 && moved < M as usize / 2, "{moved} slots moved");

    // Back to two backends: the first half is rewritten only where it differs.
    let report = apply(
        &mut sync,
        &mut maps,
        &state(vec![l4_service(a, ServiceMode::Dsr, web)]),
    );
    assert_eq!(
        report.ring_slots_written, 0,
        "half 0 already holds the two-backend table"
    );
    assert_eq!(report.services_removed, 1);
    let restored: Vec<_> = (0..M).map(|s| maps.slot_owner(&a, s)).collect();
    assert_eq!(restored, before);
}

#[test]
fn removed_backend_is_deactivated_after_the_flip_and_its_id_reused_with_a_new_generation() {
    let mut sync = MapSync::new(4 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let a = key(1, 80);
    apply(
        &mut sync,
        &mut maps,
        &state(vec![l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 1), backend("web", 2)],
        )]),
    );
    let gone = sync
        .backend_id(&backend("web", 2))
        .unwrap_or_else(|| panic!("allocated"));
    let gen_before = maps.backends[&gone].generation;

    let report = apply(
        &mut sync,
        &mut maps,
        &state(vec![l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 1)],
        )]),
    );
    assert_eq!(report.backends_removed, 1);
    assert_eq!(maps.backends[&gone].flags & BACKEND_ACTIVE, 0);
    assert_eq!(sync.backend_id(&backend("web", 2)), None);

    apply(
        &mut sync,
        &mut maps,
        &state(vec![l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 1), backend("web", 7)],
        )]),
    );
    let reused = sync
        .backend_id(&backend("web", 7))
        .unwrap_or_else(|| panic!("allocated"));
    assert_eq!(reused, gone, "freed id is reused");
    assert_ne!(
        maps.backends[&reused].generation, gen_before,
        "with a new generation"
    );
}

#[test]
fn l7_services_are_marked_and_table_size_changes_move_the_region() {
    let mut sync = MapSync::new(6 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let (a, web) = (key(1, 443), key(2, 80));
    let l7 = DesiredService {
        name: "web".into(),
        key: web,
        l4: None,
    };
    let mut svc = l4_service(a, ServiceMode::Nat, vec![backend("p", 1)]);
    apply(&mut sync, &mut maps, &state(vec![svc.clone(), l7.clone()]));
    assert_eq!(maps.services[&web].flags, SERVICE_L7);
    let offset = maps.services[&a].ring_offset;

    if let Some(l4) = svc.l4.as_mut() {
        l4.table_size = 257;
        l4.table = maglev_table(&l4.backends, &[1], 257, 0).unwrap_or_else(|e| panic!("{e}"));
    }
    apply(&mut sync, &mut maps, &state(vec![svc, l7]));
    assert_eq!(maps.services[&a].table_size, 257);
    assert_ne!(maps.services[&a].ring_offset, offset);
    assert_eq!(maps.flags, lb_common::limits::SETTING_FLAG_NAT);
}

#[test]
fn a_config_too_big_for_the_ring_map_is_an_error() {
    let mut sync = MapSync::new(M, 16, 64);
    let mut maps = FakeMaps::default();
    let err = sync.apply(
        &state(vec![l4_service(
            key(1, 80),
            ServiceMode::Dsr,
            vec![backend("p", 1)],
        )]),
        &mut maps,
    );
    assert!(matches!(err, Err(SyncError::RingsFull { .. })), "{err:?}");
}
