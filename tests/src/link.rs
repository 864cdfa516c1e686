//! Links, addresses, routes and sysctls inside namespaces: thin wrappers over `ip`, `ethtool`
//! and `/proc/sys`, each panicking with the tool's stderr when it fails.

use std::process::Command;

use crate::Netns;
use crate::netns::run_checked;

/// Creates a veth pair with one end named `a_if` in `a` and the other named `b_if` in `b`,
/// and brings both up. Both ends are created directly in their namespaces, so the root
/// namespace never sees the names and short ones like `eth0` are fine (15 bytes at most).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    run_checked(Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    link_up(a, a_if);
    link_up(b, b_if);
}

/// Sets `ifname` up.
pub fn link_up(ns: &Netns, ifname: &str) {
    ns.ip(["link", "set", "dev", ifname, "up"]);
}

/// Adds an address in CIDR notation, IPv4 (`10.0.0.1/24`) or IPv6 (`fd00::1/64`). IPv6
/// addresses skip duplicate address detection, so they are usable at once.
pub fn add_addr(ns: &Netns, ifname: &str, cidr: &str) {
    if cidr.contains(':') {
        ns.ip(["-6", "addr", "add", cidr, "dev", ifname, "nodad"]);
    } else {
        ns.ip(["addr", "add", cidr, "dev", ifname]);
    }
}

/// Sets the MAC address of `ifname`.
pub fn set_mac(ns: &Netns, ifname: &str, mac: [u8; 6]) {
    ns.ip(["link", "set", "dev", ifname, "address", &format_mac(mac)]);
}

/// The MAC address of `ifname`.
pub fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    ns.in_ns(|| {
        let addrs = nix::ifaddrs::getifaddrs()
            .unwrap_or_else(|e| panic!("getifaddrs in netns {}: {e}", ns.name()));
        addrs
            .filter(|a| a.interface_name == ifname)
            .find_map(|a| a.address?.as_link_addr()?.addr())
            .unwrap_or_else(|| panic!("no MAC address for {ifname} in netns {}", ns.name()))
    })
}

/// The interface index of `ifname` inside the namespace.
pub fn if_index(ns: &Netns, ifname: &str) -> u32 {
    ns.in_ns(|| {
        nix::net::if_::if_nametoindex(ifname)
            .unwrap_or_else(|e| panic!("if_nametoindex({ifname}) in netns {}: {e}", ns.name()))
    })
}

/// Adds a route to `dest` (CIDR, or `default`) through the gateway `via`, IPv4 or IPv6.
pub fn route_add(ns: &Netns, dest: &str, via: &str) {
    let family = if via.contains(':') { "-6" } else { "-4" };
    ns.ip([family, "route", "add", dest, "via", via]);
}

/// Creates a bridge named `name` in `ns` and sets it up. Its STP is off (the kernel default),
/// so ports forward as soon as they are up.
pub fn bridge(ns: &Netns, name: &str) {
    ns.ip(["link", "add", "name", name, "type", "bridge"]);
    link_up(ns, name);
}

/// Makes `ifname` a port of the bridge `bridge` (both in `ns`) and sets it up.
pub fn enslave(ns: &Netns, ifname: &str, bridge: &str) {
    ns.ip(["link", "set", "dev", ifname, "master", bridge]);
    link_up(ns, ifname);
}

/// Writes a `net.*` sysctl of the namespace, `key` in sysctl(8) form
/// (`net.ipv4.conf.all.arp_ignore`).
pub fn sysctl(ns: &Netns, key: &str, value: &str) {
    assert!(
        key.starts_with("net."),
        "sysctl {key}: only net.* keys are per namespace"
    );
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    // /proc/sys/net shows the namespace of the thread that opens it.
    ns.in_ns(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("sysctl {key}={value} in netns {}: {e}", ns.name()));
}

/// Turns IPv4 forwarding on in `ns`, for all interfaces and for `ifname`: the XDP program's
/// FIB lookups answer only where forwarding is on.
pub fn ipv4_forwarding(ns: &Netns, ifname: &str) {
    sysctl(ns, "net.ipv4.conf.all.forwarding", "1");
    sysctl(ns, &format!("net.ipv4.conf.{ifname}.forwarding"), "1");
}

/// Makes `ns` a direct-server-return backend for the VIP `vip_cidr` (`VIP/32` or `VIP/128`):
/// the VIP on `lo`, so packets to it are accepted and answered from it, and no ARP answer
/// for an IPv4 VIP on `ifname` (the load balancer owns the VIP on the wire).
pub fn hold_vip_for_dsr(ns: &Netns, ifname: &str, vip_cidr: &str) {
    add_addr(ns, "lo", vip_cidr);
    for iface in ["all", ifname] {
        sysctl(ns, &format!("net.ipv4.conf.{iface}.arp_ignore"), "1");
        sysctl(ns, &format!("net.ipv4.conf.{iface}.arp_announce"), "2");
    }
}

/// Turns TX checksum offload off on `ifname` (`ethtool -K IF tx off`). Needed on every host
/// that sends test traffic through native XDP on veth: the XDP path loses the "checksum still
/// to be filled in" state and the receiver would see bad TCP/UDP checksums.
pub fn disable_tx_offload(ns: &Netns, ifname: &str) {
    ns.run("ethtool", ["-K", ifname, "tx", "off"]);
}

/// The lines of `ip neigh show` in `ns` that are managed entries (what the agent keeps for
/// its backends' next hops).
pub fn managed_neighbours(ns: &Netns) -> Vec<String> {
    ns.ip(["neigh", "show"])
        .lines()
        .filter(|line| line.split_whitespace().any(|word| word == "managed"))
        .map(str::to_owned)
        .collect()
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
