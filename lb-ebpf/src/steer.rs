//! The L4 path: find the packet's service, keep established flows on their backend through
//! the connection table (which follows TCP and times entries out), place new flows by Maglev,
//! and hand the packet to DSR or NAT.

use aya_ebpf::bindings::{BPF_ANY, xdp_action, xdp_md};
use aya_ebpf::programs::XdpContext;
use lb_common::addr::PROTO_TCP;
use lb_common::addr::host_order;
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::conntrack::{TCP_FIN, TCP_RST, after_client_packet, is_opening_syn};
use lb_common::flow::{FlowKey, NatValue};
use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::limits::{SETTING_FLAG_NAT, SETTING_FLAGS, nat_source_port_bit};
use lb_common::service::{
    SERVICE_L7, SERVICE_NAT, SERVICE_REFUSE_WHEN_EMPTY, ServiceKey, ServiceValue,
};
use lb_common::stats::Reason;

use crate::conntrack::{self, Found};
use crate::flood;
use crate::maps::{
    BACKENDS, CONNTRACK, MAGLEV_RINGS, NAT_REVERSE, NAT_SOURCE_PORTS, SERVICES, SETTINGS,
};
use crate::nat::{self, End};
use crate::parse::{self, EthHdr, Packet};
use crate::stats;
use crate::transmit::{self, NextHop, Route};

/// A packet's verdict and the reason it is counted under.
pub type Verdict = (u32, Reason);

/// The TCP/UDP path (and frames that are not IP or cut short): decides what to do with the
/// frame, counts it and returns its verdict. A BPF function of its own (see `main`).
#[inline(never)]
pub fn handle(ctx: *mut xdp_md, bytes: u64) -> u32 {
    let ctx = XdpContext::new(ctx);
    let verdict = parse::parse(&ctx).and_then(|pkt| steer(&ctx, &pkt, bytes));
    match verdict {
        Ok((action, reason)) => {
            stats::count(reason, bytes);
            action
        }
        Err(reason) => {
            stats::count(reason, bytes);
            xdp_action::XDP_PASS
        }
    }
}

/// A TCP or UDP packet: for a service, to its flow's backend; otherwise perhaps a NAT reply.
/// `Err(reason)` means pass it up untouched.
#[inline(always)]
fn steer(ctx: &XdpContext, pkt: &Packet, bytes: u64) -> Result<Verdict, Reason> {
    let key = ServiceKey {
        addr: pkt.flow.dst_addr,
        port: pkt.flow.dst_port,
        protocol: pkt.flow.protocol,
        family: pkt.flow.family,
    };
    // SAFETY: the value is copied out at once; the map entry may be replaced later.
    let Some(service) = (unsafe { SERVICES.get(&key) }).copied() else {
        return nat_reply(ctx, pkt, bytes);
    };
    if service.flags & SERVICE_L7 != 0 {
        return Err(Reason::PassL7);
    }
    let now = conntrack::now_ns();
    let nat = service.flags & SERVICE_NAT != 0;
    let Some(mut placed) = place(pkt, &service, !nat, now) else {
        if service.flags & SERVICE_REFUSE_WHEN_EMPTY != 0 {
            return Ok((xdp_action::XDP_DROP, Reason::DropNoBackend));
        }
        return Err(Reason::PassNoBackend);
    };
    // A source opening flows faster than its rate allows loses the excess. Only openings
    // count: a TCP packet without SYN on no entry belongs to a flow already open.
    if placed.opening && !flood::source_admits(&pkt.flow, now) {
        return Ok((xdp_action::XDP_DROP, Reason::DropSourceRate));
    }
    // The client's path, read before the MACs are rewritten, for the NAT reverse entry.
    let arrival = if nat && placed.new_flow {
        placed.nat_port = conntrack::nat_port(&pkt.flow, &placed.backend, placed.hash);
        Some(arrival(ctx)?)
    } else {
        None
    };
    let verdict = if nat {
        nat_forward(ctx, pkt, &placed, now)
    } else {
        dsr_forward(ctx, pkt, &placed, now)
    };
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(reason) => {
            if placed.entered {
                let _ = CONNTRACK.remove(&pkt.flow);
            }
            return Err(reason);
        }
    };
    // Remembered only once the packet is really forwarded: a packet passed up (no neighbour
    // yet, TTL) must leave no entry behind, or the NAT reverse entry would never be made.
    if placed.new_flow {
        remember(pkt, &placed, arrival.as_ref(), !nat, now);
    }
    stats::count_flow(service.id, placed.id, bytes, placed.new_flow);
    Ok(verdict)
}

