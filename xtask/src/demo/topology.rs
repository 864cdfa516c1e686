//! The demo's network: a client, the load balancer and four backends, each a namespace, all
//! on one bridge (10.70.0.0/24) that lives in a `switch` namespace. The addresses here are
//! the ones `config/demo.toml` names.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};

use super::netns::{Netns, command, run};

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
/// veth with it).
pub struct Topology {
    pub client: Netns,
    pub lb: Netns,
    /// In [`BACKENDS`] order.
    pub backends: Vec<Netns>,
    /// `sluice_pass` on the load balancer's bridge port, dropped (detached) before the
    /// namespaces go.
    pass: Option<Ebpf>,
    switch: Netns,
}

impl Topology {
    /// Builds the network; `ebpf_object` provides the XDP_PASS program for the bridge port.
    pub fn build(ebpf_object: &Path) -> Result<Topology> {
        let switch = Netns::create("switch")?;
        switch.ip(["link", "add", "name", "br0", "type", "bridge"])?;
        switch.ip(["link", "set", "br0", "up"])?;
        let client = Netns::create("client")?;
        let lb = Netns::create("lb")?;
        let mut backends = Vec::new();
        for plan in BACKENDS {
            backends.push(Netns::create(&plan.name.replace('-', ""))?);
        }
        let mut topology = Topology {
            client,
            lb,
            backends,
            pass: None,
            switch,
        };
        topology.wire(ebpf_object)?;
        Ok(topology)
    }

    fn wire(&mut self, ebpf_object: &Path) -> Result<()> {
        self.plug(&self.client, 0, CLIENT)?;
        self.client
            .ip(["route", "add", VIP_NET, "via", &LB.to_string()])?;

        let lb_port = self.plug(&self.lb, 1, LB)?;
        self.lb
            .ip(["addr", "add", &format!("{}/32", APP_VIP.ip()), "dev", "lo"])?;
        // The XDP program asks the FIB for next hops, which answers only where forwarding is on.
        self.lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        self.lb.sysctl("net.ipv4.conf.eth0.forwarding", "1")?;
        // XDP_TX out of the load balancer's eth0 arrives on its bridge port, a veth, which
        // drops it unless an XDP program runs there too.
        self.pass = Some(attach_pass(&self.switch, &lb_port, ebpf_object)?);

        for (index, (plan, ns)) in BACKENDS.iter().zip(&self.backends).enumerate() {
            self.plug(ns, index + 2, plan.address)?;
            if plan.tier == Tier::L4 {
                // DSR: the backend accepts packets for the VIP, answers from it, and never
                // answers ARP for it (the load balancer owns the VIP on the wire).
                ns.ip(["addr", "add", &format!("{}/32", WEB_VIP.ip()), "dev", "lo"])?;
                for iface in ["all", "eth0"] {
                    ns.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
                    ns.sysctl(&format!("net.ipv4.conf.{iface}.arp_announce"), "2")?;
                }
            }
        }
        Ok(())
    }

    /// Connects `host` to the bridge through a veth (`eth0` on the host, `p<index>` on the
    /// switch), gives it `address`, and returns the switch-side name.
    fn plug(&self, host: &Netns, index: usize, address: Ipv4Addr) -> Result<String> {
        let port = format!("p{index}");
        run(command("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.switch.name(),
        ]))?;
        self.switch
            .ip(["link", "set", &port, "master", "br0", "up"])?;
        host.ip([
            "addr",
            "add",
            &format!("{address}/{PREFIX_LEN}"),
            "dev",
            "eth0",
        ])?;
        host.ip(["link", "set", "eth0", "up"])?;
        // Native XDP on a veth loses the "checksum still to be filled in" state of frames its
        // peer's stack sent; a real NIC fills checksums before the wire, here the sender must.
        run(host.command("ethtool").args(["-K", "eth0", "tx", "off"]))
            .context("turning TX checksum offload off (is ethtool installed?)")?;
        Ok(port)
    }

    /// The names of all its namespaces.
    pub fn names(&self) -> Vec<String> {
        [&self.client, &self.lb]
            .into_iter()
            .chain(&self.backends)
            .chain([&self.switch])
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

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(ebpf) = self.pass.take() {
            // A bpf_link detaches wherever its fd is closed; a netlink attachment (older
            // kernels) by ifindex, which only means something inside the namespace.
            if let Err(err) = self.switch.run_in(move || drop(ebpf)) {
                eprintln!("demo: detaching sluice_pass: {err:#}");
            }
        }
    }
}

/// Loads `sluice_pass` from the eBPF object and attaches it to `ifname` in `ns`.
fn attach_pass(ns: &Netns, ifname: &str, object: &Path) -> Result<Ebpf> {
    let name = lb_common::PASS_PROGRAM_NAME;
    ns.run_in(|| -> Result<Ebpf> {
        let mut ebpf =
            Ebpf::load_file(object).with_context(|| format!("loading {}", object.display()))?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{} holds no program {name}", object.display()))?
            .try_into()
            .with_context(|| format!("{name} is not an XDP program"))?;
        program.load().with_context(|| format!("loading {name}"))?;
        program
            .attach(ifname, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {ifname} in {}", ns.name()))?;
        Ok(ebpf)
    })?
}

/// Whether an XDP program is attached to `ifname` in `ns` (`ip link` shows `xdp`).
pub fn has_xdp(ns: &Netns, ifname: &str) -> bool {
    command("ip")
        .args(["-n", ns.name(), "link", "show", "dev", ifname])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|word| word.starts_with("xdp"))
        })
}
