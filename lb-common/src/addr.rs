//! How addresses and ports are laid out in map keys and values.
//!
//! Addresses are four 32-bit words holding the address octets exactly as they appear on the
//! wire (`u32::from_ne_bytes` of each group of four octets), so the XDP program copies them
//! from the packet without conversion; an IPv4 address fills word 0 and leaves 1..=3 zero.
//! Ports are in network byte order for the same reason.

/// Address family tag for IPv4 in keys and values.
pub const FAMILY_V4: u8 = 4;
/// Address family tag for IPv6 in keys and values.
pub const FAMILY_V6: u8 = 6;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// An address in wire layout (see the module documentation).
pub type WireAddr = [u32; 4];

/// Converts a wire-layout address to the host-order words the flow hash takes.
#[inline(always)]
pub fn host_order(addr: &WireAddr) -> [u32; 4] {
    [
        u32::from_be(addr[0]),
        u32::from_be(addr[1]),
        u32::from_be(addr[2]),
        u32::from_be(addr[3]),
    ]
}

#[cfg(feature = "user")]
mod user {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{FAMILY_V4, FAMILY_V6, WireAddr};

    /// The wire layout of an address, and its family tag.
    pub fn to_wire(addr: IpAddr) -> (WireAddr, u8) {
        match addr {
            IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                ([word(0), word(4), word(8), word(12)], FAMILY_V6)
            }
        }
    }

    /// The address a wire-layout value holds, or `None` for an unknown family tag.
    pub fn from_wire(addr: &WireAddr, family: u8) -> Option<IpAddr> {
        match family {
            FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))),
            FAMILY_V6 => {
                let mut o = [0u8; 16];
                for (chunk, word) in o.chunks_exact_mut(4).zip(addr) {
                    chunk.copy_from_slice(&word.to_ne_bytes());
                }
                Some(IpAddr::V6(Ipv6Addr::from(o)))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn wire_layout_round_trips_and_matches_octets() {
            for addr in ["192.0.2.1", "2001:db8::42", "::ffff:10.0.0.1"] {
                let ip: IpAddr = addr.parse().unwrap_or_else(|_| unreachable!());
                let (wire, family) = to_wire(ip);
                assert_eq!(from_wire(&wire, family), Some(ip));
                // First octet of the address is the first byte in memory.
                let first = match ip {
                    IpAddr::V4(v) => v.octets()[0],
                    IpAddr::V6(v) => v.octets()[0],
                };
                assert_eq!(wire[0].to_ne_bytes()[0], first);
            }
            assert_eq!(from_wire(&[0; 4], 0), None);
        }
    }
}

#[cfg(feature = "user")]
pub use user::{from_wire, to_wire};
