//! The L4 path: find the packet's service, keep established flows on their backend through
//! the connection table, place new flows by Maglev, and hand the packet to DSR or NAT.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::programs::XdpContext;
use lb_common::addr::host_order;
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::flow::{FlowKey, FlowValue, NatValue};
use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS};
use lb_common::service::{
    SERVICE_L7, SERVICE_NAT, SERVICE_REFUSE_WHEN_EMPTY, ServiceKey, ServiceValue,
};
use lb_common::stats::Reason;

use crate::forward::{self, NextHop, Route};
use crate::maps::{BACKENDS, CONNTRACK, MAGLEV_RINGS, NAT_REVERSE, SERVICES, SETTINGS};
use crate::nat::{self, End};
use crate::parse::{self, EthHdr, Packet};
use crate::stats;

/// A packet's verdict and the reason it is counted under.
pub type Verdict = (u32, Reason);

/// Decides what to do with one frame. `Err(reason)` means pass it up untouched.
#[inline(always)]
pub fn process(ctx: &XdpContext, bytes: u64) -> Result<Verdict, Reason> {
    let pkt = parse::parse(ctx)?;
    let key = ServiceKey {
        addr: pkt.flow.dst_addr,
        port: pkt.flow.dst_port,
        protocol: pkt.flow.protocol,
        family: pkt.flow.family,
    };
    // SAFETY: the value is copied out at once; the map entry may be replaced later.
    let Some(service) = (unsafe { SERVICES.get(&key) }).copied() else {
        return nat_reply(ctx, &pkt, bytes);
    };
    if service.flags & SERVICE_L7 != 0 {
        return Err(Reason::PassL7);
    }
    let Some(placed) = place(&pkt, &service) else {
        if service.flags & SERVICE_REFUSE_WHEN_EMPTY != 0 {
            return Ok((xdp_action::XDP_DROP, Reason::DropNoBackend));
        }
        return Err(Reason::PassNoBackend);
    };
    let nat = service.flags & SERVICE_NAT != 0;
    // The client's path, read before the MACs are rewritten, for the NAT reverse entry.
    let arrival = if nat && placed.new_flow {
        Some(arrival(ctx)?)
    } else {
        None
    };
    let verdict = if nat {
        nat_forward(ctx, &pkt, &placed)?
    } else {
        dsr_forward(ctx, &pkt, &placed)?
    };
    // Remembered only once the packet is really forwarded: a packet passed up (no neighbour
    // yet, TTL) must leave no entry behind, or the NAT reverse entry would never be made.
    if placed.new_flow {
        remember(&pkt, &placed, arrival.as_ref());
    }
    stats::count_flow(service.id, placed.id, bytes, placed.new_flow);
    Ok(verdict)
}

/// The backend a flow is on.
struct Placement {
    id: u32,
    backend: BackendValue,
    /// Maglev placed it just now (new flow, evicted entry, or removed backend).
    new_flow: bool,
}

/// The backend for this packet: the connection table's, if that backend still lives,
/// otherwise Maglev's pick, remembered. `None` when the service has no backend.
#[inline(always)]
fn place(pkt: &Packet, service: &ServiceValue) -> Option<Placement> {
    if let Some(entry) = CONNTRACK.get_ptr(&pkt.flow) {
        // SAFETY: LRU values are plain data; copy it out before looking at it.
        let entry = unsafe { *entry };
        if let Some(backend) = live_backend(entry.backend_id) {
            if backend.generation == entry.backend_generation {
                stats::count(Reason::FlowEstablished, 0);
                return Some(Placement {
                    id: entry.backend_id,
                    backend,
                    new_flow: false,
                });
            }
        }
        stats::count(Reason::FlowResteered, 0);
    } else {
        stats::count(Reason::FlowNew, 0);
    }

    if service.table_size == 0 {
        return None;
    }
    let input = FlowHashInput {
        src_addr: host_order(&pkt.flow.src_addr),
        dst_addr: host_order(&pkt.flow.dst_addr),
        src_port: u16::from_be(pkt.flow.src_port),
        dst_port: u16::from_be(pkt.flow.dst_port),
        protocol: pkt.flow.protocol,
    };
    let slot = maglev_slot(flow_hash(&input, service.hash_seed), service.table_size);
    let id = *MAGLEV_RINGS.get(service.ring_offset.wrapping_add(slot))?;
    let backend = live_backend(id)?;
    Some(Placement {
        id,
        backend,
        new_flow: true,
    })
}

/// How a client's packet arrived: its MACs and interface.
struct Arrival {
    client_mac: [u8; 6],
    local_mac: [u8; 6],
    ifindex: u32,
}

