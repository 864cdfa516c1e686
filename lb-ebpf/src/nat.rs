//! Destination NAT toward a backend and source NAT of its replies back to the VIP, with
//! incremental checksum updates. The TTL (hop limit) is decremented, as any router does.

use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, PROTO_TCP, WireAddr};
use lb_common::stats::Reason;

use crate::csum;
use crate::parse::{Ipv4Hdr, Ipv6Hdr, Packet, TCP_CHECK_OFFSET, UDP_CHECK_OFFSET, ptr_at};

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Destination address and port (client to backend).
    Destination,
    /// Source address and port (backend reply to client).
    Source,
}

/// Fails with `PassTtlExpired` when forwarding would expire the packet, so the stack can
/// answer with ICMP time exceeded.
#[inline(always)]
pub fn check_ttl(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    let ttl = if pkt.flow.family == FAMILY_V4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, pkt.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).ttl }
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, pkt.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).hop_limit }
    };
    if ttl <= 1 {
        return Err(Reason::PassTtlExpired);
    }
    Ok(())
}

/// Rewrites one end of the packet to `addr`:`port` and the other end's port to `peer_port`
/// (wire layout, network byte order), decrements the TTL and fixes the IP and L4 checksums.
/// The peer port is the client's: the one the backend sees may differ (see
/// `FlowValue::nat_port`). Call `check_ttl` first.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    end: End,
    addr: &WireAddr,
    port: u16,
    peer_port: u16,
) -> Result<(), Reason> {
    let (old_addr, old_port, old_peer_port) = match end {
        End::Destination => (pkt.flow.dst_addr, pkt.flow.dst_port, pkt.flow.src_port),
        End::Source => (pkt.flow.src_addr, pkt.flow.src_port, pkt.flow.dst_port),
    };
    // Almost always equal: skip the checksum update then (it could also turn 0 into 0xffff).
    let peer_changes = peer_port != old_peer_port;
    let l4_check = l4_check_ptr(ctx, pkt)?;
    // SAFETY: bounds checked by ptr_at in l4_check_ptr.
    let mut check = unsafe { *l4_check };
    // IPv4 UDP may carry no checksum (0): leave it so.
    let has_l4_check = pkt.flow.protocol == PROTO_TCP || check != 0 || pkt.flow.family != FAMILY_V4;

    if pkt.flow.family == FAMILY_V4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        let mut ip_check = csum::replace4(ip.check, old_addr[0], addr[0]);
        let old_ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
        ip.ttl -= 1;
        ip_check = csum::replace2(
            ip_check,
            old_ttl_word,
            u16::from_ne_bytes([ip.ttl, ip.protocol]),
        );
        ip.check = ip_check;
        match end {
            End::Destination => ip.daddr = addr[0],
            End::Source => ip.saddr = addr[0],
        }
        check = csum::replace4(check, old_addr[0], addr[0]);
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_offset)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        ip.hop_limit -= 1;
        match end {
            End::Destination => ip.daddr = *addr,
            End::Source => ip.saddr = *addr,
        }
        check = csum::replace16(check, &old_addr, addr);
    }
    check = csum::replace2(check, old_port, port);
    if peer_changes {
        check = csum::replace2(check, old_peer_port, peer_port);
    }

    // Both TCP and UDP keep the ports in their first four bytes.
    let ports: *mut [u16; 2] = ptr_at(ctx, pkt.l4_offset)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        match end {
            End::Destination => {
                (*ports)[1] = port;
                (*ports)[0] = peer_port;
            }
            End::Source => {
                (*ports)[0] = port;
                (*ports)[1] = peer_port;
            }
        }
    }
    if has_l4_check {
        // A computed UDP checksum of zero is sent as all ones (RFC 768).
        if check == 0 && pkt.flow.protocol != PROTO_TCP {
            check = 0xffff;
        }
        // SAFETY: bounds checked by ptr_at in l4_check_ptr.
        unsafe { *l4_check = check };
    }
    Ok(())
}

#[inline(always)]
fn l4_check_ptr(ctx: &XdpContext, pkt: &Packet) -> Result<*mut u16, Reason> {
    let offset = if pkt.flow.protocol == PROTO_TCP {
        TCP_CHECK_OFFSET
    } else {
        UDP_CHECK_OFFSET
    };
    ptr_at(ctx, pkt.l4_offset + offset)
}
