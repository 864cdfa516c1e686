//! Root-free checks against the running kernel: route lookups need no privilege, and
//! loopback addresses have a route in any namespace. Changes are tested in namespaces by
//! `tests/tests/netlink.rs`.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

#[test]
fn loopback_lookups_are_on_link_through_lo() {
    let mut netlink = Netlink::open().unwrap_or_else(|e| panic!("{e}"));
    // Many lookups on one socket: each answer must be the one asked for.
    for i in 1..=300u32 {
        let addr = IpAddr::from([127, 0, (i >> 8) as u8, i as u8]);
        let hop = netlink
            .route_to(addr)
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(hop.destination, addr);
        assert_eq!(hop.gateway, None, "{addr}: loopback routes have no gateway");
        assert_eq!(hop.neighbour(), addr);
        assert_eq!(hop.device, "lo");
        assert_eq!(hop.kind, netlink_packet_route::route::RouteType::Local);
    }
}

#[test]
fn errors_name_the_operation_and_the_address() {
    let error = NetlinkError::Kernel {
        operation: Operation::RouteLookup,
        subject: Subject::Address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        error: std::io::Error::from_raw_os_error(libc::ENETUNREACH),
    };
    assert_eq!(
        error.to_string(),
        "looking up the route to 192.0.2.7: Network is unreachable (os error 101)"
    );
    assert_eq!(error.errno(), Some(libc::ENETUNREACH));
    let dump = NetlinkError::Kernel {
        operation: Operation::RouteDump,
        subject: Subject::Table(4201),
        error: std::io::Error::from_raw_os_error(libc::EPERM),
    };
    assert_eq!(
        dump.to_string(),
        "listing the routes of table 4201: Operation not permitted (os error 1)"
    );
}
