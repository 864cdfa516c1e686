//! The frames the XDP bench sends: TCP SYNs for new flows, TCP data and UDP for established
//! ones, built by the XDP tests' `Frame` (every checksum right), and the check of what came
//! out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use lb_common::conntrack::{TCP_ACK, TCP_SYN};
use sluice_tests::xdp_lab::frames::{Frame, L3, L4, TCP_PSH};
use sluice_tests::xdp_lab::{CLIENT_MAC, ETH0_MAC, Family, backend_index_of_mac, backend_ip};

/// What a frame carries at layer 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A TCP SYN with no payload: the first packet of a connection.
    Syn,
    /// A TCP ACK|PSH with a short payload: a packet of an established connection.
    TcpData,
    /// A UDP datagram with a short payload.
    Udp,
}

/// One frame from the client's MAC to eth0's, TTL 64, untagged (the bench sends no VLAN tags).
pub fn frame(segment: Segment, src: SocketAddr, dst: SocketAddr) -> Result<Vec<u8>> {
    const PAYLOAD: &[u8] = b"sluice bench: 32 bytes of data.\n";
    let (l4, tcp_flags, payload) = match segment {
        Segment::Syn => (L4::Tcp, TCP_SYN, &[][..]),
        Segment::TcpData => (L4::Tcp, TCP_ACK | TCP_PSH, PAYLOAD),
        // UDP has no flags; the frame ignores them.
        Segment::Udp => (L4::Udp, 0, PAYLOAD),
    };
    let frame = Frame {
        tcp_flags,
        payload: payload.to_vec(),
        ..Frame::new(l4, src, dst)
    };
    frame
        .try_bytes()
        .with_context(|| format!("building a {segment:?} frame from {src} to {dst}"))
}

/// The `seq`-th distinct client endpoint of a family: addresses in 10.1.0.0/16 or fd01::/64
/// and ports 20000..60000, so a run never sends two new flows with the same 5-tuple.
pub fn fresh_client(ipv6: bool, seq: u64) -> SocketAddr {
    const PORTS: u64 = 40_000;
    let port = 20_000 + (seq % PORTS) as u16;
    let host = (seq / PORTS) as u16;
    let ip: IpAddr = if ipv6 {
        Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0x100, host, 0x10).into()
    } else {
        let [hi, lo] = host.to_be_bytes();
        Ipv4Addr::new(10, 1, 100 + hi, lo).into()
    };
    SocketAddr::new(ip, port)
}

/// What the program must have made of a frame.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// Passed up untouched.
    Unchanged,
    /// DSR: MACs rewritten toward a backend, the IP packet untouched.
    Dsr,
    /// NAT: toward a backend, whose address is now the destination.
    Nat,
    /// NAT reply: toward the client, with the VIP as the source again.
    NatReply(IpAddr),
}

/// Checks `output` (what the program returned) against `input` (what it was given).
pub fn check(expect: Output, input: &[u8], output: &[u8]) -> Result<(), String> {
    if output.len() != input.len() {
        return Err(format!(
            "the output frame is {} bytes, the input {}",
            output.len(),
            input.len()
        ));
    }
    let (dmac, smac) = (&output[0..6], &output[6..12]);
    let ipv6 = input[L3] >> 4 == 6;
    let (src, dst) = addresses(output, ipv6);
    match expect {
        Output::Unchanged if output == input => Ok(()),
        Output::Unchanged => Err("a passed frame was modified".into()),
        _ if smac != ETH0_MAC => Err(format!("source MAC {smac:02x?} is not eth0's")),
        Output::Dsr => {
            backend_index_of_mac(dmac).ok_or_else(|| format!("{dmac:02x?} is no backend's"))?;
            if output[L3..] != input[L3..] {
                return Err("DSR changed the IP packet".into());
            }
            Ok(())
        }
        Output::Nat => {
            let i =
                backend_index_of_mac(dmac).ok_or_else(|| format!("{dmac:02x?} is no backend's"))?;
            let want = backend_ip(i, Family::from_ipv6(ipv6));
            if dst != want {
                return Err(format!(
                    "NAT sent to MAC {dmac:02x?} with destination {dst}"
                ));
            }
            Ok(())
        }
        Output::NatReply(vip) if dmac == CLIENT_MAC && src == vip => Ok(()),
        Output::NatReply(vip) => Err(format!(
            "reply to MAC {dmac:02x?} from {src}; want the client's MAC, from {vip}"
        )),
    }
}

/// The source and destination addresses of an untagged IPv4 or IPv6 frame.
fn addresses(frame: &[u8], ipv6: bool) -> (IpAddr, IpAddr) {
    let at = |start: usize, len: usize| &frame[L3 + start..L3 + start + len];
    if ipv6 {
        let v6 = |b: &[u8]| IpAddr::from(<[u8; 16]>::try_from(b).unwrap_or_default());
        (v6(at(8, 16)), v6(at(24, 16)))
    } else {
        let v4 = |b: &[u8]| IpAddr::from(<[u8; 4]>::try_from(b).unwrap_or_default());
        (v4(at(12, 4)), v4(at(16, 4)))
    }
}
