//! Counter layouts the XDP program updates per CPU and the agent sums for metrics.

/// A packet and byte counter. One per CPU in a per-CPU map; the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-service and per-backend counters: packets, bytes and flows placed by Maglev.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounter {
    pub packets: u64,
    pub bytes: u64,
    /// Flows that took a Maglev decision here: new flows, and flows re-steered off a removed
    /// backend.
    pub new_flows: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<FlowCounter>() == 24);

#[cfg(feature = "user")]
// SAFETY: `Counter` is `repr(C)`, made only of `u64`s, with no padding.
unsafe impl aya::Pod for Counter {}
#[cfg(feature = "user")]
// SAFETY: `FlowCounter` is `repr(C)`, made only of `u64`s, with no padding.
unsafe impl aya::Pod for FlowCounter {}

impl Counter {
    /// Adds another CPU's counts to this one.
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

impl FlowCounter {
    /// Adds another CPU's counts to this one.
    pub fn add(&mut self, other: &FlowCounter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.new_flows = self.new_flows.wrapping_add(other.new_flows);
    }
}

/// What happened to a packet: the slots of the global counter array. Every packet counts
/// once in [`Reason::Seen`] and once in exactly one other reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Every packet the program saw, whatever its verdict.
    Seen = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    PassNotIp,
    /// IP, but for no service and no NAT flow: passed untouched.
    PassNoService,
    /// For an L7 service: passed to the agent's listener.
    PassL7,
    /// Neither TCP nor UDP: passed.
    PassOtherProtocol,
    /// IPv6 with extension headers: passed.
    PassIpv6Extension,
    /// An IP fragment (ports unknown): passed.
    PassFragment,
    /// A header runs past the end of the frame: passed untouched.
    PassTruncated,
    /// A header field is invalid (IP version, IHL, lengths, TCP data offset): passed untouched.
    PassMalformed,
    /// An L4 service with no usable backend, configured to fail open: passed.
    PassNoBackend,
    /// The kernel has no route toward the backend or client: passed to the stack.
    PassNoRoute,
    /// The next hop's MAC is not resolved yet: passed to the stack, which resolves it.
    PassNoNeighbour,
    /// A DSR backend is not on a directly connected network: passed.
    PassDsrNotOnLink,
    /// TTL or hop limit would expire: passed, so the stack answers with ICMP.
    PassTtlExpired,
    /// An L4 service with no usable backend, configured to refuse: dropped.
    DropNoBackend,
    /// Forwarded to a backend by DSR.
    ForwardDsr,
    /// Forwarded to a backend by NAT.
    ForwardNat,
    /// A NAT backend's reply, translated back to the VIP and forwarded to the client.
    ForwardNatReply,
    /// A TCP/UDP flow with no connection-table entry (new, or evicted): Maglev picked.
    FlowNew,
    /// A connection-table entry whose backend was removed: re-steered by Maglev.
    FlowResteered,
    /// A connection-table entry was found and used.
    FlowEstablished,
    /// The connection table was full or refused the insert (the flow is still forwarded).
    FlowInsertFailed,
    /// A connection-table entry past its idle timeout (or closing timeout): placed afresh by
    /// Maglev.
    FlowExpired,
    /// A SYN on a closing entry (RST, or FIN from each end): a new connection reusing the
    /// tuple, placed afresh by Maglev.
    FlowReopened,
    /// A new flow above the per-CPU new-flow rate: steered by Maglev without a
    /// connection-table entry, so a flood cannot evict established flows.
    FlowNotTracked,
    /// A new flow from a source past its new-flow rate: dropped.
    DropSourceRate,
}

impl Reason {
    /// Number of slots the global counter array needs.
    pub const COUNT: u32 = Reason::DropSourceRate as u32 + 1;

    /// Every reason, in slot order.
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::Seen,
        Reason::PassNotIp,
        Reason::PassNoService,
        Reason::PassL7,
        Reason::PassOtherProtocol,
        Reason::PassIpv6Extension,
        Reason::PassFragment,
        Reason::PassTruncated,
        Reason::PassMalformed,
        Reason::PassNoBackend,
        Reason::PassNoRoute,
        Reason::PassNoNeighbour,
        Reason::PassDsrNotOnLink,
        Reason::PassTtlExpired,
        Reason::DropNoBackend,
        Reason::ForwardDsr,
        Reason::ForwardNat,
        Reason::ForwardNatReply,
        Reason::FlowNew,
        Reason::FlowResteered,
        Reason::FlowEstablished,
        Reason::FlowInsertFailed,
        Reason::FlowExpired,
        Reason::FlowReopened,
        Reason::FlowNotTracked,
        Reason::DropSourceRate,
    ];

    /// A stable snake_case name, for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Seen => "seen",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNoService => "pass_no_service",
            Reason::PassL7 => "pass_l7",
            Reason::PassOtherProtocol => "pass_other_protocol",
            Reason::PassIpv6Extension => "pass_ipv6_extension",
            Reason::PassFragment => "pass_fragment",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassNoBackend => "pass_no_backend",
            Reason::PassNoRoute => "pass_no_route",
            Reason::PassNoNeighbour => "pass_no_neighbour",
            Reason::PassDsrNotOnLink => "pass_dsr_not_on_link",
            Reason::PassTtlExpired => "pass_ttl_expired",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::ForwardDsr => "forward_dsr",
            Reason::ForwardNat => "forward_nat",
            Reason::ForwardNatReply => "forward_nat_reply",
            Reason::FlowNew => "flow_new",
            Reason::FlowResteered => "flow_resteered",
            Reason::FlowEstablished => "flow_established",
            Reason::FlowInsertFailed => "flow_insert_failed",
            Reason::FlowExpired => "flow_expired",
            Reason::FlowReopened => "flow_reopened",
            Reason::FlowNotTracked => "flow_not_tracked",
            Reason::DropSourceRate => "drop_source_rate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn all_lists_every_reason_in_slot_order() {
        for (slot, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, slot, "{reason:?}");
        }
    }
}
