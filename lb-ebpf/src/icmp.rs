//! ICMP on the data path. Errors about a balanced flow (IPv4 destination unreachable and time
//! exceeded, ICMPv6 destination unreachable, packet too big and time exceeded) follow the
//! packet they quote: to the flow's backend (DSR), translated to the backend's addresses
//! (NAT), or, when they quote a packet NAT sent to a backend, translated back for the client.
//! Echo requests to a VIP are answered, passed or dropped as the agent's setting says. This
//! file holds the entry and the outer headers; `error` the errors, `translate` their NAT
//! rewrite, `echo` the echo requests.

mod echo;
mod error;
mod translate;

use aya_ebpf::bindings::{xdp_action, xdp_md};
use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, FAMILY_V6, WireAddr};
use lb_common::icmp::{ICMP_PROTO_V4, ICMP_PROTO_V6, IcmpReason};
use lb_common::stats::Reason;

use crate::parse::{self, ETH_P_IP, Ipv4Hdr, Ipv6Hdr, ptr_at};
use crate::stats;

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
        return error::error(ctx, &outer);
    }
    let is_echo = code == 0 && kind == if v4 { V4_ECHO_REQUEST } else { V6_ECHO_REQUEST };
    if is_echo {
        return echo::echo(ctx, &outer);
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