#[inline(always)]
fn arrival(ctx: &XdpContext) -> Result<Arrival, Reason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at; ctx.ctx points at this run's xdp_md.
    unsafe {
        Ok(Arrival {
            client_mac: (*eth).src,
            local_mac: (*eth).dst,
            ifindex: (*ctx.ctx).ingress_ifindex,
        })
    }
}

/// Records a newly placed flow in the connection table and, for NAT (`arrival` given), the
/// reverse entry its backend's replies are translated by. `pkt` holds the packet as it arrived.
#[inline(always)]
fn remember(pkt: &Packet, placed: &Placement, arrival: Option<&Arrival>) {
    let entry = FlowValue {
        backend_id: placed.id,
        backend_generation: placed.backend.generation,
    };
    if CONNTRACK.insert(&pkt.flow, &entry, 0).is_err() {
        stats::count(Reason::FlowInsertFailed, 0);
    }
    let Some(arrival) = arrival else {
        return;
    };
    let backend = &placed.backend;
    let reply = FlowKey {
        src_addr: backend.addr,
        dst_addr: pkt.flow.src_addr,
        src_port: backend.port,
        dst_port: pkt.flow.src_port,
        protocol: pkt.flow.protocol,
        family: pkt.flow.family,
        _pad: [0; 2],
    };
    let value = NatValue {
        vip: pkt.flow.dst_addr,
        vip_port: pkt.flow.dst_port,
        client_mac: arrival.client_mac,
        local_mac: arrival.local_mac,
        _pad: [0; 2],
        backend_id: placed.id,
        client_ifindex: arrival.ifindex,
    };
    if NAT_REVERSE.insert(&reply, &value, 0).is_err() {
        stats::count(Reason::FlowInsertFailed, 0);
    }
}

#[inline(always)]
fn live_backend(id: u32) -> Option<BackendValue> {
    let backend = *BACKENDS.get(id)?;
    (backend.flags & BACKEND_ACTIVE != 0).then_some(backend)
}

/// Layer-2 direct server return: only the MACs change; the backend holds the VIP.
#[inline(always)]
fn dsr_forward(ctx: &XdpContext, pkt: &Packet, placed: &Placement) -> Result<Verdict, Reason> {
    let route = Route {
        family: pkt.flow.family,
        protocol: pkt.flow.protocol,
        src: &pkt.flow.src_addr,
        dst: &placed.backend.addr,
        src_port: pkt.flow.src_port,
        dst_port: pkt.flow.dst_port,
        ip_len: pkt.ip_len,
    };
    let hop = forward::backend_hop(ctx, &route, placed.id, placed.backend.generation, true)?;
    Ok((forward::transmit(ctx, &hop)?, Reason::ForwardDsr))
}

/// Destination NAT to the backend; the reverse entry lets its replies be translated back.
#[inline(always)]
fn nat_forward(ctx: &XdpContext, pkt: &Packet, placed: &Placement) -> Result<Verdict, Reason> {
    let backend = &placed.backend;
    let route = Route {
        family: pkt.flow.family,
        protocol: pkt.flow.protocol,
        src: &pkt.flow.src_addr,
        dst: &backend.addr,
        src_port: pkt.flow.src_port,
        dst_port: backend.port,
        ip_len: pkt.ip_len,
    };
    let hop = forward::backend_hop(ctx, &route, placed.id, backend.generation, false)?;
    nat::check_ttl(ctx, pkt)?;
    nat::rewrite(ctx, pkt, End::Destination, &backend.addr, backend.port)?;
    Ok((forward::transmit(ctx, &hop)?, Reason::ForwardNat))
}

/// A packet for no service: if it is a NAT backend's reply, give it the VIP back as its
/// source and send it to the client.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, bytes: u64) -> Result<Verdict, Reason> {
    let nat_in_use = SETTINGS
        .get(SETTING_FLAGS)
        .is_some_and(|flags| flags & SETTING_FLAG_NAT != 0);
    if !nat_in_use {
        return Err(Reason::PassNoService);
    }
    let Some(entry) = NAT_REVERSE.get_ptr(&pkt.flow) else {
        return Err(Reason::PassNoService);
    };
    // SAFETY: LRU values are plain data; copy it out before using it.
    let entry = unsafe { *entry };
    // Back the way the client's packet came: no route lookup per reply.
    let hop = NextHop {
        ifindex: entry.client_ifindex,
        smac: entry.local_mac,
        dmac: entry.client_mac,
        via: pkt.flow.dst_addr,
        mtu: u16::MAX,
    };
    nat::check_ttl(ctx, pkt)?;
    nat::rewrite(ctx, pkt, End::Source, &entry.vip, entry.vip_port)?;
    stats::count_backend(entry.backend_id, bytes, 0);
    Ok((forward::transmit(ctx, &hop)?, Reason::ForwardNatReply))
}
