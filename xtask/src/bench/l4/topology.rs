//! The L4 topology: a client, the load balancer and two backends on one bridge, each in its own
//! namespace. The client reaches the VIP through the load balancer. Backends hold the VIP on
//! `lo` (for DSR) and answer the client directly; they also answer the load balancer's own
//! address, where HAProxy and nginx connect from. The VIP is also on the load balancer's `lo`,
//! where HAProxy and nginx listen while Sluice is not running.
//!
//! Every host sends with TX checksum offload off: native XDP on veth loses the "checksum to be
//! filled in" state of locally sent frames, and keeping it off everywhere makes every host
//! send MTU-sized frames whichever contender runs.

use anyhow::Result;
use sluice_tests::{
    Lan, Netns, XdpPassGuard, add_addr, attach_xdp_pass, disable_tx_offload, hold_vip_for_dsr,
    ipv4_forwarding, route_add, sysctl,
};

use super::server::Servers;

pub const CLIENT: &str = "10.40.0.1";
pub const CLIENT_NET: &str = "10.40.0.0/24";
const LB_FRONT: &str = "10.40.0.2";
pub const LB_BACK: &str = "10.41.0.2";
pub const VIP: &str = "10.99.0.1";
pub const BACKENDS: [&str; 2] = ["10.41.0.11", "10.41.0.12"];
/// Connections/s: one byte each way, the backend closes.
pub const RR_PORT: u16 = 7000;
/// Throughput: the client sends, the backend counts and answers the count.
pub const SINK_PORT: u16 = 7001;

/// The namespaces and what runs in them; dropped in field order, servers first.
pub struct Topology {
    _servers: Vec<Servers>,
    _pass: XdpPassGuard,
    pub client: Netns,
    pub lb: Netns,
    backends: Vec<Netns>,
    _lan: Lan,
}

impl Topology {
    /// Builds everything. The helpers panic with the failing command's stderr.
    pub fn new() -> Result<Topology> {
        let lan = Lan::new();
        let client = Netns::new("client");
        let lb = Netns::new("lb");
        lan.connect(&client, "eth0");
        let lb_port = lan.connect(&lb, "eth0");
        add_addr(&client, "eth0", &format!("{CLIENT}/24"));
        add_addr(&lb, "eth0", &format!("{LB_FRONT}/24"));
        add_addr(&lb, "eth0", &format!("{LB_BACK}/24"));
        add_addr(&lb, "lo", &format!("{VIP}/32"));
        route_add(&client, &format!("{VIP}/32"), LB_FRONT);
        for ns in [&client, &lb] {
            disable_tx_offload(ns, "eth0");
            // Tens of thousands of connections per second cycle through ports fast.
            sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65535");
        }
        ipv4_forwarding(&lb, "eth0");
        // XDP_TX out of lb/eth0 lands on its bridge port, a veth that must run XDP to take it.
        let pass = attach_xdp_pass(lan.switch(), &lb_port);

        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for addr in BACKENDS {
            let host = Netns::new("backend");
            lan.connect(&host, "eth0");
            add_addr(&host, "eth0", &format!("{addr}/24"));
            hold_vip_for_dsr(&host, "eth0", &format!("{VIP}/32"));
            route_add(&host, "default", LB_BACK);
            // DSR: answers go straight to the client.
            host.ip(["route", "add", CLIENT_NET, "dev", "eth0"]);
            disable_tx_offload(&host, "eth0");
            servers.push(Servers::start(&host)?);
            backends.push(host);
        }
        Ok(Topology {
            _servers: servers,
            _pass: pass,
            client,
            lb,
            backends,
            _lan: lan,
        })
    }
}

impl Topology {
    /// Takes backend `index` off the network (its link goes down), as a host that dies.
    pub fn kill_backend(&self, index: usize) {
        self.backends[index].ip(["link", "set", "eth0", "down"]);
    }

    /// Puts backend `index` back, with the routes its link took down with it.
    pub fn revive_backend(&self, index: usize) {
        let host = &self.backends[index];
        host.ip(["link", "set", "eth0", "up"]);
        host.ip(["route", "replace", "default", "via", LB_BACK]);
        host.ip(["route", "replace", CLIENT_NET, "dev", "eth0"]);
    }
}
