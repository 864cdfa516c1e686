//! Map sizes and program-wide settings shared by the program and the agent.

/// Most services (L4 and L7 together) the service map holds.
pub const MAX_SERVICES: u32 = 1024;
/// Most backends (over all pools used by L4 services) the backend map holds.
pub const MAX_BACKENDS: u32 = 65536;
/// Default slots of the ring map: two tables (the double buffer) of 65537 slots for eight
/// services. The agent sizes the map for its config at load time.
pub const DEFAULT_RING_CAPACITY: u32 = 2 * 65537 * 8;
/// Default entries of the connection table and of the NAT reverse table.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;

/// Backend ids below this have their next hop cached per CPU by the XDP program.
pub const NEXT_HOP_CACHE_SLOTS: u32 = 4096;
/// How long a cached next hop is trusted before the FIB is asked again.
pub const NEXT_HOP_TTL_NS: u64 = 1_000_000_000;

/// Slots of the settings array: room for settings to come without a schema change (the
/// agent writes every slot it knows; slots it does not know stay 0).
pub const SETTINGS_COUNT: u32 = 16;
/// Settings slot holding `SETTING_FLAG_*` bits.
pub const SETTING_FLAGS: u32 = 0;
/// Some service uses NAT: look up backend replies in the NAT reverse table. Without it,
/// packets for no service skip that lookup.
pub const SETTING_FLAG_NAT: u32 = 1 << 0;
/// Settings slot: idle timeout of an open TCP connection-table entry, seconds (0: none).
pub const SETTING_TCP_IDLE_S: u32 = 1;
/// Settings slot: idle timeout of a UDP entry, seconds (0: none).
pub const SETTING_UDP_IDLE_S: u32 = 2;
/// Settings slot: idle timeout of a closing TCP entry (RST, or FIN from each end), seconds.
pub const SETTING_CLOSING_S: u32 = 3;
/// Settings slot: new flows a CPU inserts into the connection table per second; above it,
/// new flows are steered by Maglev without an entry (0: no limit).
pub const SETTING_NEW_FLOWS_PER_CPU: u32 = 4;
/// Settings slot: new flows per second one source address may open (0: no limit).
pub const SETTING_SOURCE_RATE: u32 = 5;
/// Settings slot: how many new flows a source may open at once before its rate applies.
pub const SETTING_SOURCE_BURST: u32 = 6;
/// Settings slot: what echo requests to a VIP get (`crate::icmp::VIP_ECHO_*`).
pub const SETTING_VIP_ECHO: u32 = 7;
/// Words of the NAT source port set: one bit for each of the 65,536 ports.
pub const NAT_SOURCE_PORT_WORDS: u32 = 1024;

/// The word and bit of `port` (host order) in the NAT source port set.
#[inline(always)]
pub const fn nat_source_port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1 << (port & 63))
}

/// Most distinct VIP addresses the VIP set holds (every service has one).
pub const MAX_VIPS: u32 = MAX_SERVICES;
/// Source addresses whose new-flow bucket the program keeps (an LRU: the least recently seen
/// source starts afresh with a full bucket).
pub const SOURCE_BUCKETS: u32 = 65_536;
