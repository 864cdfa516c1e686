//! The service map: (VIP, port, protocol) to what the XDP program does with its packets.

use crate::addr::WireAddr;

/// Key of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The VIP, wire layout.
    pub addr: WireAddr,
    /// The service port, network byte order.
    pub port: u16,
    /// IP protocol number (TCP or UDP).
    pub protocol: u8,
    /// [`crate::addr::FAMILY_V4`] or [`crate::addr::FAMILY_V6`].
    pub family: u8,
}

/// The packets of this service are passed up to the agent's L7 listener.
pub const SERVICE_L7: u32 = 1 << 0;
/// L4 service forwarded by direct server return (MAC rewrite only).
pub const SERVICE_DSR: u32 = 1 << 1;
/// L4 service forwarded by destination NAT.
pub const SERVICE_NAT: u32 = 1 << 2;
/// With no usable backend, drop new flows instead of passing them to the host.
pub const SERVICE_REFUSE_WHEN_EMPTY: u32 = 1 << 3;

/// Value of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into the per-service counters.
    pub id: u32,
    /// `SERVICE_*` flags.
    pub flags: u32,
    /// Where this service's active Maglev table starts in the ring map. The agent fills the
    /// other half of the service's double buffer, then flips this offset with one map update,
    /// so the data path never sees a half-written table.
    pub ring_offset: u32,
    /// Number of slots of the Maglev table (prime); 0 when the service has no backend.
    pub table_size: u32,
    /// Seed of the flow hash.
    pub hash_seed: u32,
    /// Agent bookkeeping, ignored by the program: where the service's two tables start, so an
    /// agent adopting pinned maps knows which half `ring_offset` points at.
    pub region_start: u32,
}

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 24);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (sizes asserted above).
unsafe impl aya::Pod for ServiceKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (sizes asserted above).
unsafe impl aya::Pod for ServiceValue {}
