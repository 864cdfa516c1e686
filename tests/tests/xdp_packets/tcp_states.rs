//! The connection table follows TCP and UDP: FIN from each end or an RST makes an entry
//! closing, a SYN on a closing entry and an entry past its idle or closing timeout are placed
//! afresh by Maglev, and the established path refreshes last-seen only once a second. Time
//! moves by ageing entries in the map (`Dataplane::age_flow`).

use lb_common::conntrack::{
    CT_FIN_BACKEND, CT_FIN_CLIENT, CT_RST, LAST_SEEN_GRANULARITY_NS, TCP_ACK, TCP_FIN, TCP_RST,
    TCP_SYN,
};
use lb_common::limits::{SETTING_CLOSING_S, SETTING_TCP_IDLE_S, SETTING_UDP_IDLE_S};
use lb_common::service::{SERVICE_DSR, SERVICE_NAT};
use lb_common::stats::Reason::{
    self, FlowEstablished, FlowExpired, FlowNew, FlowReopened, ForwardDsr, ForwardNat,
    ForwardNatReply,
};

use crate::frames::{Frame, L4, TCP_PSH, sock};
use crate::lab::{
    BACKENDS, Dataplane, Family, Lab, XDP_TX, backend_ip, backend_mac, backend_value, client_ip,
    service, vip,
};

pub const BACKEND_PORT: u16 = 8080;
pub const TCP_IDLE_S: u32 = 101;
pub const UDP_IDLE_S: u32 = 51;
pub const CLOSING_S: u32 = 5;

/// A service at the VIP's port 80 (`l4`, `flags`) whose ring sends everything to backend id 1
/// (backend 0); id 2 is backend 1. Timeouts: TCP 101 s, UDP 51 s, closing 5 s.
pub fn two_backend_service(dp: &mut Dataplane, family: Family, l4: L4, flags: u32) {
    dp.enable_nat();
    dp.set_setting(SETTING_TCP_IDLE_S, TCP_IDLE_S);
    dp.set_setting(SETTING_UDP_IDLE_S, UDP_IDLE_S);
    dp.set_setting(SETTING_CLOSING_S, CLOSING_S);
    for i in 0..2 {
        let backend = backend_value(sock(backend_ip(i, family), BACKEND_PORT));
        dp.set_backend(i as u32 + 1, backend);
    }
    dp.set_ring(0, &[1; 7]);
    dp.set_service(sock(vip(family), 80), l4, service(flags, 0, 7));
}

/// Points every ring slot at backend index `i` (id `i + 1`).
pub fn ring_to(dp: &mut Dataplane, i: usize) {
    dp.set_ring(0, &[i as u32 + 1; 7]);
}

/// Sends a client frame; returns the backend index it went to and the counters it moved.
pub fn client(dp: &Dataplane, frame: &Frame) -> (usize, Vec<Reason>) {
    let out = dp.run_counted(&frame.bytes());
    assert_eq!(out.action, XDP_TX, "{frame:?} must be forwarded");
    let backend = (0..BACKENDS)
        .find(|&i| out.frame[..6] == backend_mac(i))
        .unwrap_or_else(|| panic!("{frame:?} went to no backend's MAC: {:x?}", &out.frame[..6]));
    let reasons = out
        .reasons
        .into_iter()
        .filter(|r| !is_forward(*r))
        .collect();
    (backend, reasons)
}

fn is_forward(reason: Reason) -> bool {
    matches!(reason, ForwardDsr | ForwardNat)
}

/// A TCP client frame of `flow` with `flags`.
pub fn tcp(flow: &Frame, flags: u8) -> Frame {
    Frame {
        tcp_flags: flags,
        ..flow.clone()
    }
}

/// The backend `i`'s reply to `flow` with TCP `flags` (NAT: from the backend's address).
pub fn reply(flow: &Frame, i: usize, family: Family, flags: u8) -> Frame {
    let mut reply = Frame::new(flow.l4, sock(backend_ip(i, family), BACKEND_PORT), flow.src);
    reply.src_mac = backend_mac(i);
    reply.tcp_flags = flags;
    reply
}

