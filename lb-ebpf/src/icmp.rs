//! ICMP on the data path. Errors about a balanced flow (IPv4 destination unreachable and time
//! exceeded, ICMPv6 destination unreachable, packet too big and time exceeded) follow the
//! packet they quote: to the flow's backend (DSR), translated to the backend's addresses
//! (NAT), or, when they quote a packet NAT sent to a backend, translated back for the client.
//! Echo requests to a VIP are answered, passed or dropped as the agent's setting says.

use aya_ebpf::bindings::{xdp_action, xdp_md};
use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, WireAddr};
use lb_common::flow::FlowKey;
use lb_common::icmp::{
    ICMP_PROTO_V4, ICMP_PROTO_V6, IcmpReason, VIP_ECHO_DROP, VIP_ECHO_REPLY, VipKey,
};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS, SETTING_VIP_ECHO};
use lb_common::service::{SERVICE_L7, SERVICE_NAT, ServiceKey};
use lb_common::stats::Reason;

use crate::csum;
use crate::maps::{NAT_REVERSE, SERVICES, SETTINGS, VIPS};
use crate::nat::End;
use crate::parse::{
    self, ETH_P_IP, EthHdr, Ipv4Hdr, Ipv6Hdr, TCP_CHECK_OFFSET, UDP_CHECK_OFFSET, ptr_at,
};
use crate::stats;
use crate::steer;
use crate::transmit::{self, NextHop, Route};

const V4_DEST_UNREACH: u8 = 3;
const V4_ECHO_REQUEST: u8 = 8;
const V4_ECHO_REPLY: u8 = 0;
const V4_TIME_EXCEEDED: u8 = 11;
const V6_DEST_UNREACH: u8 = 1;
const V6_PACKET_TOO_BIG: u8 = 2;
const V6_TIME_EXCEEDED: u8 = 3;
const V6_ECHO_REQUEST: u8 = 128;
const V6_ECHO_REPLY: u8 = 129;
/// The hop limit of an echo reply the program makes (Linux's default).
const REPLY_TTL: u8 = 64;

/// An ICMP packet's verdict and the ICMP reason it is counted under.
pub type IcmpVerdict = (u32, IcmpReason);

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: u16,
    rest: u32,
}

/// The outer IP header of an ICMP packet.
struct Outer {
    l3_offset: usize,
    /// Offset of the ICMP header.
    offset: usize,
    family: u8,
    src: WireAddr,
    dst: WireAddr,
    ip_len: u16,
}

/// The packet an ICMP error quotes: its IP header, and at least the first 8 bytes of its
/// TCP/UDP header (RFC 792 and 4443 promise those).
struct Quoted {
    l3_offset: usize,
    l4_offset: usize,
    /// The quoted 5-tuple in the quoted packet's direction.
    flow: FlowKey,
}

/// Handles an IP packet that is neither TCP nor UDP, counts it, and returns its verdict. A
/// BPF function of its own, not inlined: its stack is apart from the TCP/UDP path's (the
/// 512 bytes the verifier allows would not hold both), and that path's code stays as it was.
#[inline(never)]
pub fn handle(ctx: *mut xdp_md, bytes: u64) -> u32 {
    let ctx = XdpContext::new(ctx);
    // The IP header's checks, as for any packet; only "neither TCP nor UDP" gets further.
    let verdict = match parse::parse(&ctx) {
        Err(Reason::PassOtherProtocol) => process(&ctx),
        Err(reason) => Err(reason),
        Ok(_) => Err(Reason::PassOtherProtocol),
    };
    match verdict {
        Ok((action, reason)) => {
            stats::count_icmp(reason, bytes);
            action
        }
        Err(reason) => {
            stats::count(reason, bytes);
            xdp_action::XDP_PASS
        }
    }
}

