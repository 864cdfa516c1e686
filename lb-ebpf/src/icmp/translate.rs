//! The NAT rewrite of an ICMP error: the quoted packet's addresses and ports, the outer
//! header's address and TTL, and every checksum they touch, updated incrementally.

use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, PROTO_TCP, PROTO_UDP, WireAddr};
use lb_common::stats::Reason;

use super::error::Quoted;
use super::{IcmpHdr, Outer};
use crate::csum;
use crate::nat::End;
use crate::parse::{Ipv4Hdr, Ipv6Hdr, TCP_CHECK_OFFSET, UDP_CHECK_OFFSET, ptr_at};

/// How an error is translated: one end of the quoted packet gets `addr`:`port` and its
/// other end the port `peer_port`; the outer header's `outer_end` gets `outer_addr`.
pub(super) struct Rewrite<'a> {
    pub(super) end: End,
    pub(super) addr: &'a WireAddr,
    pub(super) port: u16,
    pub(super) peer_port: u16,
    pub(super) outer_end: End,
    pub(super) outer_addr: &'a WireAddr,
}

/// Rewrites the quoted packet and the outer header as `rw` says, decrements the TTL and
/// brings every checksum along: the quoted IPv4 header's, the quoted TCP/UDP checksum when
/// the quote holds it, the ICMP checksum over all of that (and, for ICMPv6, its
/// pseudo-header) and the outer IPv4 header's.
#[inline(always)]
pub(super) fn translate(
    ctx: &XdpContext,
    outer: &Outer,
    quoted: &Quoted,
    rw: &Rewrite,
) -> Result<(), Reason> {
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
