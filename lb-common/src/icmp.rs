//! ICMP on the data path: the VIP set echo requests are checked against, the echo setting's
//! values, and the reasons ICMP packets are counted under.

use crate::addr::WireAddr;

/// IP protocol number of ICMP.
pub const ICMP_PROTO_V4: u8 = 1;
/// IPv6 next-header number of ICMPv6.
pub const ICMP_PROTO_V6: u8 = 58;

/// `SETTING_VIP_ECHO`: echo requests to a VIP go up to the kernel stack. 0, so a slot the
/// agent never wrote keeps the behaviour from before the setting existed.
pub const VIP_ECHO_PASS: u32 = 0;
/// `SETTING_VIP_ECHO`: the program answers echo requests to a VIP itself (XDP_TX).
pub const VIP_ECHO_REPLY: u32 = 1;
/// `SETTING_VIP_ECHO`: echo requests to a VIP are dropped.
pub const VIP_ECHO_DROP: u32 = 2;

/// Key of the VIP set: every address some service listens on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub addr: WireAddr,
    /// [`crate::addr::FAMILY_V4`] or [`crate::addr::FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding (size asserted above).
unsafe impl aya::Pod for VipKey {}

/// What happened to an ICMP packet the program handled: the slots of the ICMP counter
/// array. An ICMP packet counts once in `Reason::Seen` and once either here or, when it was
/// not handled as ICMP (another type, not about a VIP, no route), under a `Reason`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpReason {
    /// An error about a DSR flow, sent to the flow's backend (the connection table's, else
    /// Maglev's pick).
    ErrorSteered = 0,
    /// An error about a NAT flow, translated to the backend's addresses and sent to it.
    ErrorTranslated,
    /// An error about a packet NAT sent to a backend, translated back and sent to the client.
    ErrorTranslatedReply,
    /// An error about a service's packet, but the flow is unknown (NAT, no entry) or the
    /// service has no backend: passed.
    ErrorNoFlow,
    /// An error whose quoted packet is cut short or is not TCP/UDP: passed untouched.
    Malformed,
    /// An echo request to a VIP, answered by the program.
    EchoReplied,
    /// An echo request to a VIP, passed to the stack.
    EchoPassed,
    /// An echo request to a VIP, dropped.
    EchoDropped,
}

impl IcmpReason {
    /// Number of slots the ICMP counter array needs.
    pub const COUNT: u32 = IcmpReason::EchoDropped as u32 + 1;

    /// Every reason, in slot order.
    pub const ALL: [IcmpReason; IcmpReason::COUNT as usize] = [
        IcmpReason::ErrorSteered,
        IcmpReason::ErrorTranslated,
        IcmpReason::ErrorTranslatedReply,
        IcmpReason::ErrorNoFlow,
        IcmpReason::Malformed,
        IcmpReason::EchoReplied,
        IcmpReason::EchoPassed,
        IcmpReason::EchoDropped,
    ];

    /// A stable snake_case name, for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            IcmpReason::ErrorSteered => "icmp_error_steered",
            IcmpReason::ErrorTranslated => "icmp_error_translated",
            IcmpReason::ErrorTranslatedReply => "icmp_error_translated_reply",
            IcmpReason::ErrorNoFlow => "icmp_error_no_flow",
            IcmpReason::Malformed => "icmp_malformed",
            IcmpReason::EchoReplied => "icmp_echo_replied",
            IcmpReason::EchoPassed => "icmp_echo_passed",
            IcmpReason::EchoDropped => "icmp_echo_dropped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IcmpReason;

    #[test]
    fn all_lists_every_icmp_reason_in_slot_order() {
        for (slot, reason) in IcmpReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, slot, "{reason:?}");
        }
    }
}
