//! The next-hop cache the XDP program keeps per CPU. Not pinned: a new program starts it
//! empty and refills it from the FIB.

/// A backend's next hop, cached per CPU so established flows skip the FIB lookup (its largest
/// cost). Trusted for `limits::NEXT_HOP_TTL_NS`, and only for the backend generation it was
/// made for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedHop {
    pub expires_ns: u64,
    pub generation: u32,
    pub ifindex: u32,
    pub mtu: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<CachedHop>() == 32);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding (size asserted above).
unsafe impl aya::Pod for CachedHop {}
