//! End to end through the real agent and XDP program: TCP connections and UDP datagrams from
//! a client namespace (many source ports) reach backend namespaces whose servers say who they
//! are. Every flow must land on exactly the backend the `lb-common` Maglev model predicts, for
//! DSR and NAT, IPv4 and IPv6; a backend added by a reload takes no established connection.

mod l4_e2e_support;

use std::collections::BTreeMap;

use l4_e2e_support::{Mode, Plan, Setup, V4, V6};
use sluice_tests::privileged;

const FLOWS: usize = 120;

fn spread_follows_model(plan: &'static Plan, mode: Mode) {
    let setup = Setup::new(plan, mode);
    let (tcp_model, udp_model) = (
        setup.model(plan.tcp_backend_port(mode)),
        setup.model(plan.udp_backend_port(mode)),
    );
    let (tcp_hits, udp_hits) = setup.client.in_ns(|| {
        setup.wait_for_first_tcp_flow();
        let mut tcp_hits: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..FLOWS {
            let conn = setup.tcp_connect();
            assert_eq!(
                conn.served_by,
                tcp_model.predict(conn.local, setup.tcp_vip(), 6),
                "TCP flow {}",
                conn.local
            );
            *tcp_hits.entry(conn.served_by).or_default() += 1;
        }
        let mut udp_hits: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..FLOWS {
            let (local, served_by) = setup.udp_exchange();
            assert_eq!(
                served_by,
                udp_model.predict(local, setup.udp_vip(), 17),
                "UDP flow {local}"
            );
            *udp_hits.entry(served_by).or_default() += 1;
        }
        (tcp_hits, udp_hits)
    });
    for hits in [&tcp_hits, &udp_hits] {
        assert_eq!(
            hits.len(),
            setup.active_backends(),
            "every backend got flows: {hits:?}"
        );
        // Weight 2 of 4: about half the flows.
        let heavy = hits.get(plan.backends[2]).copied().unwrap_or(0);
        assert!(
            (FLOWS * 3 / 10..=FLOWS * 7 / 10).contains(&heavy),
            "weights followed: {hits:?}"
        );
    }
    setup.stop();
}

#[test]
fn dsr_ipv4_tcp_and_udp_follow_the_maglev_model() {
    if !privileged() {
        return;
    }
    spread_follows_model(&V4, Mode::Dsr);
}

#[test]
fn dsr_ipv6_tcp_and_udp_follow_the_maglev_model() {
    if !privileged() {
        return;
    }
    spread_follows_model(&V6, Mode::Dsr);
}

#[test]
fn nat_ipv4_translates_both_ways_and_follows_the_maglev_model() {
    if !privileged() {
        return;
    }
    spread_follows_model(&V4, Mode::Nat);
}

#[test]
fn nat_ipv6_translates_both_ways_and_follows_the_maglev_model() {
    if !privileged() {
        return;
    }
    spread_follows_model(&V6, Mode::Nat);
}

/// Established connections are held open across a reload that adds a backend: each must
/// still be answered by the backend it started on (a moved connection would be reset by a
/// backend that never saw it), while new flows follow the new table.
fn added_backend_takes_no_established_connection(mode: Mode) {
    let plan = &V4;
    let mut setup = Setup::with_backends(plan, mode, 3);
    let mut open = setup.client.in_ns(|| {
        setup.wait_for_first_tcp_flow();
        (0..40).map(|_| setup.tcp_connect()).collect::<Vec<_>>()
    });
    setup.add_backend_and_reload();
    let new_model = setup.model(plan.tcp_backend_port(mode));
    setup.client.in_ns(|| {
        for conn in &mut open {
            let now = conn.ask().unwrap_or_else(|e| {
                panic!(
                    "established flow from {} broke after the reload: {e}",
                    conn.local
                )
            });
            assert_eq!(now, conn.served_by, "established flow {} moved", conn.local);
        }
        let mut to_new = 0;
        for _ in 0..FLOWS {
            let conn = setup.tcp_connect();
            assert_eq!(
                conn.served_by,
                new_model.predict(conn.local, setup.tcp_vip(), 6),
                "new flow {} after reload",
                conn.local
            );
            to_new += usize::from(conn.served_by == plan.backends[3]);
        }
        assert!(to_new > 0, "the added backend takes new flows");
    });
    drop(open);
    setup.stop();
}

#[test]
fn dsr_backend_added_by_reload_takes_no_established_connection() {
    if !privileged() {
        return;
    }
    added_backend_takes_no_established_connection(Mode::Dsr);
}

#[test]
fn nat_backend_added_by_reload_takes_no_established_connection() {
    if !privileged() {
        return;
    }
    added_backend_takes_no_established_connection(Mode::Nat);
}

#[test]
fn invalid_config_on_sighup_is_rejected_and_traffic_keeps_flowing() {
    if !privileged() {
        return;
    }
    let setup = Setup::new(&V4, Mode::Dsr);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    setup.reload_with("this is [not valid toml");
    let log = setup.agent_log();
    assert!(log.contains("config rejected"), "log:\n{log}");
    setup.client.in_ns(|| {
        for _ in 0..10 {
            setup.tcp_connect();
        }
    });
    setup.stop();
}
