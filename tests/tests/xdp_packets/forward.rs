//! Forwarded frames, checked byte for byte against a frame etherparse builds from scratch
//! (so every incremental checksum update is compared with a full recompute) and against an
//! independent checksum check: DSR, NAT toward a backend and NAT of its reply, in IPv4 and
//! IPv6, TCP and UDP, tagged, with IPv4 options, and out of another interface.

use std::net::SocketAddr;

use lb_common::service::{SERVICE_DSR, SERVICE_NAT};
use lb_common::stats::Reason;

use crate::frames::{Frame, L4, assert_frame, l4_offset, sock, verify_checksums};
use crate::lab::{
    CLIENT_MAC, Dataplane, ETH0_MAC, ETH1_MAC, FAR_MAC, FAR4, FAR6, Family, Lab, XDP_PASS,
    XDP_REDIRECT, XDP_TX, backend_ip, backend_mac, client_ip, vip,
};

const CLIENT_PORT: u16 = 40000;

/// The service port and the backend port NAT rewrites it to.
fn ports(l4: L4) -> (u16, u16) {
    match l4 {
        L4::Tcp => (80, 8080),
        L4::Udp => (53, 5353),
    }
}

/// A NAT backend's `reply` as it leaves toward the client: from the VIP, one hop older.
fn translated_reply(reply: &Frame, vip: SocketAddr) -> Frame {
    Frame {
        src_mac: ETH0_MAC,
        dst_mac: CLIENT_MAC,
        src: vip,
        ttl: reply.ttl - 1,
        ..reply.clone()
    }
}

/// Runs `input` and checks the verdict, the counters, the checksums and every output byte.
#[track_caller]
fn expect_forwarded(
    dp: &Dataplane,
    what: &str,
    input: &[u8],
    expected: &[u8],
    action: u32,
    reasons: &[Reason],
) -> Vec<u8> {
    let out = dp.run_counted(input);
    assert_eq!(out.action, action, "{what}: verdict");
    assert_eq!(out.reasons, reasons, "{what}: counters moved");
    verify_checksums(&out.frame).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_frame(what, &out.frame, expected);
    out.frame
}

fn dsr(family: Family, l4: L4, vlan: Option<u16>) {
    if !sluice_tests::privileged() {
        return;
    }
    let (port, _) = ports(l4);
    let vip = sock(vip(family), port);
    Lab::new("xdp").run(|dp| {
        dp.single_backend_service(vip, l4, SERVICE_DSR, 1, sock(backend_ip(0, family), 9999));
        let mut input = Frame::new(l4, sock(client_ip(family), CLIENT_PORT), vip);
        input.vlan = vlan;
        // Only the MACs change: the backend holds the VIP, and DSR is not a routing hop.
        let expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            ..input.clone()
        };
        let what = format!("DSR {family:?} {l4:?} vlan {vlan:?}");
        let reasons = [Reason::ForwardDsr, Reason::FlowNew];
        expect_forwarded(
            dp,
            &what,
            &input.bytes(),
            &expected.bytes(),
            XDP_TX,
            &reasons,
        );
    });
}

#[test]
fn dsr_ipv4_tcp() {
    dsr(Family::V4, L4::Tcp, None);
}

#[test]
fn dsr_ipv4_udp() {
    dsr(Family::V4, L4::Udp, None);
}

#[test]
fn dsr_ipv6_tcp() {
    dsr(Family::V6, L4::Tcp, None);
}

#[test]
fn dsr_ipv6_udp() {
    dsr(Family::V6, L4::Udp, None);
}

#[test]
fn dsr_ipv6_udp_vlan_tagged_keeps_its_tag() {
    dsr(Family::V6, L4::Udp, Some(42));
}

/// NAT toward the backend, then the backend's reply back to the client, from the VIP.
/// `edit` adjusts the client's frame (tag, options) and the reply alike.
fn nat(family: Family, l4: L4, edit: impl Fn(&mut Frame) + Sync) {
    if !sluice_tests::privileged() {
        return;
    }
    let (port, backend_port) = ports(l4);
    let (vip, client) = (
        sock(vip(family), port),
        sock(client_ip(family), CLIENT_PORT),
    );
    let backend = sock(backend_ip(0, family), backend_port);
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        dp.single_backend_service(vip, l4, SERVICE_NAT, 1, backend);
        let mut input = Frame::new(l4, client, vip);
        edit(&mut input);
        let expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            dst: backend,
            ttl: input.ttl - 1,
            ..input.clone()
        };
        let what = format!("NAT {family:?} {l4:?} to the backend");
        let reasons = [Reason::ForwardNat, Reason::FlowNew];
        expect_forwarded(
            dp,
            &what,
            &input.bytes(),
            &expected.bytes(),
            XDP_TX,
            &reasons,
        );

        let mut reply = Frame::new(l4, backend, client);
        edit(&mut reply);
        reply.src_mac = backend_mac(0);
        reply.payload = b"a reply, also untouched".to_vec();
        let expected = translated_reply(&reply, vip);
        let what = format!("NAT {family:?} {l4:?} reply to the client");
        let reasons = [Reason::ForwardNatReply];
        expect_forwarded(
            dp,
            &what,
            &reply.bytes(),
            &expected.bytes(),
            XDP_TX,
            &reasons,
        );
    });
}

