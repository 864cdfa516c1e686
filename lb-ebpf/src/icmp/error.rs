//! ICMP errors: the quoted packet, and where an error about it goes.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, PROTO_TCP, PROTO_UDP};
use lb_common::flow::FlowKey;
use lb_common::icmp::{ICMP_PROTO_V4, ICMP_PROTO_V6, IcmpReason};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS};
use lb_common::service::{SERVICE_L7, SERVICE_NAT, ServiceKey};
use lb_common::stats::Reason;

use super::translate::{Rewrite, translate};
use super::{IcmpHdr, IcmpVerdict, Outer};
use crate::maps::{NAT_REVERSE, SERVICES, SETTINGS};
use crate::nat::End;
use crate::parse::{Ipv4Hdr, Ipv6Hdr, ptr_at};
use crate::steer;
use crate::transmit::{self, NextHop, Route};

/// The packet an ICMP error quotes: its IP header, and at least the first 8 bytes of its
/// TCP/UDP header (RFC 792 and 4443 promise those).
pub(super) struct Quoted {
    pub(super) l3_offset: usize,
    pub(super) l4_offset: usize,
    /// The quoted 5-tuple in the quoted packet's direction.
    pub(super) flow: FlowKey,
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
pub(super) fn error(ctx: &XdpContext, outer: &Outer) -> Result<IcmpVerdict, Reason> {
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
