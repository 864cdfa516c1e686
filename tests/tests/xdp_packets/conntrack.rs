//! Connection tracking: an established flow keeps its backend when the ring changes, and is
//! re-steered by Maglev once its backend is removed or its id handed to another backend.

use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::conntrack::TCP_SYN;
use lb_common::service::{SERVICE_DSR, SERVICE_NAT};
use lb_common::stats::Reason::{
    self, FlowEstablished, FlowNew, FlowResteered, ForwardDsr, ForwardNat, ForwardNatReply,
    PassNoService,
};

use crate::frames::{Frame, L4, sock};
use crate::lab::{
    BACKENDS, CLIENT_MAC, Dataplane, ETH0_MAC, Family, Lab, XDP_PASS, XDP_TX, backend_ip,
    backend_mac, backend_value, client_ip, service, vip,
};

const BACKEND_PORT: u16 = 8080;

/// Sends `frame` and returns the index of the backend it went to and the counters it moved.
fn steer(dp: &Dataplane, frame: &Frame, nat: bool) -> (usize, Vec<Reason>) {
    let out = dp.run_counted(&frame.bytes());
    assert_eq!(out.action, XDP_TX, "{frame:?} must be forwarded");
    let backend = (0..BACKENDS)
        .find(|&i| out.frame[..6] == backend_mac(i))
        .unwrap_or_else(|| panic!("{frame:?} went to no backend's MAC: {:x?}", &out.frame[..6]));
    let family = if frame.dst.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let mut expected = Frame {
        src_mac: ETH0_MAC,
        dst_mac: backend_mac(backend),
        ..frame.clone()
    };
    if nat {
        expected.dst = sock(backend_ip(backend, family), BACKEND_PORT);
        expected.ttl -= 1;
    }
    assert_eq!(
        out.frame,
        expected.bytes(),
        "{frame:?} to backend {backend}"
    );
    (backend, out.reasons)
}

fn established_flows_keep_their_backend(family: Family, flags: u32) {
    if !sluice_tests::privileged() {
        return;
    }
    let nat = flags == SERVICE_NAT;
    let forward = if nat { ForwardNat } else { ForwardDsr };
    let vip = sock(vip(family), 80);
    let a = Frame::new(L4::Tcp, sock(client_ip(family), 1111), vip);
    let b = Frame::new(L4::Tcp, sock(client_ip(family), 2222), vip);
    let backend = |i: usize| backend_value(sock(backend_ip(i, family), BACKEND_PORT));
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        // Backend id i + 1 is backend i.
        for i in 0..4 {
            dp.set_backend(i as u32 + 1, backend(i));
        }
        dp.set_service(vip, L4::Tcp, service(flags, 0, 7));
        dp.set_ring(0, &[1; 7]);
        assert_eq!(
            steer(dp, &a, nat),
            (0, vec![forward, FlowNew]),
            "new flow a"
        );

        dp.set_ring(0, &[2; 7]);
        let established = (0, vec![forward, FlowEstablished]);
        assert_eq!(steer(dp, &a, nat), established, "a, after the ring changed");
        assert_eq!(
            steer(dp, &b, nat),
            (1, vec![forward, FlowNew]),
            "new flow b"
        );

        // Backend 0 removed: a follows the ring.
        let mut removed = backend(0);
        removed.flags &= !BACKEND_ACTIVE;
        dp.set_backend(1, removed);
        let resteered = (1, vec![forward, FlowResteered]);
        assert_eq!(steer(dp, &a, nat), resteered, "a, its backend removed");
        assert_eq!(
            steer(dp, &a, nat),
            (1, vec![forward, FlowEstablished]),
            "a, again"
        );

        // Id 2 handed to another backend (generation bumped): both flows leave it.
        dp.set_ring(0, &[3; 7]);
        dp.set_backend(
            2,
            BackendValue {
                generation: 2,
                ..backend(3)
            },
        );
        let resteered = (2, vec![forward, FlowResteered]);
        assert_eq!(steer(dp, &a, nat), resteered, "a, its id reused");
        assert_eq!(steer(dp, &b, nat), resteered, "b, its id reused");

        if nat {
            // The re-steered flow got a reverse entry for its new backend.
            let backend = sock(backend_ip(2, family), BACKEND_PORT);
            let mut reply = Frame::new(L4::Tcp, backend, a.src);
            reply.src_mac = backend_mac(2);
            let out = dp.run_counted(&reply.bytes());
            assert_eq!((out.action, out.reasons), (XDP_TX, vec![ForwardNatReply]));
            let expected = Frame {
                src_mac: ETH0_MAC,
                dst_mac: CLIENT_MAC,
                src: vip,
                ttl: 63,
                ..reply.clone()
            };
            assert_eq!(out.frame, expected.bytes(), "reply after re-steering");
            // Without the NAT setting, replies are not looked up.
            dp.set_flags(0);
            let out = dp.run_counted(&reply.bytes());
            assert_eq!((out.action, out.reasons), (XDP_PASS, vec![PassNoService]));
            assert_eq!(out.frame, reply.bytes(), "passed untouched");
        }
    });
}