/// `Err(reason)` passes the packet up, counted under `reason` like any packet; `Ok` is
/// counted under its ICMP reason.
#[inline(always)]
fn process(ctx: &XdpContext) -> Result<IcmpVerdict, Reason> {
    let outer = parse_outer(ctx)?;
    let icmp: *const IcmpHdr = ptr_at(ctx, outer.offset)?;
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*icmp).kind };
    let code = unsafe { (*icmp).code };
    let v4 = outer.family == FAMILY_V4;
    let is_error = if v4 {
        kind == V4_DEST_UNREACH || kind == V4_TIME_EXCEEDED
    } else {
        kind == V6_DEST_UNREACH || kind == V6_PACKET_TOO_BIG || kind == V6_TIME_EXCEEDED
    };
    if is_error {
        return error(ctx, &outer);
    }
    let is_echo = code == 0 && kind == if v4 { V4_ECHO_REQUEST } else { V6_ECHO_REQUEST };
    if is_echo {
        return echo(ctx, &outer);
    }
    Err(Reason::PassOtherProtocol)
}

/// The outer IP header, if the packet is ICMP (IPv4) or ICMPv6 (IPv6 without extension
/// headers, which `parse` already turned away).
#[inline(always)]
fn parse_outer(ctx: &XdpContext) -> Result<Outer, Reason> {
    let (l3_offset, ether_type) = parse::l3(ctx)?;
    if ether_type == ETH_P_IP {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
        if ip.protocol != ICMP_PROTO_V4 || header_len < core::mem::size_of::<Ipv4Hdr>() {
            return Err(Reason::PassOtherProtocol);
        }
        return Ok(Outer {
            l3_offset,
            offset: l3_offset + header_len,
            family: FAMILY_V4,
            src: [ip.saddr, 0, 0, 0],
            dst: [ip.daddr, 0, 0, 0],
            ip_len: u16::from_be(ip.tot_len),
        });
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3_offset)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.next_header != ICMP_PROTO_V6 {
        return Err(Reason::PassOtherProtocol);
    }
    let header_len = core::mem::size_of::<Ipv6Hdr>();
    Ok(Outer {
        l3_offset,
        offset: l3_offset + header_len,
        family: FAMILY_V6,
        src: ip.saddr,
        dst: ip.daddr,
        ip_len: u16::from_be(ip.payload_len).saturating_add(header_len as u16),
    })
}

/// The quoted packet's IP header and ports. `None` when the quote is cut short or is not
/// a TCP/UDP packet this program could have forwarded.
#[inline(always)]
fn parse_quoted(ctx: &XdpContext, outer: &Outer) -> Option<Quoted> {
    let l3_offset = outer.offset + core::mem::size_of::<IcmpHdr>();
    let mut flow = FlowKey {
        family: outer.family,
        ..FlowKey::default()
    };
    let l4_offset = if outer.family == FAMILY_V4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3_offset).ok()?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
        // A later fragment quotes no ports.
        let later_fragment = u16::from_be(ip.frag_off) & 0x1fff != 0;
        if ip.version_ihl >> 4 != 4
            || header_len < core::mem::size_of::<Ipv4Hdr>()
            || later_fragment
        {
            return None;
        }
        flow.src_addr = [ip.saddr, 0, 0, 0];
        flow.dst_addr = [ip.daddr, 0, 0, 0];
        flow.protocol = ip.protocol;
        l3_offset + header_len
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3_offset).ok()?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        if u32::from_be(ip.version_flow) >> 28 != 6 {
            return None;
        }
        flow.src_addr = ip.saddr;
        flow.dst_addr = ip.daddr;
        flow.protocol = ip.next_header;
        l3_offset + core::mem::size_of::<Ipv6Hdr>()
    };
    if flow.protocol != PROTO_TCP && flow.protocol != PROTO_UDP {
        return None;
    }
    // The first 8 bytes of the L4 header: ports, and UDP's length and checksum.
    let head: *const [u16; 4] = ptr_at(ctx, l4_offset).ok()?;
    // SAFETY: bounds checked by ptr_at.
    let head = unsafe { &*head };
    flow.src_port = head[0];
    flow.dst_port = head[1];
    Some(Quoted {
        l3_offset,
        l4_offset,
        flow,
    })
}

