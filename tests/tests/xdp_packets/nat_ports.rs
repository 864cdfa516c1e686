//! One client port talking to two VIPs that share a NAT backend: the backend would see the
//! same 5-tuple twice, so the second flow gets another source port, and each reply is
//! translated back to its own VIP and the client's own port, every byte checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::conntrack::{CT_FIN_BACKEND, TCP_ACK, TCP_FIN};
use lb_common::service::SERVICE_NAT;
use lb_common::stats::Reason::{FlowEstablished, FlowNew, ForwardNat, ForwardNatReply};

use crate::frames::{Frame, L4, assert_frame, sock};
use crate::lab::{
    CLIENT_MAC, ETH0_MAC, Family, Lab, XDP_TX, backend_ip, backend_mac, backend_value, client_ip,
    service, vip,
};

const BACKEND_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 5555;

fn second_vip(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 9, 0, 2).into(),
        Family::V6 => Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 2).into(),
    }
}

fn one_client_port_two_vips_one_backend(family: Family, l4: L4) {
    let backend = sock(backend_ip(0, family), BACKEND_PORT);
    let (vip1, vip2) = (sock(vip(family), 80), sock(second_vip(family), 80));
    let client = sock(client_ip(family), CLIENT_PORT);
    let to_vip1 = Frame::new(l4, client, vip1);
    let to_vip2 = Frame::new(l4, client, vip2);
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        dp.set_backend(1, backend_value(backend));
        dp.set_ring(0, &[1; 7]);
        for vip in [vip1, vip2] {
            dp.set_service(vip, l4, service(SERVICE_NAT, 0, 7));
        }
        let forwarded = |frame: &Frame, src_port: u16| Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            src: sock(client.ip(), src_port),
            dst: backend,
            ttl: frame.ttl - 1,
            ..frame.clone()
        };

        let out = dp.run_counted(&to_vip1.bytes());
        assert_eq!(
            (out.action, &out.reasons),
            (XDP_TX, &vec![ForwardNat, FlowNew])
        );
        let what = format!("{l4:?} {family:?}: first flow keeps the client's port");
        assert_frame(&what, &out.frame, &forwarded(&to_vip1, CLIENT_PORT).bytes());

        let out = dp.run_counted(&to_vip2.bytes());
        assert_eq!(
            (out.action, &out.reasons),
            (XDP_TX, &vec![ForwardNat, FlowNew])
        );
        let l4_start = out.frame.len() - to_vip2.payload.len() - l4_header_len(l4);
        let port = u16::from_be_bytes([out.frame[l4_start], out.frame[l4_start + 1]]);
        assert!(
            port != CLIENT_PORT && port >= 1024,
            "{l4:?} {family:?}: the second flow needs another source port, got {port}"
        );
        let what = format!("{l4:?} {family:?}: second flow, source port {port}");
        assert_frame(&what, &out.frame, &forwarded(&to_vip2, port).bytes());
        let again = dp.run_counted(&to_vip2.bytes());
        assert_eq!(again.reasons, vec![ForwardNat, FlowEstablished]);
        assert_frame("established: same port", &again.frame, &out.frame);

        // Both reverse entries survive: each reply goes back as its own VIP, to the client's
        // own port.
        for (vip, backend_sees) in [(vip1, CLIENT_PORT), (vip2, port)] {
            let mut reply = Frame::new(l4, backend, sock(client.ip(), backend_sees));
            reply.src_mac = backend_mac(0);
            let out = dp.run_counted(&reply.bytes());
            assert_eq!((out.action, &out.reasons), (XDP_TX, &vec![ForwardNatReply]));
            let expected = Frame {
                src_mac: ETH0_MAC,
                dst_mac: CLIENT_MAC,
                src: vip,
                dst: client,
                ttl: 63,
                ..reply.clone()
            };
            let what = format!("{l4:?} {family:?}: reply to port {backend_sees} as {vip}");
            assert_frame(&what, &out.frame, &expected.bytes());
        }
        if l4 == L4::Tcp {
            // The backend's FIN to the translated port reaches the second flow's entry.
            let mut fin = Frame::new(l4, backend, sock(client.ip(), port));
            fin.src_mac = backend_mac(0);
            fin.tcp_flags = TCP_FIN | TCP_ACK;
            assert_eq!(dp.run_counted(&fin.bytes()).action, XDP_TX);
            let state = dp.flow_entry(&to_vip2.flow_key()).map(|e| e.state);
            assert_eq!(state, Some(CT_FIN_BACKEND));
            let first = dp.flow_entry(&to_vip1.flow_key()).map(|e| e.state);
            assert_eq!(first, Some(0), "the first flow is untouched");
        }
    });
}

fn l4_header_len(l4: L4) -> usize {
    match l4 {
        L4::Tcp => 20,
        L4::Udp => 8,
    }
}

#[test]
fn nat_same_client_port_two_vips_tcp_ipv4() {
    if !sluice_tests::privileged() {
        return;
    }
    one_client_port_two_vips_one_backend(Family::V4, L4::Tcp);
}

#[test]
fn nat_same_client_port_two_vips_udp_ipv6() {
    if !sluice_tests::privileged() {
        return;
    }
    one_client_port_two_vips_one_backend(Family::V6, L4::Udp);
}
