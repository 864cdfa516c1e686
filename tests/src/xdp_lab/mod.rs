//! The BPF_PROG_TEST_RUN lab shared by the XDP packet tests and the XDP bench: one network
//! namespace whose FIB and neighbour tables make every `bpf_fib_lookup` answer known in
//! advance, the addresses in it, the map values both fill, the frames both send ([`frames`])
//! and the test run itself.

mod dataplane;
pub mod frames;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::{MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, TestRunResult, Xdp};
use lb_common::addr::{PROTO_TCP, PROTO_UDP};
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::service::ServiceValue;
use lb_common::stats::Counter;

use crate::{Netns, add_addr, format_mac, if_index, link_up, sysctl};

pub use self::dataplane::{Dataplane, Outcome};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The load balancer's interface, where every frame arrives.
pub const ETH0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe0];
/// eth0's veth peer, in the same namespace: a second interface to redirect to.
pub const ETH1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe1];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x10];
/// The client; the bench's fresh clients are elsewhere in 10.1.0.0/16 and fd01::/64.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x10);
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 1);
/// Backends with a permanent neighbour entry on eth0: `backend_ip(i, ..)` for `i < BACKENDS`.
pub const BACKENDS: usize = 8;
/// A backend on eth1's network (10.3.0.20, fd03::20).
pub const FAR_MAC: [u8; 6] = [0x02, 0xb1, 0, 0, 0, 0x20];
pub const FAR4: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 20);
pub const FAR6: Ipv6Addr = Ipv6Addr::new(0xfd03, 0, 0, 0, 0, 0, 0, 0x20);
/// On eth0's network but with no neighbour entry.
pub const UNRESOLVED4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 99);
/// No route at all (the namespace has no default route).
pub const UNROUTABLE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Behind the gateway 10.2.0.254, so not on link.
pub const ROUTED4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 5);

/// Which family a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a frame whose IP version is 6 (`true`) or 4.
    pub fn from_ipv6(ipv6: bool) -> Family {
        if ipv6 { Family::V6 } else { Family::V4 }
    }
}

/// What a frame carries above IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn protocol(self) -> u8 {
        match self {
            L4::Tcp => PROTO_TCP,
            L4::Udp => PROTO_UDP,
        }
    }
}

pub fn client_ip(family: Family) -> IpAddr {
    match family {
        Family::V4 => CLIENT4.into(),
        Family::V6 => CLIENT6.into(),
    }
}

pub fn vip(family: Family) -> IpAddr {
    match family {
        Family::V4 => VIP4.into(),
        Family::V6 => VIP6.into(),
    }
}

/// The low byte of backend `i`'s addresses and MAC: 0x11 + i.
fn backend_host(i: usize) -> u8 {
    u8::try_from(i)
        .ok()
        .and_then(|i| i.checked_add(0x11))
        .unwrap_or_else(|| panic!("backend index {i}"))
}

/// Backend `i`: 10.2.0.(0x11+i) or fd02::(0x11+i), MAC 02:b0:00:00:00:(0x11+i).
pub fn backend_ip(i: usize, family: Family) -> IpAddr {
    let host = backend_host(i);
    match family {
        Family::V4 => Ipv4Addr::new(10, 2, 0, host).into(),
        Family::V6 => Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, host.into()).into(),
    }
}

pub fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0xb0, 0, 0, 0, backend_host(i)]
}

/// Which backend (with a neighbour entry) a MAC address is, if any.
pub fn backend_index_of_mac(mac: &[u8]) -> Option<usize> {
    (0..BACKENDS).find(|&i| mac == backend_mac(i))
}

/// An active backend map value for `addr`, generation 1.
pub fn backend_value(addr: SocketAddr) -> BackendValue {
    let (wire, family) = lb_common::addr::to_wire(addr.ip());
    BackendValue {
        addr: wire,
        port: addr.port().to_be(),
        family,
        flags: BACKEND_ACTIVE,
        generation: 1,
    }
}

/// A service value: id 1, seed 0.
pub fn service(flags: u32, ring_offset: u32, table_size: u32) -> ServiceValue {
    ServiceValue {
        id: 1,
        flags,
        ring_offset,
        table_size,
        hash_seed: 0,
        region_start: 0,
    }
}

