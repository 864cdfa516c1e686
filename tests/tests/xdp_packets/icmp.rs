//! ICMP through the program: errors about a DSR flow go to its backend, errors about a NAT
//! flow are translated (outer and quoted headers, every checksum) toward its backend or back
//! toward its client, unknown flows and broken quotes are passed and counted, and echo
//! requests to a VIP get what the setting says. Output frames are compared byte for byte
//! with frames etherparse builds from scratch, and every checksum is recomputed here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder};
use lb_common::icmp::{IcmpReason, VIP_ECHO_DROP, VIP_ECHO_PASS, VIP_ECHO_REPLY};
use lb_common::limits::SETTING_VIP_ECHO;
use lb_common::service::{SERVICE_DSR, SERVICE_NAT};
use lb_common::stats::Reason;

use crate::frames::{Frame, L3, L4, assert_frame, fold, hex, ones_sum, sock};
use crate::lab::{
    CLIENT_MAC, Dataplane, ETH0_MAC, Family, Lab, XDP_DROP, XDP_PASS, XDP_TX, backend_ip,
    backend_mac, backend_value, client_ip, service, vip,
};

const CLIENT_PORT: u16 = 40000;
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// A router on the client's side (the path-MTU bottleneck toward the client).
const ROUTER4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0xfe);
/// A router on the backends' side (10.2.0.254 has a neighbour entry in the lab).
const BACKEND_ROUTER4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);
const BACKEND_ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 0xfe);
const ROUTER_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0xfe];

fn router(family: Family) -> IpAddr {
    match family {
        Family::V4 => ROUTER4.into(),
        Family::V6 => ROUTER6.into(),
    }
}

fn backend_router(family: Family) -> IpAddr {
    match family {
        Family::V4 => BACKEND_ROUTER4.into(),
        Family::V6 => BACKEND_ROUTER6.into(),
    }
}

/// An ICMP message: its outer addresses and MACs, type, code, bytes 5 to 8 and body.
#[derive(Clone, Debug)]
struct Icmp {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: Vec<u8>,
}

impl Icmp {
    /// "Fragmentation needed, next-hop MTU 1400" (IPv4) or "packet too big, MTU 1280" (IPv6)
    /// from `src` to `dst`, quoting `quote`.
    fn too_big(src: IpAddr, dst: IpAddr, quote: Vec<u8>) -> Icmp {
        let (kind, code, rest) = match src {
            IpAddr::V4(_) => (3, 4, [0, 0, 0x05, 0x78]),
            IpAddr::V6(_) => (2, 0, 1280u32.to_be_bytes()),
        };
        Icmp {
            src_mac: ROUTER_MAC,
            dst_mac: ETH0_MAC,
            src,
            dst,
            ttl: 64,
            kind,
            code,
            rest,
            body: quote,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let mut out = Vec::new();
        let written = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let header = Ipv4Header {
                    source: s.octets(),
                    destination: d.octets(),
                    time_to_live: self.ttl,
                    ..Ipv4Header::default()
                };
                eth.ip(IpHeaders::Ipv4(header, Default::default()))
                    .icmpv4_raw(self.kind, self.code, self.rest)
                    .write(&mut out, &self.body)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let header = Ipv6Header {
                    source: s.octets(),
                    destination: d.octets(),
                    hop_limit: self.ttl,
                    ..Ipv6Header::default()
                };
                eth.ip(IpHeaders::Ipv6(header, Default::default()))
                    .icmpv6_raw(self.kind, self.code, self.rest)
                    .write(&mut out, &self.body)
            }
            _ => panic!("mixed address families in {self:?}"),
        };
        written.unwrap_or_else(|e| panic!("building {self:?}: {e}"));
        out
    }
}

/// The IP packet of `frame` (no Ethernet header), cut to `len` bytes if given: what an ICMP
/// error quotes.
fn quote(frame: &Frame, len: Option<usize>) -> Vec<u8> {
    let mut packet = frame.bytes().split_off(L3);
    if let Some(len) = len {
        packet.truncate(len);
    }
    packet
}

/// The shortest quote RFC 792 allows: the IP header and 8 bytes of TCP/UDP.
fn minimal(family: Family) -> Option<usize> {
    Some(match family {
        Family::V4 => 28,
        Family::V6 => 48,
    })
}

