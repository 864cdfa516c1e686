//! Well-formed frames the program leaves to the host or drops: no service, an L7 service, a
//! service without backends, and backends the FIB cannot reach the way the mode needs.

use lb_common::backend::BACKEND_ACTIVE;
use lb_common::service::{SERVICE_DSR, SERVICE_L7, SERVICE_NAT, SERVICE_REFUSE_WHEN_EMPTY};
use lb_common::stats::Reason::{
    DropNoBackend, ForwardDsr, PassDsrNotOnLink, PassL7, PassNoBackend, PassNoNeighbour,
    PassNoRoute, PassNoService, PassTtlExpired,
};

use crate::cases::{check, pass, placed};
use crate::frames::{Frame, L4, sock};
use crate::lab::{
    CLIENT4, CLIENT6, Family, Lab, ROUTED4, UNRESOLVED4, UNROUTABLE4, VIP4, VIP6, XDP_DROP,
    XDP_PASS, XDP_TX, backend_ip, backend_value, service,
};

#[test]
fn services_and_routes_that_leave_nothing_to_forward() {
    if !sluice_tests::privileged() {
        return;
    }
    let to = |port: u16, l4: L4| Frame::new(l4, sock(CLIENT4, 40000), sock(VIP4, port)).bytes();
    let ttl1 = |port: u16| {
        let frame = Frame::new(L4::Udp, sock(CLIENT4, 40000), sock(VIP4, port));
        Frame { ttl: 1, ..frame }.bytes()
    };
    let other_vip = Frame::new(L4::Tcp, sock(CLIENT4, 1), sock([10, 9, 0, 99], 80)).bytes();
    let v6 = Frame::new(L4::Tcp, sock(CLIENT6, 1), sock(VIP6, 80)).bytes();
    let mut too_big = Frame::new(L4::Udp, sock(CLIENT4, 40001), sock(VIP4, 53));
    too_big.payload = vec![7; 1500 - 20 - 8 + 1];
    let too_big = too_big.bytes();
    #[rustfmt::skip]
    let cases = [
        pass("no service at that VIP", other_vip, PassNoService),
        pass("no service at that port", to(81, L4::Tcp), PassNoService),
        pass("no service for that protocol", to(80, L4::Udp), PassNoService),
        pass("no IPv6 service", v6, PassNoService),
        pass("L7 service", to(443, L4::Tcp), PassL7),
        placed("no table", to(1000, L4::Tcp), XDP_PASS, PassNoBackend),
        placed("no table, refusing", to(1001, L4::Tcp), XDP_DROP, DropNoBackend),
        placed("ring's backend inactive", to(1002, L4::Tcp), XDP_PASS, PassNoBackend),
        placed("backend MAC unresolved", to(1003, L4::Tcp), XDP_PASS, PassNoNeighbour),
        placed("no route to the backend", to(1004, L4::Tcp), XDP_PASS, PassNoRoute),
        placed("DSR backend behind a router", to(1005, L4::Tcp), XDP_PASS, PassDsrNotOnLink),
        placed("NAT with TTL 1", ttl1(53), XDP_PASS, PassTtlExpired),
        // The FIB's MTU check fails; the stack answers with ICMP "fragmentation needed".
        placed("larger than eth0's MTU", too_big, XDP_PASS, PassNoRoute),
        placed("DSR with TTL 1 is forwarded", ttl1(54), XDP_TX, ForwardDsr),
    ];
    Lab::new("xdp").run(|dp| {
        dp.enable_nat();
        let tcp = |port: u16| sock(VIP4, port);
        dp.set_service(tcp(80), L4::Tcp, service(SERVICE_NAT, 0, 0));
        dp.set_service(tcp(443), L4::Tcp, service(SERVICE_L7, 0, 0));
        dp.set_service(tcp(1000), L4::Tcp, service(SERVICE_NAT, 0, 0));
        let refuse = SERVICE_NAT | SERVICE_REFUSE_WHEN_EMPTY;
        dp.set_service(tcp(1001), L4::Tcp, service(refuse, 0, 0));
        let backend = sock(backend_ip(1, Family::V4), 80);
        dp.single_backend_service(tcp(1002), L4::Tcp, SERVICE_NAT, 2, backend);
        let mut inactive = backend_value(backend);
        inactive.flags &= !BACKEND_ACTIVE;
        dp.set_backend(2, inactive);
        for (port, flags, id, backend) in [
            (1003, SERVICE_NAT, 3, UNRESOLVED4),
            (1004, SERVICE_NAT, 4, UNROUTABLE4),
            (1005, SERVICE_DSR, 5, ROUTED4),
        ] {
            dp.single_backend_service(tcp(port), L4::Tcp, flags, id, sock(backend, 80));
        }
        let backend = sock(backend_ip(0, Family::V4), 53);
        dp.single_backend_service(sock(VIP4, 53), L4::Udp, SERVICE_NAT, 6, backend);
        dp.single_backend_service(sock(VIP4, 54), L4::Udp, SERVICE_DSR, 7, backend);
        check(dp, &cases);
    });
}