#[test]
fn nat_ipv4_tcp_forward_and_reply() {
    nat(Family::V4, L4::Tcp, |_| {});
}

#[test]
fn nat_ipv4_udp_forward_and_reply() {
    nat(Family::V4, L4::Udp, |_| {});
}

#[test]
fn nat_ipv6_tcp_forward_and_reply() {
    nat(Family::V6, L4::Tcp, |_| {});
}

#[test]
fn nat_ipv6_udp_forward_and_reply() {
    nat(Family::V6, L4::Udp, |_| {});
}

/// A packet for no service is looked up as a NAT reply only when its source port is one a
/// NAT backend replies from: with the backend's port taken out of that set, its reply is
/// passed up untouched (PassNoService) though its NAT entry is there; put back, the same
/// reply is translated again.
#[test]
fn nat_replies_are_looked_up_only_from_nat_source_ports() {
    if !sluice_tests::privileged() {
        return;
    }
    let (port, backend_port) = ports(L4::Tcp);
    let (vip, client) = (
        sock(vip(Family::V4), port),
        sock(client_ip(Family::V4), CLIENT_PORT),
    );
    let backend = sock(backend_ip(0, Family::V4), backend_port);
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        dp.single_backend_service(vip, L4::Tcp, SERVICE_NAT, 1, backend);
        let opened = dp.run_counted(&Frame::new(L4::Tcp, client, vip).bytes());
        assert_eq!(opened.action, XDP_TX, "the client's packet is forwarded");

        let mut reply = Frame::new(L4::Tcp, backend, client);
        reply.src_mac = backend_mac(0);
        dp.set_nat_source_port(backend_port, false);
        let out = dp.run_counted(&reply.bytes());
        assert_eq!(
            (out.action, out.reasons),
            (XDP_PASS, vec![Reason::PassNoService]),
            "a reply from a port outside the set is not looked up"
        );
        assert_eq!(out.frame, reply.bytes(), "and is passed up untouched");

        dp.set_nat_source_port(backend_port, true);
        let expected = translated_reply(&reply, vip);
        let reasons = [Reason::ForwardNatReply];
        let what = "the same reply with its port back in the set";
        expect_forwarded(
            dp,
            what,
            &reply.bytes(),
            &expected.bytes(),
            XDP_TX,
            &reasons,
        );
    });
}

#[test]
fn nat_ipv4_tcp_vlan_tagged_keeps_its_tag() {
    nat(Family::V4, L4::Tcp, |f| f.vlan = Some(7));
}

#[test]
fn nat_ipv4_udp_with_ip_options_and_low_ttl() {
    nat(Family::V4, L4::Udp, |f| {
        // NOP, NOP, NOP, end of options: IHL 6.
        f.ipv4_options = vec![1, 1, 1, 0];
        f.ttl = 2;
    });
}

/// IPv4 UDP with checksum 0 (none) keeps 0 both ways; the IP checksum is still updated.
#[test]
fn nat_ipv4_udp_without_checksum_keeps_it_zero() {
    if !sluice_tests::privileged() {
        return;
    }
    let (vip, client) = (sock(vip(Family::V4), 53), sock(client_ip(Family::V4), 5000));
    let backend = sock(backend_ip(0, Family::V4), 5353);
    let no_checksum = |frame: &Frame| {
        let mut bytes = frame.bytes();
        let at = l4_offset(&bytes) + 6;
        bytes[at..at + 2].fill(0);
        bytes
    };
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        dp.single_backend_service(vip, L4::Udp, SERVICE_NAT, 1, backend);
        let input = Frame::new(L4::Udp, client, vip);
        let expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            dst: backend,
            ttl: 63,
            ..input.clone()
        };
        let reasons = [Reason::ForwardNat, Reason::FlowNew];
        let (input, expected) = (no_checksum(&input), no_checksum(&expected));
        expect_forwarded(
            dp,
            "UDP without checksum",
            &input,
            &expected,
            XDP_TX,
            &reasons,
        );

        let mut reply = Frame::new(L4::Udp, backend, client);
        reply.src_mac = backend_mac(0);
        let expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: CLIENT_MAC,
            src: vip,
            ttl: 63,
            ..reply.clone()
        };
        let (reply, expected) = (no_checksum(&reply), no_checksum(&expected));
        let reasons = [Reason::ForwardNatReply];
        expect_forwarded(
            dp,
            "reply without checksum",
            &reply,
            &expected,
            XDP_TX,
            &reasons,
        );
    });
}

