//! Malformed, truncated and unsupported frames: each is passed up byte for byte as it came,
//! counted under the reason that stopped the parser. Every frame is aimed at a live NAT
//! service, so only its defect keeps it from being forwarded.

use lb_common::service::SERVICE_NAT;
use lb_common::stats::Reason::{
    PassFragment, PassIpv6Extension, PassMalformed, PassNotIp, PassOtherProtocol, PassTruncated,
};

use crate::cases::{check, pass};
use crate::frames::{Frame, L3, L4, fix_ipv4_checksum, l4_offset, put16, sock};
use crate::lab::{
    CLIENT_MAC, CLIENT4, CLIENT6, Dataplane, ETH0_MAC, Family, Lab, VIP4, VIP6, XDP_TX, backend_ip,
    vip,
};

fn tcp4() -> Vec<u8> {
    Frame::new(L4::Tcp, sock(CLIENT4, 40000), sock(VIP4, 80)).bytes()
}

fn udp4() -> Vec<u8> {
    Frame::new(L4::Udp, sock(CLIENT4, 40000), sock(VIP4, 53)).bytes()
}

fn tcp6() -> Vec<u8> {
    Frame::new(L4::Tcp, sock(CLIENT6, 40000), sock(VIP6, 80)).bytes()
}

fn udp6() -> Vec<u8> {
    Frame::new(L4::Udp, sock(CLIENT6, 40000), sock(VIP6, 53)).bytes()
}

/// `frame` after `edit`.
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut frame);
    frame
}

/// `frame` after an IPv4 header edit, its header checksum recomputed so only the edit is wrong.
fn ipv4_edit(frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edited(frame, |f| {
        edit(f);
        fix_ipv4_checksum(f);
    })
}

/// `frame` after an edit of its L4 header at offset `at`, given the L4 header's length.
fn l4_edit(frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>, usize, usize)) -> Vec<u8> {
    edited(frame, |f| {
        let l4 = l4_offset(f);
        let len = f.len() - l4;
        edit(f, l4, len);
    })
}

/// The frame minus its last byte, its headers unchanged.
fn short(mut frame: Vec<u8>) -> Vec<u8> {
    frame.pop();
    frame
}

/// `frame` cut to the first `len` bytes of its L4 header, the IP length fields saying so.
fn l4_cut(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    let l4 = l4_offset(&frame);
    frame.truncate(l4 + len);
    let ip_len = u16::try_from(frame.len() - L3).unwrap_or(u16::MAX);
    if frame[L3] >> 4 == 4 {
        ipv4_edit(frame, |f| put16(f, L3 + 2, ip_len))
    } else {
        edited(frame, |f| put16(f, L3 + 4, ip_len - 40))
    }
}

/// An IPv6 TCP frame with an 8-byte extension header of type `next` before the TCP header.
fn ipv6_with_extension(next: u8) -> Vec<u8> {
    let mut frame = tcp6();
    let payload = u16::from_be_bytes([frame[L3 + 4], frame[L3 + 5]]);
    put16(&mut frame, L3 + 4, payload + 8);
    frame[L3 + 6] = next;
    // Next header TCP; then hop-by-hop: a PadN option; fragment: offset 0, M clear, id 1.
    let header = match next {
        44 => [6, 0, 0, 0, 0, 0, 0, 1],
        _ => [6, 0, 1, 4, 0, 0, 0, 0],
    };
    frame.splice(L3 + 40..L3 + 40, header);
    frame
}

fn arp_request() -> Vec<u8> {
    let mut frame = [[0xff; 6], CLIENT_MAC].concat();
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&CLIENT4.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&VIP4.octets());
    frame
}

fn icmp_echo(family: Family) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, ETH0_MAC);
    let mut out = Vec::new();
    let written = match family {
        Family::V4 => builder
            .ipv4(CLIENT4.octets(), VIP4.octets(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, b"ping"),
        Family::V6 => builder
            .ipv6(CLIENT6.octets(), VIP6.octets(), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut out, b"ping"),
    };
    written.unwrap_or_else(|e| panic!("building an echo request: {e}"));
    out
}

/// NAT services on VIP4/VIP6 TCP 80 and UDP 53, each with a live backend.
fn nat_services(dp: &mut Dataplane) {
    dp.enable_nat();
    for (id, family, l4, port) in [
        (1, Family::V4, L4::Tcp, 80),
        (2, Family::V4, L4::Udp, 53),
        (3, Family::V6, L4::Tcp, 80),
        (4, Family::V6, L4::Udp, 53),
    ] {
        let backend = sock(backend_ip(0, family), 8000);
        dp.single_backend_service(sock(vip(family), port), l4, SERVICE_NAT, id, backend);
    }
}

