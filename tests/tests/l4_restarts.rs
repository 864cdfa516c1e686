//! The L4 data path outlives the agent: long-lived TCP and UDP flows (DSR and NAT, IPv4 and
//! IPv6) carry data continuously through 20 restarts by SIGTERM, 20 by SIGKILL and 5 upgrades
//! to another program (lb-ebpf's test-only `upgrade-test` build, each followed by a return to
//! the default one), with the program forwarding on its own in between, and lose nothing: no
//! reset, no lost or duplicated byte, no flow moved to another backend. Afterwards
//! `sluice detach` leaves no program and no pin behind.

mod l4_e2e_support;

use l4_e2e_support::restart::{Flows, Stop};
use l4_e2e_support::{Mode, Plan, Setup, V4, V6};
use sluice_tests::{privileged, upgrade_object, xdp_program};

const RESTARTS: usize = 20;
const UPGRADES: usize = 5;
const TCP_FLOWS: usize = 6;
const UDP_FLOWS: usize = 6;

fn flows_survive_restarts(plan: &'static Plan, mode: Mode) {
    // Built before the flows start: the build takes a while.
    let upgrade = upgrade_object();
    let mut setup = Setup::new(plan, mode);
    let flows = Flows::start(&setup, TCP_FLOWS, UDP_FLOWS);
    flows.wait_for_progress("before any restart");
    let mut restarts = 0;
    for how in [Stop::Term, Stop::Kill] {
        for _ in 0..RESTARTS {
            setup.restart(how, &flows, &[]);
            restarts += 1;
            let log = setup.agent_log();
            assert!(
                log.contains("adopted the pinned maps")
                    && log.contains("kept the running XDP program"),
                "the agent adopted the data path and kept its program; log:\n{log}"
            );
        }
    }
    let program = |setup: &Setup| xdp_program(setup.lb(), "eth0").map(|(id, _)| id);
    for _ in 0..UPGRADES {
        for env in [vec![("SLUICE_XDP_OBJECT", upgrade.as_os_str())], vec![]] {
            let before = program(&setup);
            setup.restart(Stop::Term, &flows, &env);
            restarts += 1;
            let log = setup.agent_log();
            assert!(
                log.contains("swapped this agent's XDP program in"),
                "the new program was swapped in; log:\n{log}"
            );
            assert_ne!(program(&setup), before, "another program runs on eth0");
        }
    }
    let reports = flows.finish();
    let kept: Vec<_> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let broken: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "{mode:?} {}: {} of {} flows kept across {restarts} restarts ({} exchanges)",
        plan.vip,
        kept.len(),
        reports.len(),
        kept.iter().map(|r| r.exchanges).sum::<u64>()
    );
    assert!(broken.is_empty(), "flows broke: {broken:#?}");
    // New flows still follow the model after all the restarts.
    let model = setup.model(plan.tcp_backend_port(mode));
    setup.client.in_ns(|| {
        for _ in 0..20 {
            let conn = setup.tcp_connect();
            assert_eq!(
                conn.served_by,
                model.predict(conn.local, setup.tcp_vip(), 6),
                "new TCP flow {}",
                conn.local
            );
        }
    });
    setup.stop();
}

#[test]
fn dsr_ipv4_flows_survive_restarts_crashes_and_upgrades() {
    if !privileged() {
        return;
    }
    flows_survive_restarts(&V4, Mode::Dsr);
}

#[test]
fn dsr_ipv6_flows_survive_restarts_crashes_and_upgrades() {
    if !privileged() {
        return;
    }
    flows_survive_restarts(&V6, Mode::Dsr);
}

#[test]
fn nat_ipv4_flows_survive_restarts_crashes_and_upgrades() {
    if !privileged() {
        return;
    }
    flows_survive_restarts(&V4, Mode::Nat);
}

#[test]
fn nat_ipv6_flows_survive_restarts_crashes_and_upgrades() {
    if !privileged() {
        return;
    }
    flows_survive_restarts(&V6, Mode::Nat);
}