/// A UDP checksum that computes to 0 after NAT must go out as 0xffff (RFC 768), never as
/// 0 ("no checksum").
#[test]
fn nat_udp_checksum_computing_to_zero_is_sent_as_all_ones() {
    if !sluice_tests::privileged() {
        return;
    }
    for family in [Family::V4, Family::V6] {
        let (vip, client) = (sock(vip(family), 53), sock(client_ip(family), 5000));
        let backend = sock(backend_ip(0, family), 5353);
        // Choose the payload's last word so the translated packet sums to all ones.
        let mut expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            dst: backend,
            ttl: 63,
            payload: vec![0x5a, 0x5a, 0, 0],
            ..Frame::new(L4::Udp, client, vip)
        };
        let bytes = expected.bytes();
        let at = l4_offset(&bytes) + 6;
        expected.payload[2..].copy_from_slice(&bytes[at..at + 2]);
        let expected_bytes = expected.bytes();
        assert_eq!(expected_bytes[at..at + 2], [0xff, 0xff], "test premise");
        let input = Frame {
            src_mac: CLIENT_MAC,
            dst_mac: ETH0_MAC,
            dst: vip,
            ttl: 64,
            ..expected.clone()
        };
        Lab::new("xdp").run(|dp| {
            dp.single_backend_service(vip, L4::Udp, SERVICE_NAT, 1, backend);
            let what = format!("{family:?} UDP checksum 0xffff");
            let reasons = [Reason::ForwardNat, Reason::FlowNew];
            expect_forwarded(dp, &what, &input.bytes(), &expected_bytes, XDP_TX, &reasons);
        });
    }
}

/// A backend behind eth1: the frame leaves by XDP_REDIRECT with eth1's MAC as its source.
#[test]
fn backend_on_another_interface_is_redirected() {
    if !sluice_tests::privileged() {
        return;
    }
    Lab::new("xdp").run(|dp| {
        for (family, far, flags) in [
            (Family::V4, sock(FAR4, 8080), SERVICE_DSR),
            (Family::V6, sock(FAR6, 8080), SERVICE_NAT),
        ] {
            let vip = sock(vip(family), 80);
            let id = if family == Family::V4 { 1 } else { 2 };
            dp.single_backend_service(vip, L4::Tcp, flags, id, far);
            let input = Frame::new(L4::Tcp, sock(client_ip(family), CLIENT_PORT), vip);
            let mut expected = Frame {
                src_mac: ETH1_MAC,
                dst_mac: FAR_MAC,
                ..input.clone()
            };
            let mut reasons = [Reason::ForwardDsr, Reason::FlowNew];
            if flags == SERVICE_NAT {
                (expected.dst, expected.ttl) = (far, 63);
                reasons[0] = Reason::ForwardNat;
            }
            let what = format!("{family:?} to eth1");
            let (input, expected) = (input.bytes(), expected.bytes());
            expect_forwarded(dp, &what, &input, &expected, XDP_REDIRECT, &reasons);
        }
    });
}

/// A short frame padded to Ethernet's 60-byte minimum: the padding is not part of the IP
/// packet, stays as it was, and does not enter the checksums.
#[test]
fn nat_ipv4_udp_padded_short_frame() {
    if !sluice_tests::privileged() {
        return;
    }
    let (vip, client) = (sock(vip(Family::V4), 53), sock(client_ip(Family::V4), 5000));
    let backend = sock(backend_ip(0, Family::V4), 5353);
    let padded = |frame: &Frame| {
        let mut bytes = frame.bytes();
        bytes.resize(60, 0xa5);
        bytes
    };
    Lab::new("xdp").run(|dp| {
        dp.single_backend_service(vip, L4::Udp, SERVICE_NAT, 1, backend);
        let input = Frame {
            payload: vec![1, 2, 3],
            ..Frame::new(L4::Udp, client, vip)
        };
        let expected = Frame {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            dst: backend,
            ttl: 63,
            ..input.clone()
        };
        let (input, expected) = (padded(&input), padded(&expected));
        let reasons = [Reason::ForwardNat, Reason::FlowNew];
        expect_forwarded(dp, "padded frame", &input, &expected, XDP_TX, &reasons);
    });
}
