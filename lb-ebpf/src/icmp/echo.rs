//! Echo requests to a VIP: answered in place (addresses and MACs swapped, type and checksum
//! fixed), passed or dropped, as `SETTING_VIP_ECHO` says.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::programs::XdpContext;
use lb_common::addr::FAMILY_V4;
use lb_common::icmp::{IcmpReason, VIP_ECHO_DROP, VIP_ECHO_REPLY, VipKey};
use lb_common::limits::SETTING_VIP_ECHO;
use lb_common::stats::Reason;

use super::{IcmpHdr, IcmpVerdict, Outer, REPLY_TTL, V4_ECHO_REPLY, V6_ECHO_REPLY};
use crate::csum;
use crate::maps::{SETTINGS, VIPS};
use crate::parse::{EthHdr, Ipv4Hdr, Ipv6Hdr, ptr_at};

/// An echo request: for a VIP, answered, passed or dropped as `SETTING_VIP_ECHO` says; for
/// any other address, passed as before.
#[inline(always)]
pub(super) fn echo(ctx: &XdpContext, outer: &Outer) -> Result<IcmpVerdict, Reason> {
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
