//! The demo's network: a client, the load balancer and four backends, each a namespace, all
//! on one bridge (10.70.0.0/24) that lives in a `switch` namespace. The addresses here are
//! the ones `config/demo.toml` names.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use anyhow::{Result, anyhow};
use sluice_tests::{
    Lan, Netns, XdpPassGuard, add_addr, attach_xdp_pass_from, disable_tx_offload, hold_vip_for_dsr,
    ipv4_forwarding, route_add, xdp_program,
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
pub const LB: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 2);
/// The l4 service (`web`): forwarded by the XDP program, DSR.
pub const WEB_VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 70, 100, 10), 80);
/// The l7 service (`app`): an address of the load balancer, served by the agent.
pub const APP_VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 70, 100, 20), 443);
/// Where the agent's admin API listens, inside the load balancer's namespace.
pub const ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100);
const PREFIX_LEN: u8 = 24;
/// The route the client takes to both VIPs.
const VIP_NET: &str = "10.70.100.0/24";

/// Which service a backend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Behind the l4 DSR service: holds the VIP on `lo`, listens on the service port.
    L4,
    /// Behind the l7 service: plain HTTP on its own address.
    L7,
}

/// One backend host.
#[derive(Clone, Copy, Debug)]
pub struct BackendPlan {
    /// Its name in the config; the server answers every request with it.
    pub name: &'static str,
    pub address: Ipv4Addr,
    pub port: u16,
    pub tier: Tier,
}

impl BackendPlan {
    /// Where its server listens: every address for l4 (the VIP for clients, its own
    /// address for health checks), its own address for l7.
    pub fn bind(&self) -> SocketAddr {
        let ip = match self.tier {
            Tier::L4 => Ipv4Addr::UNSPECIFIED,
            Tier::L7 => self.address,
        };
        SocketAddr::from((ip, self.port))
    }
}

pub const BACKENDS: [BackendPlan; 4] = [
    backend("web-1", 11, 80, Tier::L4),
    backend("web-2", 12, 80, Tier::L4),
    backend("app-1", 21, 8080, Tier::L7),
    backend("app-2", 22, 8080, Tier::L7),
];

const fn backend(name: &'static str, host: u8, port: u16, tier: Tier) -> BackendPlan {
    BackendPlan {
        name,
        address: Ipv4Addr::new(10, 70, 0, host),
        port,
        tier,
    }
}

/// The namespaces and links; dropping it deletes them all (the switch last, taking every
/// veth with it). Built from the test harness's pieces (`sluice_tests`), as the tests'
/// topologies are.
pub struct Topology {
    pub client: Netns,
    pub lb: Netns,
    /// In [`BACKENDS`] order.
    pub backends: Vec<Netns>,
    /// `sluice_pass` on the load balancer's bridge port, dropped (detached) before the
    /// switch goes.
    _pass: XdpPassGuard,
    lan: Lan,
}

impl Topology {
    /// Builds the network; `ebpf_object` provides the XDP_PASS program for the bridge port.
    /// A step that fails panics with what failed (the harness's guards still remove what
    /// was made); the panic is turned into this error.
    pub fn build(ebpf_object: &Path) -> Result<Topology> {
        std::panic::catch_unwind(|| Topology::wire(ebpf_object)).map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a step panicked");
            anyhow!("building the demo network: {why}")
        })
    }

    fn wire(ebpf_object: &Path) -> Topology {
        let lan = Lan::new();
        let client = Netns::new("client");
        plug(&lan, &client, CLIENT);
        route_add(&client, VIP_NET, &LB.to_string());

        let lb = Netns::new("lb");
        let lb_port = plug(&lan, &lb, LB);
        add_addr(&lb, "lo", &format!("{}/32", APP_VIP.ip()));
        ipv4_forwarding(&lb, "eth0");
        // XDP_TX out of the load balancer's eth0 arrives on its bridge port, a veth, which
        // drops it unless an XDP program runs there too.
        let pass = attach_xdp_pass_from(lan.switch(), &lb_port, ebpf_object);

        let mut backends = Vec::new();
        for plan in BACKENDS {
            let ns = Netns::new(&plan.name.replace('-', ""));
            plug(&lan, &ns, plan.address);
            if plan.tier == Tier::L4 {
                hold_vip_for_dsr(&ns, "eth0", &format!("{}/32", WEB_VIP.ip()));
            }
            backends.push(ns);
        }
        Topology {
            client,
            lb,
            backends,
            _pass: pass,
            lan,
        }
    }

    /// The names of all its namespaces.
    pub fn names(&self) -> Vec<String> {
        [&self.client, &self.lb]
            .into_iter()
            .chain(&self.backends)
            .chain([self.lan.switch()])
            .map(|ns| ns.name().to_string())
            .collect()
    }

    /// The backend namespace for `name` in [`BACKENDS`].
    pub fn backend(&self, name: &str) -> Option<&Netns> {
        BACKENDS
            .iter()
            .position(|plan| plan.name == name)
            .and_then(|index| self.backends.get(index))
    }
}

/// Connects `host` to the bridge through a veth (`eth0` on the host), gives it `address`,
/// and returns the switch-side port's name.
fn plug(lan: &Lan, host: &Netns, address: Ipv4Addr) -> String {
    let port = lan.connect(host, "eth0");
    add_addr(host, "eth0", &format!("{address}/{PREFIX_LEN}"));
    // Native XDP on a veth loses the "checksum still to be filled in" state of frames its
    // peer's stack sent; a real NIC fills checksums before the wire, here the sender must.
    disable_tx_offload(host, "eth0");
    port
}

/// Whether an XDP program is attached to `ifname` in `ns`.
pub fn has_xdp(ns: &Netns, ifname: &str) -> bool {
    xdp_program(ns, ifname).is_some()
}