/// A packet a VIP sends to the client (the backend's reply, as the client's side sees it).
fn from_vip(family: Family, l4: L4, client_port: u16) -> Frame {
    let mut frame = Frame::new(
        l4,
        sock(vip(family), VIP_PORT),
        sock(client_ip(family), client_port),
    );
    frame.ttl = 61;
    frame.payload = vec![0x5a; 300];
    frame
}

fn folds_to_ffff(sum: u32) -> bool {
    fold(sum) == 0xffff
}

/// Recomputes, from scratch, the outer IPv4 header checksum, the ICMP (v6: with its
/// pseudo-header) checksum, the quoted IPv4 header's checksum and, when the quote holds the
/// whole quoted packet, its TCP/UDP checksum.
fn verify_icmp_checksums(frame: &[u8]) -> Result<(), String> {
    let v4 = frame[L3] >> 4 == 4;
    let (icmp, end) = if v4 {
        let ihl = usize::from(frame[L3] & 0x0f) * 4;
        if !folds_to_ffff(ones_sum(&frame[L3..L3 + ihl])) {
            return Err("outer IPv4 header checksum is wrong".into());
        }
        let total = usize::from(u16::from_be_bytes([frame[L3 + 2], frame[L3 + 3]]));
        (L3 + ihl, L3 + total)
    } else {
        let payload = usize::from(u16::from_be_bytes([frame[L3 + 4], frame[L3 + 5]]));
        (L3 + 40, L3 + 40 + payload)
    };
    let message = &frame[icmp..end];
    let mut sum = ones_sum(message);
    if !v4 {
        sum += ones_sum(&frame[L3 + 8..L3 + 40]) + 58 + u32::try_from(message.len()).unwrap_or(0);
    }
    if !folds_to_ffff(sum) {
        return Err("ICMP checksum is wrong".into());
    }
    // Echo messages quote nothing.
    if matches!(message[0], 0 | 8 | 128 | 129) {
        return Ok(());
    }
    let inner = &message[8..];
    if inner[0] >> 4 == 4 {
        let ihl = usize::from(inner[0] & 0x0f) * 4;
        if !folds_to_ffff(ones_sum(&inner[..ihl])) {
            return Err("quoted IPv4 header checksum is wrong".into());
        }
    }
    let (l4, total, protocol, pseudo) = if inner[0] >> 4 == 4 {
        let ihl = usize::from(inner[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
        let l4_len = u32::try_from(total - ihl).unwrap_or(0);
        (
            ihl,
            total,
            inner[9],
            ones_sum(&inner[12..20]) + u32::from(inner[9]) + l4_len,
        )
    } else {
        let payload = usize::from(u16::from_be_bytes([inner[4], inner[5]]));
        let pseudo =
            ones_sum(&inner[8..40]) + u32::from(inner[6]) + u32::try_from(payload).unwrap_or(0);
        (40, 40 + payload, inner[6], pseudo)
    };
    if inner.len() >= total && !folds_to_ffff(pseudo + ones_sum(&inner[l4..total])) {
        return Err(format!("quoted L4 (protocol {protocol}) checksum is wrong"));
    }
    Ok(())
}

/// Runs `input`; checks the verdict, the ICMP reason (and no other), every checksum and
/// every byte of the output.
#[track_caller]
fn expect(
    dp: &Dataplane,
    what: &str,
    input: &[u8],
    action: u32,
    reason: IcmpReason,
    expected: &[u8],
) {
    let out = dp.run_counted(input);
    assert_eq!(
        (out.action, &out.reasons, &out.icmp),
        (action, &vec![], &vec![reason]),
        "{what}: verdict, reasons, ICMP reasons"
    );
    if action != XDP_DROP {
        verify_icmp_checksums(&out.frame)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", hex(&out.frame)));
    }
    assert_frame(what, &out.frame, expected);
}

/// Opens the client's flow `client_port` -> VIP with one data packet.
fn open_flow(dp: &Dataplane, family: Family, l4: L4, client_port: u16, forwarded: Reason) {
    let frame = Frame::new(
        l4,
        sock(client_ip(family), client_port),
        sock(vip(family), VIP_PORT),
    );
    let out = dp.run_counted(&frame.bytes());
    assert_eq!(out.action, XDP_TX, "opening the flow");
    assert_eq!(
        out.reasons,
        vec![forwarded, Reason::FlowNew],
        "opening the flow"
    );
}

/// A NAT service at the VIP with backend 0 on `BACKEND_PORT`, and the client's flow
/// `CLIENT_PORT` -> VIP opened through it. Returns the backend.
fn nat_flow(dp: &mut Dataplane, family: Family, l4: L4) -> SocketAddr {
    let backend = sock(backend_ip(0, family), BACKEND_PORT);
    dp.enable_nat();
    dp.single_backend_service(sock(vip(family), VIP_PORT), l4, SERVICE_NAT, 1, backend);
    open_flow(dp, family, l4, CLIENT_PORT, Reason::ForwardNat);
    backend
}

/// DSR: an error about an established flow goes to the flow's backend though Maglev now
/// points elsewhere; one about an unknown flow goes where Maglev places it. Only the MACs
/// change.
fn dsr(family: Family, l4: L4) {
    if !sluice_tests::privileged() {
        return;
    }
    let vip_sock = sock(vip(family), VIP_PORT);
    Lab::new("xdp").run(|dp| {
        dp.single_backend_service(vip_sock, l4, SERVICE_DSR, 1, sock(backend_ip(0, family), 0));
        open_flow(dp, family, l4, CLIENT_PORT, Reason::ForwardDsr);
        // Every new flow now goes to backend 2.
        dp.set_backend(2, backend_value(sock(backend_ip(1, family), 0)));
        dp.set_ring(14, &[2; 7]);
        dp.set_service(vip_sock, l4, service(SERVICE_DSR, 14, 7));

        for (client_port, backend, which) in [
            (CLIENT_PORT, 0, "established"),
            (CLIENT_PORT + 1, 1, "unknown"),
        ] {
            let error = Icmp::too_big(
                router(family),
                vip(family),
                quote(&from_vip(family, l4, client_port), None),
            );
            let expected = Icmp {
                src_mac: ETH0_MAC,
                dst_mac: backend_mac(backend),
                ..error.clone()
            };
            let what = format!("DSR {family:?} {l4:?} too big, {which} flow");
            expect(
                dp,
                &what,
                &error.bytes(),
                XDP_TX,
                IcmpReason::ErrorSteered,
                &expected.bytes(),
            );
        }
    });
}

#[test]
fn dsr_ipv4_tcp_frag_needed_goes_to_the_flows_backend() {
    dsr(Family::V4, L4::Tcp);
}

#[test]
fn dsr_ipv6_tcp_packet_too_big_goes_to_the_flows_backend() {
    dsr(Family::V6, L4::Tcp);
}

#[test]
fn dsr_ipv6_udp_packet_too_big_goes_to_the_flows_backend() {
    dsr(Family::V6, L4::Udp);
}

/// NAT: an error from the client's side about the VIP's packet becomes one about the
/// backend's packet, sent to the backend; an error from the backend's side about a packet
/// NAT sent becomes one about the client's packet to the VIP, sent to the client.
fn nat(family: Family, l4: L4, quote_len: Option<usize>) {
    if !sluice_tests::privileged() {
        return;
    }
    let (vip_sock, client) = (
        sock(vip(family), VIP_PORT),
        sock(client_ip(family), CLIENT_PORT),
    );
    Lab::new("xdp").run(|dp| {
        let backend = nat_flow(dp, family, l4);

        let sent = from_vip(family, l4, CLIENT_PORT);
        let error = Icmp::too_big(router(family), vip(family), quote(&sent, quote_len));
        let backend_sent = Frame {
            src: backend,
            ..sent.clone()
        };
        let expected = Icmp {
            src_mac: ETH0_MAC,
            dst_mac: backend_mac(0),
            dst: backend.ip(),
            ttl: error.ttl - 1,
            body: quote(&backend_sent, quote_len),
            ..error.clone()
        };
        let what = format!("NAT {family:?} {l4:?} too big toward the backend, quote {quote_len:?}");
        expect(
            dp,
            &what,
            &error.bytes(),
            XDP_TX,
            IcmpReason::ErrorTranslated,
            &expected.bytes(),
        );

        // A router between the load balancer and the backend: about the client's packet
        // as NAT forwarded it.
        let mut forwarded = Frame::new(l4, client, backend);
        forwarded.ttl = 63;
        forwarded.payload = vec![0xa5; 200];
        let error = Icmp::too_big(
            backend_router(family),
            client.ip(),
            quote(&forwarded, quote_len),
        );
        let as_client_sent = Frame {
            dst: vip_sock,
            ..forwarded.clone()
        };
        let expected = Icmp {
            src_mac: ETH0_MAC,
            dst_mac: CLIENT_MAC,
            ttl: error.ttl - 1,
            body: quote(&as_client_sent, quote_len),
            ..error.clone()
        };
        let what = format!("NAT {family:?} {l4:?} too big toward the client, quote {quote_len:?}");
        expect(
            dp,
            &what,
            &error.bytes(),
            XDP_TX,
            IcmpReason::ErrorTranslatedReply,
            &expected.bytes(),
        );

        // No flow: passed as it came.
        let unknown = Icmp::too_big(
            router(family),
            vip(family),
            quote(&from_vip(family, l4, CLIENT_PORT + 1), quote_len),
        );
        let what = format!("NAT {family:?} {l4:?} too big, unknown flow");
        expect(
            dp,
            &what,
            &unknown.bytes(),
            XDP_PASS,
            IcmpReason::ErrorNoFlow,
            &unknown.bytes(),
        );
    });
}

#[test]
fn nat_ipv4_tcp_frag_needed_whole_quote() {
    nat(Family::V4, L4::Tcp, None);
}

#[test]
fn nat_ipv4_tcp_frag_needed_minimal_quote() {
    nat(Family::V4, L4::Tcp, minimal(Family::V4));
}

#[test]
fn nat_ipv4_udp_frag_needed_minimal_quote() {
    nat(Family::V4, L4::Udp, minimal(Family::V4));
}

#[test]
fn nat_ipv6_tcp_packet_too_big_whole_quote() {
    nat(Family::V6, L4::Tcp, None);
}

#[test]
fn nat_ipv6_tcp_packet_too_big_minimal_quote() {
    nat(Family::V6, L4::Tcp, minimal(Family::V6));
}

#[test]
fn nat_ipv6_udp_packet_too_big_whole_quote() {
    nat(Family::V6, L4::Udp, None);
}

/// A NAT backend's own "port unreachable" about the client's UDP datagram: the quote and
/// the outer source (the backend) both become the VIP.
#[test]
fn nat_backend_port_unreachable_comes_from_the_vip() {
    if !sluice_tests::privileged() {
        return;
    }
    for family in [Family::V4, Family::V6] {
        let (vip_sock, client) = (
            sock(vip(family), VIP_PORT),
            sock(client_ip(family), CLIENT_PORT),
        );
        Lab::new("xdp").run(|dp| {
            let backend = nat_flow(dp, family, L4::Udp);
            let datagram = Frame::new(L4::Udp, client, backend);
            let (kind, code) = match family {
                Family::V4 => (3, 3),
                Family::V6 => (1, 4),
            };
            let error = Icmp {
                src_mac: backend_mac(0),
                kind,
                code,
                rest: [0; 4],
                ..Icmp::too_big(backend.ip(), client.ip(), quote(&datagram, None))
            };
            let expected = Icmp {
                src_mac: ETH0_MAC,
                dst_mac: CLIENT_MAC,
                src: vip_sock.ip(),
                ttl: error.ttl - 1,
                body: quote(
                    &Frame {
                        dst: vip_sock,
                        ..datagram.clone()
                    },
                    None,
                ),
                ..error.clone()
            };
            let what = format!("NAT {family:?} port unreachable from the backend");
            expect(
                dp,
                &what,
                &error.bytes(),
                XDP_TX,
                IcmpReason::ErrorTranslatedReply,
                &expected.bytes(),
            );
        });
    }
}

/// Quotes cut too short, or of another protocol, are passed as they came and counted; an
/// ICMP header cut short is passed as truncated.
#[test]
fn broken_quotes_are_passed_and_counted() {
    if !sluice_tests::privileged() {
        return;
    }
    for family in [Family::V4, Family::V6] {
        Lab::new("xdp").run(|dp| {
            nat_flow(dp, family, L4::Tcp);
            let sent = from_vip(family, L4::Tcp, CLIENT_PORT);
            let short = minimal(family).map(|n| n - 4);
            let mut bad_version = quote(&sent, None);
            bad_version[0] = 0x55;
            let cases = [
                ("4 bytes of TCP", quote(&sent, short)),
                ("no L4 byte", quote(&sent, short.map(|n| n - 4))),
                ("IP version 5", bad_version),
                ("empty quote", Vec::new()),
            ];
            for (what, body) in cases {
                let error = Icmp::too_big(router(family), vip(family), body).bytes();
                let what = format!("{family:?} {what}");
                let out = dp.run_counted(&error);
                assert_eq!(
                    (out.action, &out.reasons, &out.icmp),
                    (XDP_PASS, &vec![], &vec![IcmpReason::Malformed]),
                    "{what}"
                );
                assert_frame(&what, &out.frame, &error);
            }
            // The ICMP header itself cut to 4 bytes (the IP length says so too).
            let mut cut = Icmp::too_big(router(family), vip(family), Vec::new()).bytes();
            cut.truncate(cut.len() - 4);
            let len_at = match family {
                Family::V4 => L3 + 2,
                Family::V6 => L3 + 4,
            };
            let len = u16::from_be_bytes([cut[len_at], cut[len_at + 1]]) - 4;
            cut[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
            if family == Family::V4 {
                crate::frames::fix_ipv4_checksum(&mut cut);
            }
            let out = dp.run_counted(&cut);
            assert_eq!(
                (out.action, &out.reasons, &out.icmp),
                (XDP_PASS, &vec![Reason::PassTruncated], &vec![]),
                "{family:?} ICMP header cut short"
            );
            assert_frame("ICMP header cut short", &out.frame, &cut);
        });
    }
}

/// An echo request from the client to `to`.
fn echo_request(family: Family, to: IpAddr) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, ETH0_MAC);
    let mut out = Vec::new();
    let payload = b"sluice ping payload";
    let written = match (client_ip(family), to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), 55)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut out, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), 55)
            .icmpv6_echo_request(0x1234, 7)
            .write(&mut out, payload),
        _ => panic!("mixed families"),
    };
    written.unwrap_or_else(|e| panic!("building an echo request: {e}"));
    out
}

