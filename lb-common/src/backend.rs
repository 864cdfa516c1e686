//! The backend map: a backend id (what Maglev slots hold) to where its packets go.

use crate::addr::WireAddr;

/// The backend takes packets: new flows when its Maglev slots say so, established flows always.
/// A slot whose backend lacks this flag is treated as removed and the flow is re-steered.
pub const BACKEND_ACTIVE: u8 = 1 << 0;

/// Value of the backend array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// The backend's address, wire layout.
    pub addr: WireAddr,
    /// The backend's port, network byte order (the NAT destination; DSR keeps the VIP port).
    pub port: u16,
    /// [`crate::addr::FAMILY_V4`] or [`crate::addr::FAMILY_V6`].
    pub family: u8,
    /// `BACKEND_*` flags.
    pub flags: u8,
    /// Bumped each time the agent gives this id to another backend, so a connection-table entry
    /// made for the previous owner is not mistaken for one of the new owner.
    pub generation: u32,
}

const _: () = assert!(core::mem::size_of::<BackendValue>() == 24);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (size asserted above).
unsafe impl aya::Pod for BackendValue {}