/// The backend a flow is on.
struct Placement {
    id: u32,
    backend: BackendValue,
    /// Maglev placed it just now (new flow, evicted, expired or reopened entry, or removed
    /// backend).
    new_flow: bool,
    /// NAT: the source port the backend sees (network byte order); chosen for new flows.
    nat_port: u16,
    /// The flow hash Maglev used (new flows only).
    hash: u32,
    /// Maglev placed a flow its client is opening (a UDP flow, or a TCP SYN) with no entry
    /// in force: the per-source new-flow limit applies.
    opening: bool,
    /// Its connection-table entry is already made (an opening SYN: see `place`).
    entered: bool,
}

/// The backend for this packet: the connection table's, if the entry is in force and its
/// backend still lives, otherwise Maglev's pick, remembered. `None` when the service has no
/// backend.
#[inline(always)]
fn place(pkt: &Packet, service: &ServiceValue, dsr: bool, now: u64) -> Option<Placement> {
    let tcp = pkt.flow.protocol == PROTO_TCP;
    let mut opening = !tcp || is_opening_syn(pkt.tcp_flags);
    // A DSR flow's opening SYN, the common new flow: Maglev's pick goes into the table with
    // one insert that fails when the tuple has an entry already, instead of a lookup that
    // almost never hits before the insert (its miss cost about 85 ns). Otherwise (an entry
    // exists, a per-source rate is set, this CPU's new-flow rate is reached) the lookup
    // decides as ever. `steer` removes the entry again if the packet is passed up.
    let pick = if dsr && tcp && opening && !flood::source_rate_set() && flood::would_track(now) {
        maglev(&pkt.flow, service)
    } else {
        None
    };
    if let Some((id, backend, hash)) = pick
        && conntrack::enter(&pkt.flow, id, &backend, pkt.tcp_flags, now)
    {
        stats::count(Reason::FlowNew, 0);
        return Some(Placement {
            id,
            backend,
            new_flow: true,
            nat_port: pkt.flow.src_port,
            hash,
            opening: true,
            entered: true,
        });
    }
    match conntrack::lookup(&pkt.flow, pkt.tcp_flags, dsr, now) {
        Found::Live(entry) => {
            if let Some(backend) = live_backend(entry.backend_id)
                && backend.generation == entry.backend_generation
            {
                stats::count(Reason::FlowEstablished, 0);
                return Some(Placement {
                    id: entry.backend_id,
                    backend,
                    new_flow: false,
                    nat_port: entry.nat_port,
                    hash: 0,
                    opening: false,
                    entered: false,
                });
            }
            stats::count(Reason::FlowResteered, 0);
            opening = false;
        }
        Found::Missing => stats::count(Reason::FlowNew, 0),
        Found::Expired => stats::count(Reason::FlowExpired, 0),
        Found::Reopened => stats::count(Reason::FlowReopened, 0),
    }

    let (id, backend, hash) = maglev(&pkt.flow, service)?;
    Some(Placement {
        id,
        backend,
        new_flow: true,
        nat_port: pkt.flow.src_port,
        hash,
        opening,
        entered: false,
    })
}

/// Maglev's pick for `flow`: the backend id, the backend, and the flow hash. `None` when
/// the service has no backend.
#[inline(always)]
fn maglev(flow: &FlowKey, service: &ServiceValue) -> Option<(u32, BackendValue, u32)> {
    if service.table_size == 0 {
        return None;
    }
    let input = FlowHashInput {
        src_addr: host_order(&flow.src_addr),
        dst_addr: host_order(&flow.dst_addr),
        src_port: u16::from_be(flow.src_port),
        dst_port: u16::from_be(flow.dst_port),
        protocol: flow.protocol,
    };
    let hash = flow_hash(&input, service.hash_seed);
    let slot = maglev_slot(hash, service.table_size);
    let id = *MAGLEV_RINGS.get(service.ring_offset.wrapping_add(slot))?;
    Some((id, live_backend(id)?, hash))
}

