//! The frames of the XDP packet tests and the XDP bench: built with etherparse (which computes
//! every checksum from scratch), an independent checksum verifier, byte-level edits for
//! malformed frames, and a frame comparison that names the first differing byte.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder, VlanId};
use lb_common::addr::{PROTO_TCP, PROTO_UDP};
use lb_common::conntrack::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

pub use super::L4;
use super::{CLIENT_MAC, ETH0_MAC};

/// The TCP PSH flag (the conntrack rules ignore it).
pub const TCP_PSH: u8 = 0x08;

/// Offset of the IP header in an untagged frame.
pub const L3: usize = 14;

/// A TCP or UDP packet in an Ethernet frame; `bytes` serialises it with full checksums.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub ttl: u8,
    /// TCP flags (`lb_common::conntrack::TCP_*`, PSH 0x08); ignored for UDP.
    pub tcp_flags: u8,
    /// IPv4 header options (a multiple of 4 bytes); ignored for IPv6.
    pub ipv4_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// From the client's MAC to eth0's, TTL 64, a fixed payload.
    pub fn new(l4: L4, src: SocketAddr, dst: SocketAddr) -> Frame {
        Frame {
            src_mac: CLIENT_MAC,
            dst_mac: ETH0_MAC,
            vlan: None,
            src,
            dst,
            l4,
            ttl: 64,
            tcp_flags: TCP_ACK | TCP_PSH,
            ipv4_options: Vec::new(),
            payload: b"sluice: every byte of this payload must survive".to_vec(),
        }
    }

    /// The frame's bytes; panics where [`Frame::try_bytes`] fails.
    pub fn bytes(&self) -> Vec<u8> {
        self.try_bytes()
            .unwrap_or_else(|e| panic!("building {self:?}: {e}"))
    }

    /// The frame's bytes, with every checksum computed.
    pub fn try_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let headers = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpHeaders::Ipv4(
                Ipv4Header {
                    source: s.octets(),
                    destination: d.octets(),
                    time_to_live: self.ttl,
                    options: self.ipv4_options[..]
                        .try_into()
                        .map_err(|_| FrameError::Ipv4Options(self.ipv4_options.len()))?,
                    ..Ipv4Header::default()
                },
                Default::default(),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    source: s.octets(),
                    destination: d.octets(),
                    hop_limit: self.ttl,
                    ..Ipv6Header::default()
                },
                Default::default(),
            ),
            _ => {
                return Err(FrameError::MixedFamilies {
                    src: self.src,
                    dst: self.dst,
                });
            }
        };
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip = match self.vlan {
            None => eth.ip(headers),
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).map_err(|_| FrameError::VlanId(id))?)
                .ip(headers),
        };
        let mut out = Vec::new();
        let (sport, dport) = (self.src.port(), self.dst.port());
        let written = match self.l4 {
            L4::Tcp => {
                let flag = |bit: u8| self.tcp_flags & bit != 0;
                let mut tcp = ip.tcp(sport, dport, 0x1234_5678, 64240);
                if flag(TCP_ACK) {
                    tcp = tcp.ack(0x0abc_def0);
                }
                if flag(TCP_PSH) {
                    tcp = tcp.psh();
                }
                if flag(TCP_SYN) {
                    tcp = tcp.syn();
                }
                if flag(TCP_FIN) {
                    tcp = tcp.fin();
                }
                if flag(TCP_RST) {
                    tcp = tcp.rst();
                }
                tcp.write(&mut out, &self.payload)
            }
            L4::Udp => ip.udp(sport, dport).write(&mut out, &self.payload),
        };
        written.map_err(FrameError::Build)?;
        Ok(out)
    }
}

/// Why a [`Frame`] has no bytes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{src} and {dst} are of different address families")]
    MixedFamilies { src: SocketAddr, dst: SocketAddr },
    #[error("{0} bytes of IPv4 options: not a multiple of 4 up to 40")]
    Ipv4Options(usize),
    #[error("VLAN id {0} is out of range")]
    VlanId(u16),
    #[error("writing the frame")]
    Build(#[source] etherparse::err::packet::BuildWriteError),
}

impl Frame {
    /// The connection-table key of this frame (its 5-tuple in its direction).
    pub fn flow_key(&self) -> lb_common::flow::FlowKey {
        let (src_addr, family) = lb_common::addr::to_wire(self.src.ip());
        let (dst_addr, _) = lb_common::addr::to_wire(self.dst.ip());
        lb_common::flow::FlowKey {
            src_addr,
            dst_addr,
            src_port: self.src.port().to_be(),
            dst_port: self.dst.port().to_be(),
            protocol: self.l4.protocol(),
            family,
            _pad: [0; 2],
        }
    }
}

/// `ip:port`.
pub fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Offset of the IP header: after Ethernet and one 802.1Q/802.1ad tag, if any.
pub fn l3_offset(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 | 0x88a8 => L3 + 4,
        _ => L3,
    }
}

/// Offset of the L4 header of a well-formed IPv4 or IPv6 (no extension) frame.
pub fn l4_offset(frame: &[u8]) -> usize {
    let l3 = l3_offset(frame);
    match frame[l3] >> 4 {
        4 => l3 + usize::from(frame[l3] & 0x0f) * 4,
        _ => l3 + 40,
    }
}

/// One's-complement sum of `data` as big-endian words (odd tail padded with zero).
pub fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Folds a one's-complement sum to 16 bits (0xffff: a checksummed range adds up).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum over the pseudo-header, computed
/// here from scratch. An IPv4 UDP checksum of 0 (none) is accepted; callers that care check it.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let l3 = l3_offset(frame);
    let l4 = l4_offset(frame);
    let (pseudo, l4_end, protocol) = match frame[l3] >> 4 {
        4 => {
            if fold(ones_sum(&frame[l3..l4])) != 0xffff {
                return Err("IPv4 header checksum is wrong".into());
            }
            let end = l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            let l4_len = u32::try_from(end - l4).unwrap_or(u32::MAX);
            let sum = ones_sum(&frame[l3 + 12..l3 + 20]) + u32::from(frame[l3 + 9]) + l4_len;
            (sum, end, frame[l3 + 9])
        }
        _ => {
            let payload = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
            let sum = ones_sum(&frame[l3 + 8..l3 + 40]) + u32::from(frame[l3 + 6]);
            (
                sum + u32::from(payload),
                l4 + usize::from(payload),
                frame[l3 + 6],
            )
        }
    };
    let check_at = if protocol == PROTO_TCP { 16 } else { 6 };
    let check = u16::from_be_bytes([frame[l4 + check_at], frame[l4 + check_at + 1]]);
    if protocol == PROTO_UDP && check == 0 && frame[l3] >> 4 == 4 {
        return Ok(());
    }
    if fold(pseudo + ones_sum(&frame[l4..l4_end])) != 0xffff {
        return Err(format!(
            "L4 (protocol {protocol}) checksum {check:#06x} is wrong"
        ));
    }
    Ok(())
}

/// Recomputes the IPv4 header checksum after an edit.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let l3 = l3_offset(frame);
    let end = l3 + usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10..l3 + 12].fill(0);
    let check = !fold(ones_sum(&frame[l3..end]));
    frame[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
}

/// Writes a big-endian u16 at `at`.
pub fn put16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Asserts `actual` is byte for byte `expected`, naming the first difference.
#[track_caller]
pub fn assert_frame(what: &str, actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: output frame differs from the expected one at byte {first} \
         (lengths {} and {})\n  actual: {}\nexpected: {}",
        actual.len(),
        expected.len(),
        hex(actual),
        hex(expected)
    );
}

/// Lowercase hex of `bytes`, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
