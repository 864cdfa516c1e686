//! The connection table on the data path: an entry's idle and closing timeouts, its state as
//! TCP packets go by, the entries of new flows, and the source port a NAT backend sees.

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::backend::BackendValue;
use lb_common::conntrack::{
    NAT_PORT_ATTEMPTS, TCP_FIN, TCP_RST, TCP_SYN, after_backend_packet, after_client_packet,
    expired, is_closing, is_opening_syn, nat_port_candidate, needs_refresh, timeout_slot,
};
use lb_common::flow::{FlowKey, FlowValue, NatValue};

use crate::maps::{CONNTRACK, NAT_REVERSE, NEW_ENTRY, SETTINGS};

/// The data path's clock: CLOCK_MONOTONIC_COARSE, the cheapest one the kernel offers XDP.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// What the connection table says about a client-to-VIP packet.
pub enum Found {
    /// An entry in force (its state and last-seen time already moved by this packet).
    Live(FlowValue),
    /// None: a new flow, or one evicted.
    Missing,
    /// One past its idle (or closing) timeout.
    Expired,
    /// A closing one, and this packet is a SYN opening a new connection on the same tuple.
    Reopened,
}

/// Looks `flow` up and, when the entry is in force, moves its state by the packet's
/// `tcp_flags` and refreshes its last-seen time (a write only on a state change or once per
/// granularity, so the established path mostly only reads).
#[inline(always)]
pub fn lookup(flow: &FlowKey, tcp_flags: u8, dsr: bool, now: u64) -> Found {
    let Some(entry) = CONNTRACK.get_ptr_mut(flow) else {
        return Found::Missing;
    };
    // SAFETY: a live LRU value of plain integers. Another CPU may write the same entry at
    // once; the worst outcome is a lost refresh or state bit, which the next packet redoes.
    let entry = unsafe { &mut *entry };
    // The established path: seen within the last granularity (so within every timeout, all
    // of which are whole seconds) and no flag that could move the state: nothing to check or
    // write.
    if !needs_refresh(entry.last_seen_ns, now) && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
        return Found::Live(*entry);
    }
    let state = entry.state;
    let timeout = SETTINGS
        .get(timeout_slot(flow.protocol, state))
        .copied()
        .unwrap_or(0);
    if expired(entry.last_seen_ns, now, timeout) {
        return Found::Expired;
    }
    if is_closing(state) && is_opening_syn(tcp_flags) {
        return Found::Reopened;
    }
    let next = after_client_packet(state, tcp_flags, dsr);
    if next != state || needs_refresh(entry.last_seen_ns, now) {
        entry.state = next;
        entry.last_seen_ns = now;
    }
    Found::Live(*entry)
}

/// Enters a new flow's entry for backend `id`, unless `flow` has one already; whether it did.
#[inline(always)]
pub fn enter(flow: &FlowKey, id: u32, backend: &BackendValue, tcp_flags: u8, now: u64) -> bool {
    let state = after_client_packet(0, tcp_flags, true);
    insert(flow, id, backend, flow.src_port, state, now, BPF_NOEXIST)
}

/// Inserts `flow`'s entry with `flags` (`BPF_ANY`, `BPF_NOEXIST`); whether it went in.
#[inline(always)]
pub fn insert(
    flow: &FlowKey,
    id: u32,
    backend: &BackendValue,
    nat_port: u16,
    state: u8,
    now: u64,
    flags: u32,
) -> bool {
    // Built in a per-CPU slot, not on the stack: the TCP/UDP path's 512 bytes are all taken.
    let Some(entry) = NEW_ENTRY.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot: nothing else writes it while this program runs here.
    let entry = unsafe { &mut *entry };
    entry.backend_id = id;
    entry.backend_generation = backend.generation;
    entry.last_seen_ns = now;
    entry.nat_port = nat_port;
    entry.state = state;
    CONNTRACK.insert(flow, entry, u64::from(flags)).is_ok()
}

/// The entry of `flow`, read without moving its state or refreshing it (for ICMP errors,
/// which say nothing about the flow's life).
#[inline(always)]
pub fn peek(flow: &FlowKey) -> Option<FlowValue> {
    // SAFETY: LRU values are plain data; copied out at once.
    unsafe { CONNTRACK.get(flow) }.copied()
}

/// A NAT backend's reply carried TCP flags: records its FIN or RST in the client flow's
/// entry (keyed by the client's 5-tuple, which the reverse entry restores).
#[inline(always)]
pub fn backend_sent(client: &FlowKey, tcp_flags: u8, now: u64) {
    let Some(entry) = CONNTRACK.get_ptr_mut(client) else {
        return;
    };
    // SAFETY: as in `lookup`.
    let entry = unsafe { &mut *entry };
    let next = after_backend_packet(entry.state, tcp_flags);
    if next != entry.state {
        entry.state = next;
        entry.last_seen_ns = now;
    }
}

/// The key of a NAT backend's replies to `flow` when the backend sees the client's source
/// port as `port`.
#[inline(always)]
pub fn reply_key(flow: &FlowKey, backend: &BackendValue, port: u16) -> FlowKey {
    FlowKey {
        src_addr: backend.addr,
        dst_addr: flow.src_addr,
        src_port: backend.port,
        dst_port: port,
        protocol: flow.protocol,
        family: flow.family,
        _pad: [0; 2],
    }
}

/// The source port the backend sees for a newly placed NAT flow (network byte order): the
/// client's own, unless the reply 5-tuple it makes belongs to another flow (the same client
/// port talking to another VIP on the same backend); then the first free of a few ports
/// derived from the flow's hash. If all are taken the last is used, replacing its entry.
#[inline(always)]
pub fn nat_port(flow: &FlowKey, backend: &BackendValue, hash: u32) -> u16 {
    if reply_port_free(flow, backend, flow.src_port) {
        return flow.src_port;
    }
    let mut attempt = 1;
    while attempt < NAT_PORT_ATTEMPTS - 1 {
        let port = nat_port_candidate(hash, attempt).to_be();
        if reply_port_free(flow, backend, port) {
            return port;
        }
        attempt += 1;
    }
    nat_port_candidate(hash, attempt).to_be()
}

/// Whether the reply key with `port` is unused, or used by this same flow.
#[inline(always)]
fn reply_port_free(flow: &FlowKey, backend: &BackendValue, port: u16) -> bool {
    let Some(entry) = NAT_REVERSE.get_ptr(&reply_key(flow, backend, port)) else {
        return true;
    };
    // SAFETY: LRU values are plain data; copied out before use.
    let entry: NatValue = unsafe { *entry };
    entry.vip == flow.dst_addr
        && entry.vip_port == flow.dst_port
        && entry.client_port == flow.src_port
}
