//! The agent's netlink client (`sluice::netlink`) against real namespaces: managed
//! neighbour entries created, replaced and removed, route lookups on-link and through a
//! gateway (IPv4 and IPv6), a typed error for an unreachable destination, the VIP routes of
//! the announce table; and the whole L4 path run by an agent whose PATH holds no `ip`.

mod l4_e2e_support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use l4_e2e_support::restart::Stop;
use l4_e2e_support::{Mode, Setup, V4};
use sluice::netlink::{Netlink, NetlinkError, Operation, Subject, VipRoute};
use sluice_tests::{
    Netns, PinDir, add_addr, eventually, format_mac, if_index, mac_of, managed_neighbours,
    privileged, route_add, sluice_binary, veth,
};

const LB4: &str = "10.77.1.1";
const PEER4: &str = "10.77.1.2";
const LB6: &str = "fd00:77:1::1";
const PEER6: &str = "fd00:77:1::2";

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} is not an address: {e}"))
}

/// The load balancer's namespace and a peer, one veth between them (`eth0` on both), with
/// routes to 10.77.9.0/24 and fd00:77:9::/64 through the peer.
fn pair() -> (Netns, Netns) {
    let lb = Netns::new("nl_lb");
    let peer = Netns::new("nl_peer");
    veth(&lb, "eth0", &peer, "eth0");
    add_addr(&lb, "eth0", &format!("{LB4}/24"));
    add_addr(&peer, "eth0", &format!("{PEER4}/24"));
    add_addr(&lb, "eth0", &format!("{LB6}/64"));
    add_addr(&peer, "eth0", &format!("{PEER6}/64"));
    route_add(&lb, "10.77.9.0/24", PEER4);
    route_add(&lb, "fd00:77:9::/64", PEER6);
    (lb, peer)
}