/// A namespace holding a veth pair (eth0, eth1) with addresses, forwarding on, and permanent
/// neighbours for the client and every backend. Deleted on drop.
pub struct Lab {
    ns: Netns,
    eth0: u32,
}

impl Lab {
    /// Creates the namespace, its name starting with `name`. Panics with the failing `ip`
    /// command's stderr.
    pub fn new(name: &str) -> Lab {
        let ns = Netns::new(name);
        let (mac0, mac1) = (format_mac(ETH0_MAC), format_mac(ETH1_MAC));
        ns.ip([
            "link", "add", "eth0", "address", &mac0, "type", "veth", "peer", "name", "eth1",
            "address", &mac1,
        ]);
        link_up(&ns, "eth0");
        link_up(&ns, "eth1");
        for cidr in ["10.1.0.1/16", "10.2.0.1/24", "fd01::1/64", "fd02::1/64"] {
            add_addr(&ns, "eth0", cidr);
        }
        for cidr in ["10.3.0.1/24", "fd03::1/64"] {
            add_addr(&ns, "eth1", cidr);
        }
        sysctl(&ns, "net.ipv4.conf.all.forwarding", "1");
        sysctl(&ns, "net.ipv6.conf.all.forwarding", "1");
        let mut neighbours = vec![
            (IpAddr::from(CLIENT4), CLIENT_MAC, "eth0"),
            (CLIENT6.into(), CLIENT_MAC, "eth0"),
            (FAR4.into(), FAR_MAC, "eth1"),
            (FAR6.into(), FAR_MAC, "eth1"),
            (
                Ipv4Addr::new(10, 2, 0, 254).into(),
                [0x02, 0xb0, 0, 0, 0, 0xfe],
                "eth0",
            ),
        ];
        for i in 0..BACKENDS {
            for family in [Family::V4, Family::V6] {
                neighbours.push((backend_ip(i, family), backend_mac(i), "eth0"));
            }
        }
        for (addr, mac, dev) in neighbours {
            let (addr, mac) = (addr.to_string(), format_mac(mac));
            ns.ip([
                "neigh",
                "add",
                &addr,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        ns.ip(["route", "add", "10.50.0.0/24", "via", "10.2.0.254"]);
        let eth0 = if_index(&ns, "eth0");
        Lab { ns, eth0 }
    }

    /// The namespace, to change its neighbours or routes, or to run a thread in it.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// eth0's interface index, valid inside the namespace only.
    pub fn eth0(&self) -> u32 {
        self.eth0
    }

    /// Loads the project's program (a fresh load: maps start empty) inside the namespace and
    /// runs `f` on that thread, so the test run's ingress ifindex and FIB lookups are the
    /// namespace's. Panics when the object cannot be built or verified.
    pub fn run<T: Send>(&self, f: impl FnOnce(&mut Dataplane) -> T + Send) -> T {
        let object = crate::ebpf_object();
        self.ns.in_ns(|| {
            let mut dp = Dataplane::load(&object, self.eth0);
            f(&mut dp)
        })
    }
}

/// Runs `frame` through `program` as if it arrived on interface `ifindex`, `repeat` times in
/// one call; the output frame goes to `out`. The kernel copies the frame in afresh for each
/// call but not between repeats, so only `repeat = 1` is safe for a program that rewrites the
/// frame, unless a wrapper restores it; the result's duration is the average.
pub fn test_run(
    program: &Xdp,
    ifindex: u32,
    frame: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<TestRunResult, ProgramError> {
    // A frame too long for the kernel is refused by it (EINVAL), not cut short here.
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. The kernel wants data = metadata length (none), data_end = the
    // frame's length, data_meta and egress_ifindex zero.
    let ctx: Vec<u8> = [0, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect();
    program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ctx_in: Some(&ctx),
        repeat,
        ..TestRunOptions::new()
    })
}

/// The packets of one per-CPU counter slot (`GLOBAL_STATS`, `ICMP_STATS`), summed over CPUs.
pub fn packets<T: std::borrow::Borrow<MapData>>(
    array: &PerCpuArray<T, Counter>,
    slot: u32,
) -> Result<u64, MapError> {
    Ok(array.get(&slot, 0)?.iter().map(|c| c.packets).sum())
}