/// The backend an ICMP error about `flow` (client to VIP) goes to, leaving the flow's entry
/// as it is: the connection table's, else (DSR only) Maglev's pick, where the flow's next
/// packet would go. With the source port the backend sees. `None`: a NAT flow with no entry,
/// or no backend.
#[inline(always)]
pub fn flow_backend(
    flow: &FlowKey,
    service: &ServiceValue,
    dsr: bool,
) -> Option<(u32, BackendValue, u16)> {
    if let Some(entry) = conntrack::peek(flow)
        && let Some(backend) = live_backend(entry.backend_id)
        && backend.generation == entry.backend_generation
    {
        return Some((entry.backend_id, backend, entry.nat_port));
    }
    if !dsr {
        return None;
    }
    let (id, backend, _) = maglev(flow, service)?;
    Some((id, backend, flow.src_port))
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
fn remember(pkt: &Packet, placed: &Placement, arrival: Option<&Arrival>, dsr: bool, now: u64) {
    // Above the per-CPU new-flow rate (a flood), the flow goes on without an entry: Maglev
    // places its next packets the same way, and established flows keep theirs.
    // An entered flow fits this CPU's rate (`place` checked) and is only counted here.
    if !flood::may_track(now) {
        stats::count(Reason::FlowNotTracked, 0);
    } else if !placed.entered
        && !conntrack::insert(
            &pkt.flow,
            placed.id,
            &placed.backend,
            placed.nat_port,
            after_client_packet(0, pkt.tcp_flags, dsr),
            now,
            BPF_ANY,
        )
    {
        stats::count(Reason::FlowInsertFailed, 0);
    }
    let Some(arrival) = arrival else {
        return;
    };
    let reply = conntrack::reply_key(&pkt.flow, &placed.backend, placed.nat_port);
    let value = NatValue {
        vip: pkt.flow.dst_addr,
        vip_port: pkt.flow.dst_port,
        client_mac: arrival.client_mac,
        local_mac: arrival.local_mac,
        client_port: pkt.flow.src_port,
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
fn dsr_forward(
    ctx: &XdpContext,
    pkt: &Packet,
    placed: &Placement,
    now: u64,
) -> Result<Verdict, Reason> {
    let route = Route {
        family: pkt.flow.family,
        protocol: pkt.flow.protocol,
        src: &pkt.flow.src_addr,
        dst: &placed.backend.addr,
        src_port: pkt.flow.src_port,
        dst_port: pkt.flow.dst_port,
        ip_len: pkt.ip_len,
    };
    let generation = placed.backend.generation;
    let hop = transmit::backend_hop(ctx, &route, placed.id, generation, true, now)?;
    Ok((transmit::transmit(ctx, &hop)?, Reason::ForwardDsr))
}

/// Destination NAT to the backend; the reverse entry lets its replies be translated back.
#[inline(always)]
fn nat_forward(
    ctx: &XdpContext,
    pkt: &Packet,
    placed: &Placement,
    now: u64,
) -> Result<Verdict, Reason> {
    let backend = &placed.backend;
    let route = Route {
        family: pkt.flow.family,
        protocol: pkt.flow.protocol,
        src: &pkt.flow.src_addr,
        dst: &backend.addr,
        src_port: placed.nat_port,
        dst_port: backend.port,
        ip_len: pkt.ip_len,
    };
    let hop = transmit::backend_hop(ctx, &route, placed.id, backend.generation, false, now)?;
    nat::check_ttl(ctx, pkt)?;
    let (addr, port) = (&backend.addr, backend.port);
    nat::rewrite(ctx, pkt, End::Destination, addr, port, placed.nat_port)?;
    Ok((transmit::transmit(ctx, &hop)?, Reason::ForwardNat))
}

/// A packet for no service: if it is a NAT backend's reply, give it the VIP back as its
/// source (and the client its own port back) and send it to the client. A FIN or RST in it
/// moves the client flow's connection-table state.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, bytes: u64) -> Result<Verdict, Reason> {
    let nat_in_use = SETTINGS
        .get(SETTING_FLAGS)
        .is_some_and(|flags| flags & SETTING_FLAG_NAT != 0);
    if !nat_in_use || !from_nat_source_port(pkt.flow.src_port) {
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
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        let client = FlowKey {
            src_addr: pkt.flow.dst_addr,
            dst_addr: entry.vip,
            src_port: entry.client_port,
            dst_port: entry.vip_port,
            protocol: pkt.flow.protocol,
            family: pkt.flow.family,
            _pad: [0; 2],
        };
        conntrack::backend_sent(&client, pkt.tcp_flags, conntrack::now_ns());
    }
    let (vip, vip_port) = (&entry.vip, entry.vip_port);
    nat::rewrite(ctx, pkt, End::Source, vip, vip_port, entry.client_port)?;
    stats::count_backend(entry.backend_id, bytes, 0);
    Ok((transmit::transmit(ctx, &hop)?, Reason::ForwardNatReply))
}

/// Whether `port` (network byte order) is one a NAT backend replies from.
#[inline(always)]
fn from_nat_source_port(port: u16) -> bool {
    let (word, bit) = nat_source_port_bit(u16::from_be(port));
    NAT_SOURCE_PORTS.get(word).is_some_and(|w| w & bit != 0)
}