/// The echo reply the program should send for `echo_request(family, vip)`.
fn echo_reply(family: Family) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(ETH0_MAC, CLIENT_MAC);
    let mut out = Vec::new();
    let payload = b"sluice ping payload";
    let written = match (vip(family), client_ip(family)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), 64)
            .icmpv4_echo_reply(0x1234, 7)
            .write(&mut out, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), 64)
            .icmpv6_echo_reply(0x1234, 7)
            .write(&mut out, payload),
        _ => panic!("mixed families"),
    };
    written.unwrap_or_else(|e| panic!("building an echo reply: {e}"));
    out
}

#[test]
fn echo_to_a_vip_follows_the_setting() {
    if !sluice_tests::privileged() {
        return;
    }
    Lab::new("xdp").run(|dp| {
        for family in [Family::V4, Family::V6] {
            dp.set_vip(vip(family));
        }
        for family in [Family::V4, Family::V6] {
            let request = echo_request(family, vip(family));
            dp.set_setting(SETTING_VIP_ECHO, VIP_ECHO_REPLY);
            let what = format!("{family:?} echo, reply");
            expect(
                dp,
                &what,
                &request,
                XDP_TX,
                IcmpReason::EchoReplied,
                &echo_reply(family),
            );

            dp.set_setting(SETTING_VIP_ECHO, VIP_ECHO_PASS);
            let what = format!("{family:?} echo, pass");
            expect(
                dp,
                &what,
                &request,
                XDP_PASS,
                IcmpReason::EchoPassed,
                &request,
            );

            dp.set_setting(SETTING_VIP_ECHO, VIP_ECHO_DROP);
            let out = dp.run_counted(&request);
            assert_eq!(
                (out.action, &out.reasons, &out.icmp),
                (XDP_DROP, &vec![], &vec![IcmpReason::EchoDropped]),
                "{family:?} echo, drop"
            );

            // Not a VIP: the stack's business, whatever the setting.
            let other: IpAddr = backend_ip(3, family);
            let request = echo_request(family, other);
            let out = dp.run_counted(&request);
            assert_eq!(
                (out.action, &out.reasons, &out.icmp),
                (XDP_PASS, &vec![Reason::PassOtherProtocol], &vec![]),
                "{family:?} echo to another address"
            );
            assert_frame("echo to another address", &out.frame, &request);
        }
    });
}