#[test]
fn malformed_and_unsupported_frames_pass_untouched() {
    if !sluice_tests::privileged() {
        return;
    }
    let set = |at: usize, value: u8| move |f: &mut Vec<u8>| f[at] = value;
    let set16 = |at: usize, value: u16| move |f: &mut Vec<u8>| put16(f, at, value);
    let vlan = |tail: &[u8]| [&tcp4()[..12], tail].concat();
    #[rustfmt::skip]
    let cases = [
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL), so the
        // shortest frame the program can see is a bare header announcing a VLAN tag.
        pass("802.1Q tag missing", vlan(&[0x81, 0]), PassTruncated),
        pass("802.1Q tag, no IP", vlan(&[0x81, 0, 0, 7, 8, 0]), PassTruncated),
        pass("IPv4 header cut short", tcp4()[..L3 + 19].to_vec(), PassTruncated),
        pass("IPv6 header cut short", tcp6()[..L3 + 39].to_vec(), PassTruncated),
        pass("IPv4 total length past the end", short(tcp4()), PassTruncated),
        pass("IPv6 payload length past the end", short(udp6()), PassTruncated),
        pass("IPv4 TCP header cut short", l4_cut(tcp4(), 12), PassTruncated),
        pass("IPv6 TCP header cut short", l4_cut(tcp6(), 19), PassTruncated),
        pass("IPv4 UDP header cut short", l4_cut(udp4(), 4), PassTruncated),
        pass("IPv6 UDP header cut short", l4_cut(udp6(), 7), PassTruncated),
        pass("IPv4 version 5", ipv4_edit(tcp4(), set(L3, 0x55)), PassMalformed),
        pass("IPv6 ethertype, version 4", edited(tcp6(), set(L3, 0x40)), PassMalformed),
        pass("IPv4 IHL 4", ipv4_edit(tcp4(), set(L3, 0x44)), PassMalformed),
        pass("IPv4 IHL 0", ipv4_edit(udp4(), set(L3, 0x40)), PassMalformed),
        pass("IPv4 total length < IHL", ipv4_edit(tcp4(), set16(L3 + 2, 19)), PassMalformed),
        pass("TCP data offset 4", l4_edit(tcp4(), |f, l4, _| f[l4 + 12] = 0x40), PassMalformed),
        pass(
            "TCP data offset past the IP payload",
            l4_edit(l4_cut(tcp6(), 40), |f, l4, _| f[l4 + 12] = 0xf0),
            PassMalformed,
        ),
        pass(
            "TCP header only in Ethernet padding",
            edited(l4_cut(tcp4(), 0), |f| f.resize(60, 0)),
            PassMalformed,
        ),
        pass("UDP length 7", l4_edit(udp4(), |f, l4, _| put16(f, l4 + 4, 7)), PassMalformed),
        pass(
            "IPv4 UDP length past the IP payload",
            l4_edit(udp4(), |f, l4, len| put16(f, l4 + 4, len as u16 + 1)),
            PassMalformed,
        ),
        pass(
            "IPv6 UDP length past the IP payload",
            l4_edit(udp6(), |f, l4, len| put16(f, l4 + 4, len as u16 + 1)),
            PassMalformed,
        ),
        pass("IPv4 MF", ipv4_edit(tcp4(), set16(L3 + 6, 0x2000)), PassFragment),
        pass("IPv4 offset", ipv4_edit(udp4(), set16(L3 + 6, 0x0010)), PassFragment),
        pass("IPv4 MF, DF, offset", ipv4_edit(udp4(), set16(L3 + 6, 0x6001)), PassFragment),
        pass("IPv6 hop-by-hop", ipv6_with_extension(0), PassIpv6Extension),
        pass("IPv6 fragment header", ipv6_with_extension(44), PassIpv6Extension),
        pass("ARP request for the VIP", arp_request(), PassNotIp),
        // One tag is parsed; a second (QinQ) hides the IP header.
        pass("802.1ad + 802.1Q tags", vlan(&[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 8, 0]), PassNotIp),
        pass("ICMP echo to the VIP", icmp_echo(Family::V4), PassOtherProtocol),
        pass("ICMPv6 echo to the VIP", icmp_echo(Family::V6), PassOtherProtocol),
    ];
    Lab::new("xdp").run(|dp| {
        nat_services(dp);
        check(dp, &cases);
        // The same frames, well formed, are forwarded: the defects are what passed them.
        for (what, frame) in [
            ("tcp4", tcp4()),
            ("udp4", udp4()),
            ("tcp6", tcp6()),
            ("udp6", udp6()),
        ] {
            assert_eq!(
                dp.run(&frame).0,
                XDP_TX,
                "the well-formed {what} frame is forwarded"
            );
        }
    });
}
