//! How the connection table follows TCP and UDP: the state bits an entry carries, how a
//! packet moves them, and which idle timeout applies. Pure functions, shared by the XDP
//! program and the agent's tests, so both read the same rules.

use crate::addr::PROTO_TCP;
use crate::limits::{SETTING_CLOSING_S, SETTING_TCP_IDLE_S, SETTING_UDP_IDLE_S};

/// The client sent a FIN.
pub const CT_FIN_CLIENT: u8 = 1 << 0;
/// The backend sent a FIN (seen on NAT replies; a DSR flow's replies bypass Sluice).
pub const CT_FIN_BACKEND: u8 = 1 << 1;
/// Either end sent an RST.
pub const CT_RST: u8 = 1 << 2;

/// TCP header flag bits (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The established path rewrites an entry's last-seen time only when it is older than this:
/// one write a second per flow instead of one per packet. Timeouts are this coarse too.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Source ports a NAT flow tries for the backend's view of it: its own first, then
/// `NAT_PORT_ATTEMPTS - 1` candidates from [`nat_port_candidate`].
pub const NAT_PORT_ATTEMPTS: u32 = 4;

/// Whether the flow is closing: an RST was seen, or a FIN from each end. A closing entry
/// lives for the closing timeout, and a SYN on it starts a new flow.
#[inline(always)]
pub const fn is_closing(state: u8) -> bool {
    state & CT_RST != 0
        || state & (CT_FIN_CLIENT | CT_FIN_BACKEND) == CT_FIN_CLIENT | CT_FIN_BACKEND
}

/// The state after a client-to-VIP packet with TCP flags `tcp_flags` (0 for UDP). In DSR the
/// backend's FIN is never seen, so the client's FIN alone makes the flow closing.
#[inline(always)]
pub const fn after_client_packet(state: u8, tcp_flags: u8, dsr: bool) -> u8 {
    let mut state = state;
    if tcp_flags & TCP_RST != 0 {
        state |= CT_RST;
    }
    if tcp_flags & TCP_FIN != 0 {
        state |= if dsr {
            CT_FIN_CLIENT | CT_FIN_BACKEND
        } else {
            CT_FIN_CLIENT
        };
    }
    state
}

/// The state after a NAT backend's reply with TCP flags `tcp_flags`.
#[inline(always)]
pub const fn after_backend_packet(state: u8, tcp_flags: u8) -> u8 {
    let mut state = state;
    if tcp_flags & TCP_RST != 0 {
        state |= CT_RST;
    }
    if tcp_flags & TCP_FIN != 0 {
        state |= CT_FIN_BACKEND;
    }
    state
}

/// A connection-opening SYN (no ACK): on a closing entry it starts a new flow.
#[inline(always)]
pub const fn is_opening_syn(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The settings slot holding the idle timeout (seconds) of an entry of `protocol` in `state`.
#[inline(always)]
pub const fn timeout_slot(protocol: u8, state: u8) -> u32 {
    if protocol != PROTO_TCP {
        SETTING_UDP_IDLE_S
    } else if is_closing(state) {
        SETTING_CLOSING_S
    } else {
        SETTING_TCP_IDLE_S
    }
}

/// Whether an entry last seen at `last_seen_ns` has outlived `timeout_s` seconds at `now_ns`.
/// A timeout of 0 never expires (maps nobody configured: test benches).
#[inline(always)]
pub const fn expired(last_seen_ns: u64, now_ns: u64, timeout_s: u32) -> bool {
    timeout_s != 0 && now_ns.saturating_sub(last_seen_ns) > timeout_s as u64 * 1_000_000_000
}

/// Whether the established path should rewrite a last-seen time of `last_seen_ns` at `now_ns`.
#[inline(always)]
pub const fn needs_refresh(last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) >= LAST_SEEN_GRANULARITY_NS
}

/// The `attempt`-th (1-based) alternative NAT source port, host byte order, from a hash of
/// the flow: spread over the unprivileged range 1024..=65535.
#[inline(always)]
pub const fn nat_port_candidate(flow_hash: u32, attempt: u32) -> u16 {
    let mixed = flow_hash.rotate_left(attempt.wrapping_mul(11)) ^ attempt.wrapping_mul(0x9e37_79b9);
    (1024 + mixed % (65536 - 1024)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PROTO_UDP;

    #[test]
    fn closing_needs_rst_or_a_fin_from_each_end() {
        let fin_client = after_client_packet(0, TCP_FIN | TCP_ACK, false);
        assert!(!is_closing(fin_client), "one FIN is a half-close");
        assert!(is_closing(after_backend_packet(fin_client, TCP_FIN)));
        assert!(is_closing(after_client_packet(0, TCP_FIN, true)), "DSR");
        assert!(is_closing(after_backend_packet(0, TCP_RST)));
        assert!(is_closing(after_client_packet(0, TCP_RST, false)));
        assert_eq!(after_client_packet(0, TCP_ACK | TCP_SYN, false), 0);
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        assert_eq!(timeout_slot(PROTO_UDP, 0), SETTING_UDP_IDLE_S);
        assert_eq!(timeout_slot(PROTO_TCP, CT_FIN_CLIENT), SETTING_TCP_IDLE_S);
        assert_eq!(timeout_slot(PROTO_TCP, CT_RST), SETTING_CLOSING_S);
        assert!(!expired(0, u64::MAX, 0), "0 never expires");
        assert!(!expired(5_000_000_000, 6_000_000_000, 1));
        assert!(expired(5_000_000_000, 6_000_000_001, 1));
        assert!(
            !expired(7, 3, 1),
            "a last-seen time ahead of the clock is fresh"
        );
        assert!(is_opening_syn(TCP_SYN) && !is_opening_syn(TCP_SYN | TCP_ACK));
    }

    #[test]
    fn nat_port_candidates_are_unprivileged_and_differ() {
        for hash in [0, 1, 0xffff_ffff, 0x1234_5678] {
            let ports: [u16; 3] = [1, 2, 3].map(|a| nat_port_candidate(hash, a));
            assert!(ports.iter().all(|p| *p >= 1024), "{ports:?}");
            assert!(ports[0] != ports[1] || ports[1] != ports[2], "{ports:?}");
        }
    }
}
