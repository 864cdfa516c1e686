//! An agent of this map schema starting where a data path of the previous schema (v1) runs
//! carries it over: long-lived TCP and UDP flows through NAT (which needs every connection
//! and reverse entry) keep their backends and lose no byte while the tables are converted and
//! the program is swapped in by an atomic link update, and the v1 pins are gone afterwards.
//!
//! The v1 data path is made from a running one: its maps of unchanged layout are moved to a
//! `v1` folder, its connection and NAT tables are rewritten into maps of v1's layout, and its
//! link is moved there too. The running program keeps its own (now unpinned) maps, so flows
//! go on while no agent runs.

mod l4_e2e_support;

use std::path::Path;

use aya::Pod;
use aya::maps::{HashMap, Map, MapData};
use l4_e2e_support::restart::{Flows, Stop};
use l4_e2e_support::{Mode, Plan, Setup, V4, V6};
use lb_common::addr::WireAddr;
use lb_common::flow::{FlowKey, FlowValue, NatValue};
use lb_common::maps;
use lb_common::schema::SCHEMA_VERSION;
use sluice_tests::{privileged, xdp_program};

const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Schema v1's connection-table value.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowValueV1 {
    backend_id: u32,
    backend_generation: u32,
}

/// Schema v1's NAT reverse value.
#[repr(C)]
#[derive(Clone, Copy)]
struct NatValueV1 {
    vip: WireAddr,
    vip_port: u16,
    client_mac: [u8; 6],
    local_mac: [u8; 6],
    _pad: [u8; 2],
    backend_id: u32,
    client_ifindex: u32,
}

// SAFETY: repr(C), integers only, explicit padding.
unsafe impl Pod for FlowValueV1 {}
// SAFETY: as above.
unsafe impl Pod for NatValueV1 {}

/// A v1-layout LRU map pinned at `path`, filled with `entries`.
fn pin_v1_map<V: Pod>(path: &Path, name: &str, max_entries: u32, entries: Vec<(FlowKey, V)>) {
    let value_size = u32::try_from(size_of::<V>()).unwrap_or(u32::MAX);
    let key_size = u32::try_from(size_of::<FlowKey>()).unwrap_or(u32::MAX);
    let obj = aya_obj::Map::new_from_params(
        BPF_MAP_TYPE_LRU_HASH,
        key_size,
        value_size,
        max_entries,
        BPF_F_NO_COMMON_LRU,
    );
    let data = MapData::create(obj, name, None).unwrap_or_else(|e| panic!("creating {name}: {e}"));
    data.pin(path)
        .unwrap_or_else(|e| panic!("pinning {}: {e}", path.display()));
    let mut map: HashMap<MapData, FlowKey, V> =
        HashMap::try_from(Map::LruHashMap(data)).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (key, value) in entries {
        map.insert(key, value, 0)
            .unwrap_or_else(|e| panic!("{name}[{key:?}]: {e}"));
    }
}

fn read<V: Pod>(path: &Path) -> (u32, Vec<(FlowKey, V)>) {
    let data = MapData::from_pin(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let max = data
        .info()
        .map(|i| i.max_entries())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: HashMap<MapData, FlowKey, V> = HashMap::try_from(Map::LruHashMap(data))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries = map
        .iter()
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect();
    (max, entries)
}

/// Turns the running data path's pins into those of a schema v1 data path.
fn make_it_v1(pin_dir: &Path) {
    let ours = pin_dir.join(format!("v{SCHEMA_VERSION}"));
    let v1 = pin_dir.join("v1");
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()))
    };
    std::fs::create_dir(&v1).unwrap_or_else(|e| panic!("{}: {e}", v1.display()));
    for name in [
        maps::SERVICES,
        maps::BACKENDS,
        maps::MAGLEV_RINGS,
        maps::SETTINGS,
        maps::GLOBAL_STATS,
        maps::SERVICE_STATS,
        maps::BACKEND_STATS,
    ] {
        rename(&ours.join(name), &v1.join(name));
    }
    let (max, flows) = read::<FlowValue>(&ours.join(maps::CONNTRACK));
    assert!(!flows.is_empty(), "the running data path tracks the flows");
    let flows = flows
        .into_iter()
        .map(|(key, v)| {
            let old = FlowValueV1 {
                backend_id: v.backend_id,
                backend_generation: v.backend_generation,
            };
            (key, old)
        })
        .collect();
    pin_v1_map(&v1.join(maps::CONNTRACK), maps::CONNTRACK, max, flows);
    let (max, nat) = read::<NatValue>(&ours.join(maps::NAT_REVERSE));
    assert!(!nat.is_empty(), "NAT flows have reverse entries");
    let nat = nat
        .into_iter()
        .map(|(key, v)| {
            assert_eq!(key.dst_port, v.client_port, "no port was translated");
            let old = NatValueV1 {
                vip: v.vip,
                vip_port: v.vip_port,
                client_mac: v.client_mac,
                local_mac: v.local_mac,
                _pad: [0; 2],
                backend_id: v.backend_id,
                client_ifindex: v.client_ifindex,
            };
            (key, old)
        })
        .collect();
    pin_v1_map(&v1.join(maps::NAT_REVERSE), maps::NAT_REVERSE, max, nat);
    rename(&ours.join("link_eth0"), &v1.join("link_eth0"));
    for file in std::fs::read_dir(&ours).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(file.path());
    }
    std::fs::remove_dir(&ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display()));
}

fn carried_over_from_v1(plan: &'static Plan) {
    let mut setup = Setup::new(plan, Mode::Nat);
    let flows = Flows::start(&setup, 4, 4);
    flows.wait_for_progress("before the handover");
    let before = xdp_program(setup.lb(), "eth0").map(|(id, _)| id);
    let mut pin_dir = None;
    setup.restart_after(Stop::Term, &flows, &[], |dir| {
        make_it_v1(dir);
        pin_dir = Some(dir.to_path_buf());
    });
    let log = setup.agent_log();
    assert!(
        log.contains("a data path of map schema v1 runs") && log.contains("carrying it over"),
        "the agent said what it does; log:\n{log}"
    );
    assert!(
        log.contains("swapped this agent's XDP program in"),
        "and swapped its program in; log:\n{log}"
    );
    assert_ne!(
        xdp_program(setup.lb(), "eth0").map(|(id, _)| id),
        before,
        "another program runs on eth0"
    );
    let pin_dir = pin_dir.unwrap_or_else(|| panic!("no pin directory"));
    sluice_tests::eventually(std::time::Duration::from_secs(10), || {
        if pin_dir.join("v1").exists() {
            Err(format!("{} is still there", pin_dir.join("v1").display()))
        } else {
            Ok(())
        }
    });
    let ours = pin_dir.join(format!("v{SCHEMA_VERSION}"));
    assert!(ours.join("link_eth0").exists() && ours.join(maps::CONNTRACK).exists());
    flows.wait_for_progress("after the handover");
    let reports = flows.finish();
    let broken: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "NAT {}: {} of {} flows kept across the v1 -> v{SCHEMA_VERSION} handover",
        plan.vip,
        reports.len() - broken.len(),
        reports.len()
    );
    assert!(broken.is_empty(), "flows broke: {broken:#?}");
    setup.stop();
}

#[test]
fn nat_ipv4_flows_survive_a_schema_v1_data_path_being_carried_over() {
    if !privileged() {
        return;
    }
    carried_over_from_v1(&V4);
}

#[test]
fn nat_ipv6_flows_survive_a_schema_v1_data_path_being_carried_over() {
    if !privileged() {
        return;
    }
    carried_over_from_v1(&V6);
}