/// An ICMP error: about a packet a VIP sent (the quote runs from the VIP to a client), or
/// about one NAT sent to a backend (from the client to the backend).
#[inline(always)]
fn error(ctx: &XdpContext, outer: &Outer) -> Result<IcmpVerdict, Reason> {
    let Some(quoted) = parse_quoted(ctx, outer) else {
        return Ok((xdp_action::XDP_PASS, IcmpReason::Malformed));
    };
    // The error went to the quoted packet's source; anything else is not about its flow.
    if quoted.flow.src_addr != outer.dst {
        return Err(Reason::PassOtherProtocol);
    }
    let key = ServiceKey {
        addr: quoted.flow.src_addr,
        port: quoted.flow.src_port,
        protocol: quoted.flow.protocol,
        family: quoted.flow.family,
    };
    // SAFETY: the value is copied out at once.
    let Some(service) = (unsafe { SERVICES.get(&key) }).copied() else {
        return error_from_backend_side(ctx, outer, &quoted);
    };
    if service.flags & SERVICE_L7 != 0 {
        return Err(Reason::PassL7);
    }
    // The flow as the client sends it.
    let client = reversed(&quoted.flow);
    let nat = service.flags & SERVICE_NAT != 0;
    let Some((id, backend, nat_port)) = steer::flow_backend(&client, &service, !nat) else {
        return Ok((xdp_action::XDP_PASS, IcmpReason::ErrorNoFlow));
    };
    let route = Route {
        family: outer.family,
        protocol: if outer.family == FAMILY_V4 {
            ICMP_PROTO_V4
        } else {
            ICMP_PROTO_V6
        },
        src: &outer.src,
        dst: &backend.addr,
        src_port: 0,
        dst_port: 0,
        ip_len: outer.ip_len,
    };
    let now = crate::conntrack::now_ns();
    let hop = transmit::backend_hop(ctx, &route, id, backend.generation, !nat, now)?;
    if !nat {
        // DSR: the backend holds the VIP, the error's destination; only the MACs change.
        return Ok((transmit::transmit(ctx, &hop)?, IcmpReason::ErrorSteered));
    }
    check_ttl(ctx, outer)?;
    // The quote becomes the packet the backend sent: from its address and port to the
    // client at the port the backend saw.
    let rewrite = Rewrite {
        end: End::Source,
        addr: &backend.addr,
        port: backend.port,
        peer_port: nat_port,
        outer_end: End::Destination,
        outer_addr: &backend.addr,
    };
    translate(ctx, outer, &quoted, &rewrite)?;
    Ok((transmit::transmit(ctx, &hop)?, IcmpReason::ErrorTranslated))
}

/// An error about a packet NAT sent to a backend (client to backend), sent by a router on
/// the way or by the backend: the quote becomes the client's packet to the VIP again, and
/// an error from the backend itself comes from the VIP.
#[inline(always)]
fn error_from_backend_side(
    ctx: &XdpContext,
    outer: &Outer,
    quoted: &Quoted,
) -> Result<IcmpVerdict, Reason> {
    let nat_in_use = SETTINGS
        .get(SETTING_FLAGS)
        .is_some_and(|flags| flags & SETTING_FLAG_NAT != 0);
    if !nat_in_use {
        return Err(Reason::PassOtherProtocol);
    }
    // The backend's replies to the quoted packet's flow carry the reverse 5-tuple.
    let Some(entry) = NAT_REVERSE.get_ptr(&reversed(&quoted.flow)) else {
        return Err(Reason::PassOtherProtocol);
    };
    // SAFETY: LRU values are plain data; copy it out before using it.
    let entry = unsafe { *entry };
    check_ttl(ctx, outer)?;
    let outer_addr = if outer.src == quoted.flow.dst_addr {
        &entry.vip
    } else {
        &outer.src
    };
    let rewrite = Rewrite {
        end: End::Destination,
        addr: &entry.vip,
        port: entry.vip_port,
        peer_port: entry.client_port,
        outer_end: End::Source,
        outer_addr,
    };
    translate(ctx, outer, quoted, &rewrite)?;
    let hop = NextHop {
        ifindex: entry.client_ifindex,
        smac: entry.local_mac,
        dmac: entry.client_mac,
        via: outer.dst,
        mtu: u16::MAX,
    };
    Ok((
        transmit::transmit(ctx, &hop)?,
        IcmpReason::ErrorTranslatedReply,
    ))
}

/// The reverse direction of `flow`.
#[inline(always)]
fn reversed(flow: &FlowKey) -> FlowKey {
    FlowKey {
        src_addr: flow.dst_addr,
        dst_addr: flow.src_addr,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        protocol: flow.protocol,
        family: flow.family,
        _pad: [0; 2],
    }
}

