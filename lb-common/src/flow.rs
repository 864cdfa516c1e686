//! The connection table: which backend an established flow is on, and the reverse entries
//! NAT uses to translate backend replies back to the VIP.

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

/// Where an established client-to-VIP flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub backend_id: u32,
    /// The backend's generation when the flow was placed (see `BackendValue::generation`).
    pub backend_generation: u32,
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
    pub _pad: [u8; 2],
    /// The backend the flow is on, for per-backend reply counters.
    pub backend_id: u32,
    /// The interface the client's packet arrived on.
    pub client_ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 8);
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