fn state(dp: &mut Dataplane, flow: &Frame) -> u8 {
    dp.flow_entry(&flow.flow_key())
        .unwrap_or_else(|| panic!("no entry for {flow:?}"))
        .state
}

#[test]
fn tcp_close_through_nat_both_fins_then_syn_is_placed_afresh_ipv4() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V4;
    let flow = Frame::new(
        L4::Tcp,
        sock(client_ip(family), 40001),
        sock(vip(family), 80),
    );
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Tcp, SERVICE_NAT);
        assert_eq!(client(dp, &tcp(&flow, TCP_SYN)), (0, vec![FlowNew]), "SYN");
        assert_eq!(state(dp, &flow), 0);
        let established = (0, vec![FlowEstablished]);
        assert_eq!(client(dp, &tcp(&flow, TCP_ACK)), established, "ACK");
        ring_to(dp, 1);
        let push = tcp(&flow, TCP_ACK | TCP_PSH);
        assert_eq!(client(dp, &push), established, "data after the ring moved");

        assert_eq!(
            client(dp, &tcp(&flow, TCP_FIN | TCP_ACK)),
            established,
            "FIN"
        );
        assert_eq!(state(dp, &flow), CT_FIN_CLIENT, "a half-close");
        assert_eq!(
            client(dp, &tcp(&flow, TCP_SYN)),
            established,
            "a SYN on a half-closed flow is not a new connection"
        );
        // The backend's FIN comes back through NAT.
        let out = dp.run_counted(&reply(&flow, 0, family, TCP_FIN | TCP_ACK).bytes());
        assert_eq!((out.action, out.reasons), (XDP_TX, vec![ForwardNatReply]));
        assert_eq!(state(dp, &flow), CT_FIN_CLIENT | CT_FIN_BACKEND, "closing");
        assert_eq!(client(dp, &tcp(&flow, TCP_ACK)), established, "last ACK");
        // The client reuses the port: Maglev places it (the ring now says backend 1).
        let reopened = (1, vec![FlowReopened]);
        assert_eq!(client(dp, &tcp(&flow, TCP_SYN)), reopened, "SYN on closing");
        assert_eq!(state(dp, &flow), 0, "a fresh entry");
        assert_eq!(client(dp, &tcp(&flow, TCP_ACK)), (1, vec![FlowEstablished]));
    });
}

#[test]
fn tcp_rst_either_way_and_timeouts_nat_ipv6() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V6;
    let flow = Frame::new(
        L4::Tcp,
        sock(client_ip(family), 40002),
        sock(vip(family), 80),
    );
    let other = Frame::new(
        L4::Tcp,
        sock(client_ip(family), 40003),
        sock(vip(family), 80),
    );
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Tcp, SERVICE_NAT);
        assert_eq!(client(dp, &tcp(&flow, TCP_SYN)), (0, vec![FlowNew]));
        assert_eq!(client(dp, &tcp(&other, TCP_SYN)), (0, vec![FlowNew]));
        ring_to(dp, 1);

        // An RST from the client: closing; the closing timeout applies.
        let established = (0, vec![FlowEstablished]);
        assert_eq!(
            client(dp, &tcp(&flow, TCP_RST | TCP_ACK)),
            established,
            "RST"
        );
        assert_eq!(state(dp, &flow), CT_RST);
        dp.age_flow(&flow.flow_key(), f64::from(CLOSING_S) - 1.0);
        assert_eq!(
            client(dp, &tcp(&flow, TCP_ACK)),
            established,
            "closing, young"
        );
        dp.age_flow(&flow.flow_key(), f64::from(CLOSING_S) + 1.0);
        let expired = (1, vec![FlowExpired]);
        assert_eq!(client(dp, &tcp(&flow, TCP_ACK)), expired, "closing, old");

        // An RST from the backend, through NAT.
        let out = dp.run_counted(&reply(&other, 0, family, TCP_RST).bytes());
        assert_eq!((out.action, out.reasons), (XDP_TX, vec![ForwardNatReply]));
        assert_eq!(state(dp, &other), CT_RST, "backend RST");
        assert_eq!(
            client(dp, &tcp(&other, TCP_SYN)),
            (1, vec![FlowReopened]),
            "SYN after RST"
        );

        // Open TCP: the idle timeout, counted from the last packet.
        dp.age_flow(&other.flow_key(), f64::from(TCP_IDLE_S) - 2.0);
        assert_eq!(
            client(dp, &tcp(&other, TCP_ACK)),
            (1, vec![FlowEstablished])
        );
        dp.age_flow(&other.flow_key(), f64::from(TCP_IDLE_S) - 2.0);
        assert_eq!(
            client(dp, &tcp(&other, TCP_ACK)),
            (1, vec![FlowEstablished]),
            "the previous packet refreshed last-seen"
        );
        ring_to(dp, 0);
        dp.age_flow(&other.flow_key(), f64::from(TCP_IDLE_S) + 1.0);
        assert_eq!(client(dp, &tcp(&other, TCP_ACK)), (0, vec![FlowExpired]));
    });
}