/// Fails with `PassTtlExpired` when forwarding would expire the error (the stack then drops
/// it: no ICMP is sent about an ICMP error).
#[inline(always)]
fn check_ttl(ctx: &XdpContext, outer: &Outer) -> Result<(), Reason> {
    let ttl = if outer.family == FAMILY_V4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, outer.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).ttl }
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, outer.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).hop_limit }
    };
    if ttl <= 1 {
        return Err(Reason::PassTtlExpired);
    }
    Ok(())
}

/// How an error is translated: one end of the quoted packet gets `addr`:`port` and its
/// other end the port `peer_port`; the outer header's `outer_end` gets `outer_addr`.
struct Rewrite<'a> {
    end: End,
    addr: &'a WireAddr,
    port: u16,
    peer_port: u16,
    outer_end: End,
    outer_addr: &'a WireAddr,
}

/// Rewrites the quoted packet and the outer header as `rw` says, decrements the TTL and
/// brings every checksum along: the quoted IPv4 header's, the quoted TCP/UDP checksum when
/// the quote holds it, the ICMP checksum over all of that (and, for ICMPv6, its
/// pseudo-header) and the outer IPv4 header's.
#[inline(always)]
fn translate(ctx: &XdpContext, outer: &Outer, quoted: &Quoted, rw: &Rewrite) -> Result<(), Reason> {
    let icmp: *mut IcmpHdr = ptr_at(ctx, outer.offset)?;
    // SAFETY: bounds checked by ptr_at.
    let mut icmp_check = unsafe { (*icmp).check };
    let (old_addr, old_port, old_peer_port) = match rw.end {
        End::Source => (
            quoted.flow.src_addr,
            quoted.flow.src_port,
            quoted.flow.dst_port,
        ),
        End::Destination => (
            quoted.flow.dst_addr,
            quoted.flow.dst_port,
            quoted.flow.src_port,
        ),
    };

    // The quoted L4 checksum covers the quoted addresses (pseudo-header) and ports. UDP's
    // lies in the 8 bytes every quote holds; TCP's only in longer quotes.
    let l4_check_offset = if quoted.flow.protocol == PROTO_TCP {
        TCP_CHECK_OFFSET
    } else {
        UDP_CHECK_OFFSET
    };
    if let Ok(l4_check) = ptr_at::<u16>(ctx, quoted.l4_offset + l4_check_offset) {
        // SAFETY: bounds checked by ptr_at.
        let old = unsafe { *l4_check };
        // An IPv4 UDP datagram may carry no checksum (0): it stays so.
        let none = old == 0 && quoted.flow.protocol == PROTO_UDP && quoted.flow.family == FAMILY_V4;
        if !none {
            let mut new = if quoted.flow.family == FAMILY_V4 {
                csum::replace4(old, old_addr[0], rw.addr[0])
            } else {
                csum::replace16(old, &old_addr, rw.addr)
            };
            new = csum::replace2(new, old_port, rw.port);
            new = csum::replace2(new, old_peer_port, rw.peer_port);
            if new == 0 && quoted.flow.protocol == PROTO_UDP {
                new = 0xffff;
            }
            icmp_check = csum::replace2(icmp_check, old, new);
            // SAFETY: bounds checked by ptr_at.
            unsafe { *l4_check = new };
        }
    }

    let ports: *mut [u16; 2] = ptr_at(ctx, quoted.l4_offset)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        match rw.end {
            End::Source => {
                (*ports)[0] = rw.port;
                (*ports)[1] = rw.peer_port;
            }
            End::Destination => {
                (*ports)[1] = rw.port;
                (*ports)[0] = rw.peer_port;
            }
        }
    }
    icmp_check = csum::replace2(icmp_check, old_port, rw.port);
    icmp_check = csum::replace2(icmp_check, old_peer_port, rw.peer_port);

    if quoted.flow.family == FAMILY_V4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, quoted.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        let check = csum::replace4(ip.check, old_addr[0], rw.addr[0]);
        icmp_check = csum::replace2(icmp_check, ip.check, check);
        icmp_check = csum::replace4(icmp_check, old_addr[0], rw.addr[0]);
        ip.check = check;
        match rw.end {
            End::Source => ip.saddr = rw.addr[0],
            End::Destination => ip.daddr = rw.addr[0],
        }
        set_outer_v4(ctx, outer, rw)?;
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, quoted.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        icmp_check = csum::replace16(icmp_check, &old_addr, rw.addr);
        match rw.end {
            End::Source => ip.saddr = *rw.addr,
            End::Destination => ip.daddr = *rw.addr,
        }
        // ICMPv6's checksum covers the outer addresses too.
        let old_outer = match rw.outer_end {
            End::Source => outer.src,
            End::Destination => outer.dst,
        };
        icmp_check = csum::replace16(icmp_check, &old_outer, rw.outer_addr);
        set_outer_v6(ctx, outer, rw)?;
    }
    // SAFETY: bounds checked by ptr_at above.
    unsafe { (*icmp).check = icmp_check };
    Ok(())
}

