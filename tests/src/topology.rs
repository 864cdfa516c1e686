//! A shared layer-2 segment: a bridge in its own "switch" namespace that hosts plug into.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Netns;
use crate::link::{bridge, enslave, veth};

/// Name of the bridge inside the switch namespace.
const BRIDGE: &str = "br0";

/// An Ethernet segment: a bridge `br0` alone in a `switch` namespace. Each host joins it with
/// [`Lan::connect`], which makes a veth whose host end is named as asked and whose switch end
/// (`p0`, `p1`, ...) is a bridge port. Dropping the `Lan` deletes the switch namespace and with
/// it every port and its host-side peer.
///
/// ```no_run
/// # use sluice_tests::{Lan, Netns, add_addr};
/// let lan = Lan::new();
/// let client = Netns::new("client");
/// lan.connect(&client, "eth0");
/// add_addr(&client, "eth0", "10.10.0.1/24");
/// ```
#[derive(Debug)]
pub struct Lan {
    switch: Netns,
    ports: AtomicUsize,
}

impl Lan {
    /// Creates the switch namespace and its bridge.
    pub fn new() -> Lan {
        let switch = Netns::new("switch");
        bridge(&switch, BRIDGE);
        Lan {
            switch,
            ports: AtomicUsize::new(0),
        }
    }

    /// Plugs `host` into the segment through a veth named `ifname` on the host's side, up
    /// on both sides. Returns the name of the bridge port on the switch's side.
    pub fn connect(&self, host: &Netns, ifname: &str) -> String {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        veth(host, ifname, &self.switch, &port);
        enslave(&self.switch, &port, BRIDGE);
        port
    }

    /// The switch namespace, e.g. to watch traffic on a port.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The bridge's name inside [`Lan::switch`].
    pub fn bridge(&self) -> &str {
        BRIDGE
    }
}

impl Default for Lan {
    fn default() -> Lan {
        Lan::new()
    }
}
