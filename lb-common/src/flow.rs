//! The connection table: which backend an established flow is on, how far its TCP close has
//! gone and when it was last seen, and the reverse entries NAT uses to translate backend
//! replies back to the VIP.

use crate::addr::WireAddr;

/// A flow's 5-tuple as seen on the wire, in the direction of the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: WireAddr,
    pub dst_addr: WireAddr,
    /// Network byte order.
    pub src_port: u16,
    /// Network byte order.
    pub dst_port: u16,
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Where an established client-to-VIP flow goes, and how alive it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub backend_id: u32,
    /// The backend's generation when the flow was placed (see `BackendValue::generation`).
    pub backend_generation: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) of a recent packet of the flow:
    /// refreshed at most every [`crate::conntrack::LAST_SEEN_GRANULARITY_NS`], so the
    /// established path writes the entry about once a second, not once a packet.
    pub last_seen_ns: u64,
    /// NAT: the source port the backend sees, network byte order. The client's own port,
    /// unless that reply 5-tuple was taken by the same client port's flow to another VIP on
    /// the same backend (see [`crate::conntrack::nat_port_candidate`]). DSR: unused (0).
    pub nat_port: u16,
    /// `crate::conntrack::CT_*` bits: which ends sent FIN, whether an RST was seen.
    pub state: u8,
    pub _pad: [u8; 5],
}

/// For a NAT flow, keyed by the backend's reply 5-tuple (backend to client): the VIP and port
/// the client addressed, to restore as the reply's source, and the path the client's packet
/// came in by, which the reply takes back (no route lookup per reply).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    pub vip: WireAddr,
    /// Network byte order.
    pub vip_port: u16,
    /// Source MAC of the client's first packet: the client, or the router before it.
    pub client_mac: [u8; 6],
    /// Destination MAC of that packet: this host's interface.
    pub local_mac: [u8; 6],
    /// The client's own source port (network byte order), restored as the reply's
    /// destination port: the backend may have seen another one (`FlowValue::nat_port`).
    pub client_port: u16,
    /// The backend the flow is on, for per-backend reply counters.
    pub backend_id: u32,
    /// The interface the client's packet arrived on.
    pub client_ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 24);
const _: () = assert!(core::mem::size_of::<NatValue>() == 40);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding (sizes asserted above).
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), integers only (size asserted above).
unsafe impl aya::Pod for FlowValue {}
#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding (size asserted above).
unsafe impl aya::Pod for NatValue {}