#[inline(always)]
fn set_outer_v4(ctx: &XdpContext, outer: &Outer, rw: &Rewrite) -> Result<(), Reason> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, outer.l3_offset)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &mut *ip };
    let old = match rw.outer_end {
        End::Source => ip.saddr,
        End::Destination => ip.daddr,
    };
    let mut check = csum::replace4(ip.check, old, rw.outer_addr[0]);
    let old_ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
    ip.ttl -= 1;
    check = csum::replace2(
        check,
        old_ttl_word,
        u16::from_ne_bytes([ip.ttl, ip.protocol]),
    );
    ip.check = check;
    match rw.outer_end {
        End::Source => ip.saddr = rw.outer_addr[0],
        End::Destination => ip.daddr = rw.outer_addr[0],
    }
    Ok(())
}

#[inline(always)]
fn set_outer_v6(ctx: &XdpContext, outer: &Outer, rw: &Rewrite) -> Result<(), Reason> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, outer.l3_offset)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &mut *ip };
    ip.hop_limit -= 1;
    match rw.outer_end {
        End::Source => ip.saddr = *rw.outer_addr,
        End::Destination => ip.daddr = *rw.outer_addr,
    }
    Ok(())
}

/// An echo request: for a VIP, answered, passed or dropped as `SETTING_VIP_ECHO` says; for
/// any other address, passed as before.
#[inline(always)]
fn echo(ctx: &XdpContext, outer: &Outer) -> Result<IcmpVerdict, Reason> {
    let key = VipKey {
        addr: outer.dst,
        family: outer.family,
        _pad: [0; 3],
    };
    // SAFETY: only whether the key is there is read.
    if unsafe { VIPS.get(&key) }.is_none() {
        return Err(Reason::PassOtherProtocol);
    }
    let setting = SETTINGS.get(SETTING_VIP_ECHO).copied().unwrap_or(0);
    if setting == VIP_ECHO_DROP {
        return Ok((xdp_action::XDP_DROP, IcmpReason::EchoDropped));
    }
    if setting != VIP_ECHO_REPLY {
        return Ok((xdp_action::XDP_PASS, IcmpReason::EchoPassed));
    }
    let icmp: *mut IcmpHdr = ptr_at(ctx, outer.offset)?;
    // SAFETY: bounds checked by ptr_at.
    let icmp = unsafe { &mut *icmp };
    let reply = if outer.family == FAMILY_V4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, outer.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        // Options (record route, timestamps) would need filling in: the stack does that.
        if ip.version_ihl & 0x0f != 5 {
            return Ok((xdp_action::XDP_PASS, IcmpReason::EchoPassed));
        }
        // Swapping the addresses leaves the header checksum as it was.
        core::mem::swap(&mut ip.saddr, &mut ip.daddr);
        let old_ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
        ip.ttl = REPLY_TTL;
        let ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
        ip.check = csum::replace2(ip.check, old_ttl_word, ttl_word);
        V4_ECHO_REPLY
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, outer.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        // The pseudo-header's sum does not change when its addresses swap.
        core::mem::swap(&mut ip.saddr, &mut ip.daddr);
        ip.hop_limit = REPLY_TTL;
        V6_ECHO_REPLY
    };
    let old_word = u16::from_ne_bytes([icmp.kind, icmp.code]);
    icmp.kind = reply;
    icmp.check = csum::replace2(
        icmp.check,
        old_word,
        u16::from_ne_bytes([icmp.kind, icmp.code]),
    );
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { core::mem::swap(&mut (*eth).src, &mut (*eth).dst) };
    Ok((xdp_action::XDP_TX, IcmpReason::EchoReplied))
}