#[test]
fn dsr_client_fin_alone_closes_and_udp_times_out_ipv4() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V4;
    let flow = Frame::new(
        L4::Tcp,
        sock(client_ip(family), 40004),
        sock(vip(family), 80),
    );
    let udp = Frame::new(
        L4::Udp,
        sock(client_ip(family), 40005),
        sock(vip(family), 80),
    );
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Tcp, SERVICE_DSR);
        two_backend_service(dp, family, L4::Udp, SERVICE_DSR);
        assert_eq!(client(dp, &tcp(&flow, TCP_SYN)), (0, vec![FlowNew]));
        assert_eq!(client(dp, &udp), (0, vec![FlowNew]));
        ring_to(dp, 1);
        // DSR never sees the backend's FIN: the client's makes the entry closing.
        let fin = tcp(&flow, TCP_FIN | TCP_ACK);
        assert_eq!(client(dp, &fin), (0, vec![FlowEstablished]));
        assert_eq!(state(dp, &flow), CT_FIN_CLIENT | CT_FIN_BACKEND);
        assert_eq!(client(dp, &tcp(&flow, TCP_SYN)), (1, vec![FlowReopened]));

        // UDP: no state, only the idle timeout.
        dp.age_flow(&udp.flow_key(), f64::from(UDP_IDLE_S) - 2.0);
        assert_eq!(client(dp, &udp), (0, vec![FlowEstablished]));
        assert_eq!(state(dp, &udp), 0);
        dp.age_flow(&udp.flow_key(), f64::from(UDP_IDLE_S) + 1.0);
        assert_eq!(client(dp, &udp), (1, vec![FlowExpired]));
    });
}

/// The established path writes last-seen at most once per granularity: a packet less than
/// that after the last refresh leaves the entry as it was; one after it moves it to now.
#[test]
fn last_seen_is_refreshed_once_per_granularity() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V4;
    let udp = Frame::new(
        L4::Udp,
        sock(client_ip(family), 40006),
        sock(vip(family), 80),
    );
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Udp, SERVICE_NAT);
        assert_eq!(client(dp, &udp), (0, vec![FlowNew]));
        let key = udp.flow_key();
        let first = dp.flow_entry(&key).map(|e| e.last_seen_ns).unwrap_or(0);
        assert!(first > 0, "a new entry carries its last-seen time");
        dp.age_flow(&key, 0.25);
        let aged = dp.flow_entry(&key).map(|e| e.last_seen_ns).unwrap_or(0);
        assert_eq!(client(dp, &udp), (0, vec![FlowEstablished]));
        let after = dp.flow_entry(&key).map(|e| e.last_seen_ns).unwrap_or(0);
        assert_eq!(after, aged, "no write within the granularity");
        dp.age_flow(&key, 2.0);
        let aged = dp.flow_entry(&key).map(|e| e.last_seen_ns).unwrap_or(0);
        assert_eq!(client(dp, &udp), (0, vec![FlowEstablished]));
        let after = dp.flow_entry(&key).map(|e| e.last_seen_ns).unwrap_or(0);
        assert!(
            after >= aged + LAST_SEEN_GRANULARITY_NS,
            "refreshed to now: {aged} -> {after}"
        );
    });
}
