//! Adopting pinned maps: a new agent rebuilds the applied state from what the maps hold, so
//! its first apply of the same config writes no table slot and moves no backend id.

use lb_common::backend::BACKEND_ACTIVE;

use super::tests::{FakeMaps, M, apply, backend, key, l4_service, state};
use super::{MapSync, Snapshot};
use crate::balancer::{DesiredState, ServiceMode};

/// What a restarted agent would read from the maps `maps` stands for.
fn snapshot(maps: &FakeMaps) -> Snapshot {
    let services: Vec<_> = maps.services.iter().map(|(k, v)| (*k, *v)).collect();
    let mut backends: Vec<_> = maps
        .backends
        .iter()
        .filter(|(_, b)| b.generation != 0)
        .map(|(id, b)| (*id, *b))
        .collect();
    backends.sort_by_key(|(id, _)| *id);
    let regions = Snapshot::regions_to_read(&services)
        .into_iter()
        .map(|(start, len)| {
            // The fake holds no value for a slot never written (the kernel would hold 0):
            // read it as an id no backend has, so a diff against it writes the slot.
            let slots = (start..start + len)
                .map(|i| maps.ring.get(&i).copied().unwrap_or(u32::MAX))
                .collect();
            (start, slots)
        })
        .collect();
    Snapshot {
        services,
        backends,
        regions,
    }
}

fn adopt(maps: &FakeMaps, desired: &DesiredState) -> MapSync {
    MapSync::adopt(&snapshot(maps), desired, 8 * M, 16, 64).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn adopting_the_same_config_writes_no_slot_and_keeps_every_id() {
    let mut first = MapSync::new(8 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let (a, b) = (key(1, 80), key(2, 53));
    // A history: ids handed out, one freed and reused, so they are not in address order.
    let before = state(vec![
        l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 1), backend("web", 2)],
        ),
        l4_service(b, ServiceMode::Nat, vec![backend("dns", 3)]),
    ]);
    apply(&mut first, &mut maps, &before);
    let now = state(vec![
        l4_service(
            a,
            ServiceMode::Dsr,
            vec![backend("web", 2), backend("web", 4)],
        ),
        l4_service(
            b,
            ServiceMode::Nat,
            vec![backend("dns", 3), backend("dns", 1)],
        ),
    ]);
    apply(&mut first, &mut maps, &now);
    let backends_before = maps.backends.clone();
    let owners: Vec<_> = (0..M).map(|s| maps.slot_owner(&a, s)).collect();

    let mut second = adopt(&maps, &now);
    let report = apply(&mut second, &mut maps, &now);
    assert_eq!(report.ring_slots_written, 0, "{report:?}");
    assert_eq!((report.backends_added, report.backends_removed), (0, 0));
    assert_eq!(
        maps.backends, backends_before,
        "no backend id or generation moved"
    );
    for service in now.services.values() {
        for b in &service
            .l4
            .as_ref()
            .map(|l| l.backends.clone())
            .unwrap_or_default()
        {
            assert_eq!(second.backend_id(b), first.backend_id(b), "{b:?}");
        }
        assert_eq!(
            second.service_id(&service.key),
            first.service_id(&service.key)
        );
    }
    let after: Vec<_> = (0..M).map(|s| maps.slot_owner(&a, s)).collect();
    assert_eq!(after, owners, "new flows go where they went");
    // And from there on, the adopted state behaves as the original: no change, no write.
    let (rings, services) = (maps.ring_writes, maps.service_writes);
    assert_eq!(
        apply(&mut second, &mut maps, &now),
        super::SyncReport::default()
    );
    assert_eq!((maps.ring_writes, maps.service_writes), (rings, services));
}

#[test]
fn adopting_a_changed_config_makes_the_same_diff_a_reload_makes() {
    let (a, b) = (key(1, 80), key(2, 80));
    let history = [
        state(vec![
            l4_service(
                a,
                ServiceMode::Dsr,
                vec![backend("web", 1), backend("web", 2)],
            ),
            l4_service(b, ServiceMode::Dsr, vec![backend("other", 9)]),
        ]),
        state(vec![
            l4_service(
                a,
                ServiceMode::Dsr,
                vec![backend("web", 1), backend("web", 2)],
            ),
            l4_service(b, ServiceMode::Dsr, vec![backend("other", 8)]),
        ]),
    ];
    let run_history = || {
        let mut sync = MapSync::new(8 * M, 16, 64);
        let mut maps = FakeMaps::default();
        for desired in &history {
            apply(&mut sync, &mut maps, desired);
        }
        (sync, maps)
    };
    // The next config drops service b and backend web/1 and adds web/3. The fake checks
    // after every write that each table holds only active backends.
    let now = state(vec![l4_service(
        a,
        ServiceMode::Dsr,
        vec![backend("web", 2), backend("web", 3)],
    )]);
    let (mut reloaded, mut reload_maps) = run_history();
    let reload = apply(&mut reloaded, &mut reload_maps, &now);

    let (first, mut maps) = run_history();
    let removed_id = first
        .backend_id(&backend("web", 1))
        .unwrap_or_else(|| panic!("applied"));
    let mut adopted = adopt(&maps, &now);
    let report = apply(&mut adopted, &mut maps, &now);
    assert_eq!(
        report.ring_slots_written, reload.ring_slots_written,
        "{report:?}"
    );
    assert_eq!(report.services_removed, 1);
    assert_eq!(report.backends_added, 1);
    assert_eq!(report.backends_removed, 2, "web/1 and other/8: {report:?}");
    assert!(!maps.services.contains_key(&b));
    assert_eq!(maps.backends[&removed_id].flags & BACKEND_ACTIVE, 0);
    let owners = |m: &FakeMaps| (0..M).map(|s| m.slot_owner(&a, s)).collect::<Vec<_>>();
    assert_eq!(
        owners(&maps),
        owners(&reload_maps),
        "the same table is in force"
    );
    // An id given out again gets a later generation than the pinned one.
    let old_generation = maps.backends[&removed_id].generation;
    let more = state(vec![l4_service(
        a,
        ServiceMode::Dsr,
        vec![backend("web", 2), backend("web", 3), backend("web", 5)],
    )]);
    apply(&mut adopted, &mut maps, &more);
    let reused = adopted
        .backend_id(&backend("web", 5))
        .unwrap_or_else(|| panic!("applied"));
    if reused == removed_id {
        assert!(maps.backends[&reused].generation > old_generation);
    }
}

#[test]
fn a_service_pointing_outside_its_region_is_refused() {
    let mut sync = MapSync::new(8 * M, 16, 64);
    let mut maps = FakeMaps::default();
    let a = key(1, 80);
    let desired = state(vec![l4_service(
        a,
        ServiceMode::Dsr,
        vec![backend("web", 1)],
    )]);
    apply(&mut sync, &mut maps, &desired);
    if let Some(value) = maps.services.get_mut(&a) {
        value.ring_offset += 1;
    }
    let result = MapSync::adopt(&snapshot(&maps), &desired, 8 * M, 16, 64);
    assert!(
        matches!(result, Err(super::SyncError::Adopt { .. })),
        "{result:?}"
    );
}