#[test]
fn conntrack_nat_ipv4() {
    established_flows_keep_their_backend(Family::V4, SERVICE_NAT);
}

#[test]
fn conntrack_dsr_ipv6() {
    established_flows_keep_their_backend(Family::V6, SERVICE_DSR);
}

/// A NAT flow whose first packet was passed up after Maglev placed it (the backend's MAC not
/// resolved yet, or TTL 1) must still get its replies translated once later packets are
/// forwarded: the reply is what the client's connection depends on.
#[test]
fn nat_reply_translated_after_first_packet_was_passed_up() {
    if !sluice_tests::privileged() {
        return;
    }
    let lab = Lab::new("xdp");
    let vip = sock(vip(Family::V4), 80);
    // Index BACKENDS has no neighbour entry until the test adds one.
    let (unresolved, mac) = (backend_ip(BACKENDS, Family::V4), backend_mac(BACKENDS));
    let backend = sock(unresolved, BACKEND_PORT);
    lab.run(|dp| {
        dp.enable_nat();
        dp.single_backend_service(vip, L4::Tcp, SERVICE_NAT, 1, backend);
        let no_neigh = Frame::new(L4::Tcp, sock(client_ip(Family::V4), 3333), vip);
        let out = dp.run_counted(&no_neigh.bytes());
        let first = (out.action, out.reasons);
        assert_eq!(first, (XDP_PASS, vec![Reason::PassNoNeighbour, FlowNew]));
        // The stack resolves the backend's MAC; the flows' next packets are forwarded.
        let mac_text = sluice_tests::format_mac(mac);
        let neigh = format!("neigh add {unresolved} lladdr {mac_text} dev eth0 nud permanent");
        lab.ns().ip(neigh.split(' '));
        let ttl1 = Frame {
            ttl: 1,
            ..Frame::new(L4::Tcp, sock(client_ip(Family::V4), 4444), vip)
        };
        let out = dp.run_counted(&ttl1.bytes());
        let first = (out.action, out.reasons);
        assert_eq!(first, (XDP_PASS, vec![Reason::PassTtlExpired, FlowNew]));

        let mut failures = Vec::new();
        for (what, first) in [("MAC unresolved", no_neigh), ("TTL 1", ttl1)] {
            let input = Frame { ttl: 64, ..first };
            let out = dp.run_counted(&input.bytes());
            // The passed-up packet left no entry: this one is the flow's first forwarded packet.
            assert_eq!(
                (out.action, out.reasons),
                (XDP_TX, vec![ForwardNat, FlowNew]),
                "{what}"
            );
            let again = dp.run_counted(&input.bytes());
            assert_eq!(
                (again.action, again.reasons),
                (XDP_TX, vec![ForwardNat, FlowEstablished]),
                "{what}"
            );
            let mut reply = Frame::new(L4::Tcp, backend, input.src);
            reply.src_mac = mac;
            let out = dp.run_counted(&reply.bytes());
            if (out.action, &out.reasons) != (XDP_TX, &vec![ForwardNatReply]) {
                failures.push(format!(
                    "first packet passed up ({what}): the backend's reply {} -> {} got verdict \
                     {} counted {:?}, want XDP_TX counted [ForwardNatReply] with source {vip}",
                    reply.src, reply.dst, out.action, out.reasons
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "a flow whose first packet was passed up must still get its NAT reverse entry \
             once forwarded (connection-table and reverse entries are written together, only \
             for forwarded packets):\n{}",
            failures.join("\n")
        );
    });
}

/// A DSR flow's opening SYN goes into the connection table with one insert that fails when
/// the tuple has an entry (no lookup first): a retransmitted SYN still finds its flow's
/// backend after the ring changed, and a SYN passed up leaves no entry behind.
#[test]
fn dsr_opening_syns_find_their_entry_and_leave_none_when_passed_up() {
    if !sluice_tests::privileged() {
        return;
    }
    let lab = Lab::new("xdp");
    let vip = sock(vip(Family::V4), 80);
    let backend = |i: usize| backend_value(sock(backend_ip(i, Family::V4), BACKEND_PORT));
    let syn_from = |port: u16| Frame {
        tcp_flags: TCP_SYN,
        ..Frame::new(L4::Tcp, sock(client_ip(Family::V4), port), vip)
    };
    // Index BACKENDS has no neighbour entry until the test adds one.
    let (unresolved, mac) = (backend_ip(BACKENDS, Family::V4), backend_mac(BACKENDS));
    lab.run(|dp| {
        for i in 0..2 {
            dp.set_backend(i as u32 + 1, backend(i));
        }
        dp.set_backend(3, backend_value(sock(unresolved, BACKEND_PORT)));
        dp.set_service(vip, L4::Tcp, service(SERVICE_DSR, 0, 7));
        dp.set_ring(0, &[1; 7]);
        let syn = syn_from(5555);
        let first = (0, vec![ForwardDsr, FlowNew]);
        assert_eq!(steer(dp, &syn, false), first, "first SYN");
        let entry = dp
            .flow_entry(&syn.flow_key())
            .map(|e| (e.backend_id, e.state));
        assert_eq!(entry, Some((1, 0)), "the SYN's entry");
        dp.set_ring(0, &[2; 7]);
        let again = (0, vec![ForwardDsr, FlowEstablished]);
        assert_eq!(
            steer(dp, &syn, false),
            again,
            "retransmitted SYN, ring changed"
        );

        dp.set_ring(0, &[3; 7]);
        let other = syn_from(6666);
        let out = dp.run_counted(&other.bytes());
        let passed = (XDP_PASS, vec![Reason::PassNoNeighbour, FlowNew]);
        assert_eq!(
            (out.action, out.reasons),
            passed,
            "backend's MAC unresolved"
        );
        assert_eq!(
            dp.flow_entry(&other.flow_key()),
            None,
            "passed up: no entry"
        );
        let mac_text = sluice_tests::format_mac(mac);
        let neigh = format!("neigh add {unresolved} lladdr {mac_text} dev eth0 nud permanent");
        lab.ns().ip(neigh.split(' '));
        let out = dp.run_counted(&other.bytes());
        let entered = (XDP_TX, vec![ForwardDsr, FlowNew]);
        assert_eq!(
            (out.action, out.reasons),
            entered,
            "the SYN again, MAC known"
        );
        let entry = dp.flow_entry(&other.flow_key()).map(|e| e.backend_id);
        assert_eq!(entry, Some(3), "entered once forwarded");
    });
}
