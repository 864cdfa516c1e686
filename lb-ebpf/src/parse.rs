//! Header layouts and the parser: Ethernet (one 802.1Q tag), IPv4 (with options), IPv6 (fixed
//! header only), TCP and UDP; `icmp` reads ICMP itself. Every access goes through [`ptr_at`],
//! the one bounds check.

use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};
use lb_common::flow::FlowKey;
use lb_common::stats::Reason;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub version_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset in the high nibble of byte 0; flags in byte 1.
    pub doff_flags: [u8; 2],
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

/// Offset of the L4 checksum field inside the TCP header.
pub const TCP_CHECK_OFFSET: usize = 16;
/// Offset of the L4 checksum field inside the UDP header.
pub const UDP_CHECK_OFFSET: usize = 6;

/// What the parser learned about a TCP or UDP packet.
pub struct Packet {
    /// Offset of the IP header (after Ethernet and an optional VLAN tag).
    pub l3_offset: usize,
    /// Offset of the TCP/UDP header.
    pub l4_offset: usize,
    /// The 5-tuple, wire layout, in the packet's direction.
    pub flow: FlowKey,
    /// Length of the IP packet (header and payload), from its header.
    pub ip_len: u16,
    /// TCP flags (byte 13 of the header); 0 for UDP.
    pub tcp_flags: u8,
}

/// A pointer to a `T` at `offset` bytes into the frame, or `PassTruncated` if the frame is
/// shorter. The one place packet bounds are checked.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Reason::PassTruncated);
    }
    Ok((start + offset) as *mut T)
}

/// Parses the frame down to TCP/UDP ports. Errors are the reason to pass the frame untouched.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Reason> {
    let (l3_offset, proto) = l3(ctx)?;
    match proto {
        ETH_P_IP => parse_ipv4(ctx, l3_offset),
        _ => parse_ipv6(ctx, l3_offset),
    }
}

/// Whether the frame is IP carrying neither TCP nor UDP, from a look at its protocol field
/// alone (`parse` still checks the headers). Anything else, including frames too short to
/// tell, is the TCP/UDP path's.
#[inline(always)]
pub fn other_protocol(ctx: &XdpContext) -> bool {
    let Ok((l3_offset, ether_type)) = l3(ctx) else {
        return false;
    };
    // IPv4's protocol is byte 9 of its header, IPv6's next header byte 6.
    let at = if ether_type == ETH_P_IP { 9 } else { 6 };
    let Ok(protocol) = ptr_at::<u8>(ctx, l3_offset + at) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let protocol = unsafe { *protocol };
    protocol != PROTO_TCP && protocol != PROTO_UDP
}

/// The offset of the IP header (after Ethernet and an optional VLAN tag) and its
/// EtherType, `ETH_P_IP` or `ETH_P_IPV6`.
#[inline(always)]
pub fn l3(ctx: &XdpContext) -> Result<(usize, u16), Reason> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the header lies inside the frame.
    let mut proto = u16::from_be(unsafe { (*eth).proto });
    let mut l3_offset = core::mem::size_of::<EthHdr>();
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        proto = u16::from_be(unsafe { (*vlan).proto });
        l3_offset += core::mem::size_of::<VlanHdr>();
    }
    match proto {
        ETH_P_IP | ETH_P_IPV6 => Ok((l3_offset, proto)),
        _ => Err(Reason::PassNotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3_offset: usize) -> Result<Packet, Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3_offset)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip.version_ihl >> 4 != 4 || header_len < core::mem::size_of::<Ipv4Hdr>() {
        return Err(Reason::PassMalformed);
    }
    let ip_len = u16::from_be(ip.tot_len);
    if usize::from(ip_len) < header_len {
        return Err(Reason::PassMalformed);
    }
    if ctx.data() + l3_offset + usize::from(ip_len) > ctx.data_end() {
        return Err(Reason::PassTruncated);
    }
    // More-fragments flag or a fragment offset: ports are not in every fragment.
    if u16::from_be(ip.frag_off) & 0x3fff != 0 {
        return Err(Reason::PassFragment);
    }
    let mut flow = FlowKey {
        src_addr: [ip.saddr, 0, 0, 0],
        dst_addr: [ip.daddr, 0, 0, 0],
        protocol: ip.protocol,
        family: FAMILY_V4,
        ..FlowKey::default()
    };
    let l4_offset = l3_offset + header_len;
    let l4_len = usize::from(ip_len) - header_len;
    let tcp_flags = parse_ports(ctx, l4_offset, l4_len, &mut flow)?;
    Ok(Packet {
        l3_offset,
        l4_offset,
        flow,
        ip_len,
        tcp_flags,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3_offset: usize) -> Result<Packet, Reason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3_offset)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    if u32::from_be(ip.version_flow) >> 28 != 6 {
        return Err(Reason::PassMalformed);
    }
    let payload_len = usize::from(u16::from_be(ip.payload_len));
    let header_len = core::mem::size_of::<Ipv6Hdr>();
    if ctx.data() + l3_offset + header_len + payload_len > ctx.data_end() {
        return Err(Reason::PassTruncated);
    }
    match ip.next_header {
        PROTO_TCP | PROTO_UDP => {}
        // Hop-by-hop, routing, fragment, destination options, AH, ESP, mobility, HIP, shim6.
        0 | 43 | 44 | 60 | 51 | 50 | 135 | 139 | 140 => return Err(Reason::PassIpv6Extension),
        _ => return Err(Reason::PassOtherProtocol),
    }
    let mut flow = FlowKey {
        src_addr: ip.saddr,
        dst_addr: ip.daddr,
        protocol: ip.next_header,
        family: FAMILY_V6,
        ..FlowKey::default()
    };
    let l4_offset = l3_offset + header_len;
    let tcp_flags = parse_ports(ctx, l4_offset, payload_len, &mut flow)?;
    Ok(Packet {
        l3_offset,
        l4_offset,
        flow,
        // Cannot overflow: payload_len came from a u16 and 40 is added only in wider types
        // elsewhere; the FIB lookup wants the IP length, saturated.
        ip_len: (header_len + payload_len).min(usize::from(u16::MAX)) as u16,
        tcp_flags,
    })
}

/// Reads the ports into `flow`, checking the L4 header against `l4_len`, the L4 length the IP
/// header claims. Returns the TCP flags (0 for UDP).
#[inline(always)]
fn parse_ports(
    ctx: &XdpContext,
    l4_offset: usize,
    l4_len: usize,
    flow: &mut FlowKey,
) -> Result<u8, Reason> {
    match flow.protocol {
        PROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(ctx, l4_offset)?;
            // SAFETY: bounds checked by ptr_at.
            let tcp = unsafe { &*tcp };
            let data_offset = usize::from(tcp.doff_flags[0] >> 4) * 4;
            if data_offset < core::mem::size_of::<TcpHdr>() || data_offset > l4_len {
                return Err(Reason::PassMalformed);
            }
            flow.src_port = tcp.source;
            flow.dst_port = tcp.dest;
            Ok(tcp.doff_flags[1])
        }
        PROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(ctx, l4_offset)?;
            // SAFETY: bounds checked by ptr_at.
            let udp = unsafe { &*udp };
            let len = usize::from(u16::from_be(udp.len));
            if len < core::mem::size_of::<UdpHdr>() || len > l4_len {
                return Err(Reason::PassMalformed);
            }
            flow.src_port = udp.source;
            flow.dst_port = udp.dest;
            Ok(0)
        }
        _ => Err(Reason::PassOtherProtocol),
    }
}