fn open() -> Netlink {
    Netlink::open().unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the entry of `peer` is managed and resolved to `mac`.
fn wait_managed_and_resolved(netlink: &mut Netlink, peer: IpAddr, ifindex: u32, mac: &str) {
    eventually(Duration::from_secs(10), || {
        match netlink.neighbour(peer, ifindex) {
            Ok(Some(entry))
                if entry.managed && entry.link_address_text().as_deref() == Some(mac) =>
            {
                Ok(())
            }
            other => Err(format!("{peer}: {other:?}")),
        }
    });
}

#[test]
fn managed_neighbour_entries_are_created_replaced_and_removed() {
    if !privileged() {
        return;
    }
    let (lb, peer) = pair();
    let ifindex = if_index(&lb, "eth0");
    let peer_mac = format_mac(mac_of(&peer, "eth0"));
    for peer_ip in [ip(PEER4), ip(PEER6)] {
        lb.in_ns(|| {
            let mut netlink = open();
            assert_eq!(netlink.neighbour(peer_ip, ifindex).ok().flatten(), None);
            netlink
                .replace_managed_neighbour(peer_ip, ifindex)
                .unwrap_or_else(|e| panic!("{e}"));
            // Managed: the kernel resolves it with no traffic sent to the peer.
            wait_managed_and_resolved(&mut netlink, peer_ip, ifindex, &peer_mac);
        });
        let shown = lb.ip(["neigh", "show", &peer_ip.to_string(), "dev", "eth0"]);
        assert!(shown.contains("managed"), "ip neigh show: {shown}");

        // Replacing a permanent entry with a wrong MAC makes it managed and resolved.
        lb.ip([
            "neigh",
            "replace",
            &peer_ip.to_string(),
            "dev",
            "eth0",
            "lladdr",
            "02:00:00:00:00:99",
            "nud",
            "permanent",
        ]);
        lb.in_ns(|| {
            let mut netlink = open();
            let before = netlink.neighbour(peer_ip, ifindex).ok().flatten();
            assert!(
                before.as_ref().is_some_and(|e| !e.managed),
                "a permanent entry first: {before:?}"
            );
            netlink
                .replace_managed_neighbour(peer_ip, ifindex)
                .unwrap_or_else(|e| panic!("{e}"));
            wait_managed_and_resolved(&mut netlink, peer_ip, ifindex, &peer_mac);

            netlink
                .delete_neighbour(peer_ip, ifindex)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(netlink.neighbour(peer_ip, ifindex).ok().flatten(), None);
            // A second removal finds nothing, and says what and whom.
            let error = netlink
                .delete_neighbour(peer_ip, ifindex)
                .expect_err("the entry is gone");
            assert_eq!(error.errno(), Some(libc::ENOENT), "{error:?}");
            assert_eq!(
                error.to_string(),
                format!("removing the neighbour entry of {peer_ip}: No such file or directory (os error 2)")
            );
        });
    }
}

#[test]
fn route_lookups_give_the_gateway_device_and_source() {
    if !privileged() {
        return;
    }
    let (lb, _peer) = pair();
    let ifindex = if_index(&lb, "eth0");
    lb.in_ns(|| {
        let mut netlink = open();
        for (destination, gateway, source) in [
            ("10.77.9.5", Some(PEER4), LB4),
            ("fd00:77:9::5", Some(PEER6), LB6),
            (PEER4, None, LB4),
            (PEER6, None, LB6),
        ] {
            let hop = netlink
                .route_to(ip(destination))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(hop.destination, ip(destination));
            assert_eq!(hop.gateway, gateway.map(ip), "{destination}: {hop:?}");
            assert_eq!(hop.neighbour(), ip(gateway.unwrap_or(destination)));
            assert_eq!((hop.ifindex, hop.device.as_str()), (ifindex, "eth0"));
            assert_eq!(hop.source, Some(ip(source)), "{destination}: {hop:?}");
        }
    });
}

#[test]
fn an_unreachable_destination_is_a_typed_error_naming_it() {
    if !privileged() {
        return;
    }
    let (lb, _peer) = pair();
    lb.in_ns(|| {
        let mut netlink = open();
        for destination in ["198.51.100.1", "2001:db8::1"] {
            let error = netlink
                .route_to(ip(destination))
                .expect_err("no route: the namespace has no default route");
            assert!(
                matches!(
                    &error,
                    NetlinkError::Kernel {
                        operation: Operation::RouteLookup,
                        subject: Subject::Address(addr),
                        ..
                    } if *addr == ip(destination)
                ),
                "{error:?}"
            );
            assert_eq!(error.errno(), Some(libc::ENETUNREACH), "{error:?}");
            assert_eq!(
                error.to_string(),
                format!(
                    "looking up the route to {destination}: Network is unreachable (os error 101)"
                )
            );
        }
    });
}

#[test]
fn vip_routes_are_added_removed_and_flushed_by_protocol() {
    if !privileged() {
        return;
    }
    let (lb, _peer) = pair();
    let table = 4242;
    let route = |vip: &str| VipRoute {
        vip: ip(vip),
        table,
        protocol: 201,
    };
    let shown = || lb.ip(["route", "show", "table", "all", "proto", "201"]);
    lb.in_ns(|| {
        let mut netlink = open();
        for vip in ["203.0.113.7", "2001:db8:7::7"] {
            netlink
                .replace_vip_route(route(vip))
                .unwrap_or_else(|e| panic!("{e}"));
            // Replacing is idempotent.
            netlink
                .replace_vip_route(route(vip))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let text = shown();
    for vip in ["203.0.113.7", "2001:db8:7::7"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("blackhole {vip} ")) && l.contains("table 4242")),
            "{vip}: {text}"
        );
    }
    assert_eq!(text.lines().count(), 2, "{text}");

    lb.in_ns(|| {
        let mut netlink = open();
        assert_eq!(
            netlink.delete_vip_route(route("203.0.113.7")).ok(),
            Some(true)
        );
        assert_eq!(
            netlink.delete_vip_route(route("203.0.113.7")).ok(),
            Some(false),
            "a route already gone is not an error"
        );
    });
    assert!(!shown().contains("203.0.113.7"), "{}", shown());

    // Flush takes the agent's routes (protocol 201) and leaves the others.
    lb.ip([
        "route",
        "add",
        "blackhole",
        "203.0.113.9",
        "table",
        "4242",
        "proto",
        "static",
    ]);
    lb.in_ns(|| {
        let mut netlink = open();
        netlink
            .replace_vip_route(route("203.0.113.8"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(netlink.flush_routes(table, 201).ok(), Some(2));
        assert_eq!(netlink.flush_routes(table, 201).ok(), Some(0));
    });
    assert_eq!(shown(), "");
    let left = lb.ip(["route", "show", "table", "4242"]);
    assert!(left.contains("blackhole 203.0.113.9"), "{left}");
}

#[test]
fn the_l4_path_runs_with_no_ip_binary_on_path() {
    if !privileged() {
        return;
    }
    let mut setup = Setup::new(&V4, Mode::Dsr);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    // A clean slate: the first agent's data path and neighbour entries go.
    let pins = setup.stop_agent(Stop::Term);
    let pin_dir = pins.path().display().to_string();
    let detach = setup
        .lb()
        .command(sluice_binary())
        .args(["detach", "--pin-dir", &pin_dir])
        .output()
        .unwrap_or_else(|e| panic!("sluice detach: {e}"));
    assert!(detach.status.success(), "{detach:?}");
    assert_eq!(managed_neighbours(setup.lb()), Vec::<String>::new());

    // PATH holds nsenter (to enter the namespace) and nothing else.
    let bin = tempfile::tempdir().unwrap_or_else(|e| panic!("temp folder: {e}"));
    let nsenter = which("nsenter");
    std::os::unix::fs::symlink(&nsenter, bin.path().join("nsenter"))
        .unwrap_or_else(|e| panic!("linking {}: {e}", nsenter.display()));
    let path = bin.path().as_os_str();
    setup.start_agent(Arc::new(PinDir::new()), &[("PATH", path)]);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    let served = setup.client.in_ns(|| setup.tcp_connect()).served_by;
    assert!(!served.is_empty(), "a backend answered through the VIP");
    assert!(
        !managed_neighbours(setup.lb()).is_empty(),
        "the agent created managed neighbour entries"
    );
    let log = setup.agent_log();
    assert!(
        !log.contains("could not add managed neighbour entries")
            && !log.contains("no route to the backend"),
        "{log}"
    );

    let pins = setup.stop_agent(Stop::Term);
    let pin_dir = pins.path().display().to_string();
    let detach = setup
        .lb()
        .command(sluice_binary())
        .args(["detach", "--pin-dir", &pin_dir])
        .env("PATH", path)
        .output()
        .unwrap_or_else(|e| panic!("sluice detach: {e}"));
    let said = String::from_utf8_lossy(&detach.stdout);
    assert!(detach.status.success(), "{detach:?}");
    assert!(!said.contains(" 0 neighbour"), "{said}");
    assert_eq!(
        managed_neighbours(setup.lb()),
        Vec::<String>::new(),
        "sluice detach removed them"
    );
}

/// Where `program` is on this process's PATH.
fn which(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
