//! Getting a rewritten frame out: the next hop from the kernel's FIB and neighbour tables
//! (`bpf_fib_lookup`), the MAC rewrite, and XDP_TX or XDP_REDIRECT.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
};
use aya_ebpf::helpers::generated::{bpf_fib_lookup, bpf_redirect};
use aya_ebpf::programs::XdpContext;
use lb_common::addr::{FAMILY_V4, WireAddr};
use lb_common::hop::CachedHop;
use lb_common::limits::NEXT_HOP_TTL_NS;
use lb_common::stats::Reason;

use crate::maps::NEXT_HOPS;
use crate::parse::{EthHdr, ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Where the FIB says a packet goes next.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The next hop's address: the destination itself when it is on a connected network,
    /// otherwise the gateway's.
    pub via: WireAddr,
    /// The route's MTU.
    pub mtu: u16,
}

/// The next hop toward backend `id` for `route`: from the per-CPU cache while fresh,
/// otherwise from the FIB. With `on_link`, a backend behind a gateway is refused (DSR).
/// `now` is `bpf_ktime_get_coarse_ns`, read once per packet by the caller.
#[inline(always)]
pub fn backend_hop(
    ctx: &XdpContext,
    route: &Route,
    id: u32,
    generation: u32,
    on_link: bool,
    now: u64,
) -> Result<NextHop, Reason> {
    let slot = NEXT_HOPS.get_ptr_mut(id);
    if let Some(cached) = slot {
        // SAFETY: a per-CPU slot: nothing else writes it while this program runs here.
        let cached = unsafe { *cached };
        if cached.generation == generation && now < cached.expires_ns {
            if route.ip_len > cached.mtu {
                return Err(Reason::PassNoRoute);
            }
            return Ok(NextHop {
                ifindex: cached.ifindex,
                smac: cached.smac,
                dmac: cached.dmac,
                via: *route.dst,
                mtu: cached.mtu,
            });
        }
    }
    let hop = next_hop(ctx, route)?;
    // A routed next hop would route a DSR packet by its destination, the VIP, straight back.
    if on_link && hop.via != *route.dst {
        return Err(Reason::PassDsrNotOnLink);
    }
    if let Some(cached) = slot {
        // SAFETY: per-CPU slot, as above.
        unsafe {
            *cached = CachedHop {
                expires_ns: now + NEXT_HOP_TTL_NS,
                generation,
                ifindex: hop.ifindex,
                mtu: hop.mtu,
                smac: hop.smac,
                dmac: hop.dmac,
                _pad: [0; 2],
            };
        }
    }
    Ok(hop)
}

/// The fields of a packet the FIB lookup looks at.
pub struct Route<'a> {
    pub family: u8,
    pub protocol: u8,
    pub src: &'a WireAddr,
    pub dst: &'a WireAddr,
    /// Network byte order.
    pub src_port: u16,
    /// Network byte order.
    pub dst_port: u16,
    /// IP length, for the MTU check.
    pub ip_len: u16,
}

/// Looks `route` up as if the packet had arrived on the ingress interface and were being
/// forwarded, which needs forwarding enabled on that interface.
#[inline(always)]
pub fn next_hop(ctx: &XdpContext, route: &Route) -> Result<NextHop, Reason> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (plain integers and unions of them).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.l4_protocol = route.protocol;
    params.sport = route.src_port;
    params.dport = route.dst_port;
    params.__bindgen_anon_1.tot_len = route.ip_len;
    // SAFETY: ctx.ctx points at the kernel's xdp_md for this run.
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if route.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = route.src[0];
        params.__bindgen_anon_4.ipv4_dst = route.dst[0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = *route.src;
        params.__bindgen_anon_4.ipv6_dst = *route.dst;
    }
    // SAFETY: params is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Err(Reason::PassNoNeighbour);
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(Reason::PassNoRoute);
    }
    // SAFETY: the kernel filled the union member of the family we asked for.
    let via = if route.family == FAMILY_V4 {
        [unsafe { params.__bindgen_anon_4.ipv4_dst }, 0, 0, 0]
    } else {
        unsafe { params.__bindgen_anon_4.ipv6_dst }
    };
    // SAFETY: on success the kernel reports the route's MTU in this union member.
    let mtu = unsafe { params.__bindgen_anon_1.mtu_result };
    Ok(NextHop {
        ifindex: params.ifindex,
        smac: params.smac,
        dmac: params.dmac,
        via,
        mtu,
    })
}

/// Rewrites the frame's MACs for `hop` and sends it: back out of the ingress interface
/// (XDP_TX) or out of another one (XDP_REDIRECT).
#[inline(always)]
pub fn transmit(ctx: &XdpContext, hop: &NextHop) -> Result<u32, Reason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the Ethernet header lies inside the frame.
    unsafe {
        (*eth).dst = hop.dmac;
        (*eth).src = hop.smac;
    }
    // SAFETY: ctx.ctx points at the kernel's xdp_md for this run.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if hop.ifindex == ingress {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: plain helper call; it returns XDP_REDIRECT or XDP_ABORTED.
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}
