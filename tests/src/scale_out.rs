//! The scale-out topology: Sluice nodes behind a router that spreads flows over them by ECMP
//! (BGP from BIRD on every node, BFD, layer-4 hashing), DSR backends every node reaches,
//! and a client behind the router.
//!
//! ```text
//!  client 10.41.0.2 ── 10.41.0.1 router 10.40.0.1 ─┐
//!                                                   ├─ switch (br0) ── node i 10.40.0.1i
//!                                                   │                  backend j 10.40.0.2j
//! ```
//! The router learns VIP 10.99.0.1 from each node's BIRD (the agent's `[announce]` table)
//! and installs one multipath route, a next hop per announcing node. Backends hold the VIP
//! on `lo` and answer the client through the router, never through a node.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};

use crate::{
    Bird, DEFAULT_ADMIN, Lan, Netns, NsTask, SluiceAgent, XdpPassGuard, add_addr, attach_xdp_pass,
    disable_tx_offload, eventually, hold_vip_for_dsr, http_client, ipv4_forwarding, route_add,
    shipped_bird_config, sluice_cli, sysctl, veth,
};

/// The VIP every node announces.
pub const VIP: &str = "10.99.0.1";
/// The TCP service port on the VIP (and on the backends: DSR keeps the port).
pub const PORT: u16 = 7000;
/// The routing table the agents write their VIP routes to.
pub const ANNOUNCE_TABLE: u32 = 100;
/// BGP hold time in the shipped BIRD configs: withdrawal later than this means BFD failed.
pub const HOLD_TIME: Duration = Duration::from_secs(9);
const ROUTER: &str = "10.40.0.1";
const TABLE_SIZE: u32 = 65537;

/// One Sluice node: its namespace, agent and BGP daemon.
pub struct Node {
    /// The agent (`None` once killed).
    pub agent: Option<SluiceAgent>,
    /// BIRD (`None` once killed).
    pub bird: Option<Bird>,
    /// The node's address on the router's link (its BGP next hop).
    pub address: String,
    pub ns: Netns,
}

/// The running topology.
pub struct ScaleOut {
    _servers: Vec<NsTask<()>>,
    pub nodes: Vec<Node>,
    pub router_bird: Bird,
    _pass: Vec<XdpPassGuard>,
    backends: Vec<String>,
    backend_ns: Vec<Netns>,
    pub client: Netns,
    pub router: Netns,
    _lan: Lan,
}

impl ScaleOut {
    /// Builds `nodes` Sluice nodes and `backends` backends, and waits until the router has
    /// every node as a next hop for the VIP.
    pub fn new(nodes: usize, backends: usize) -> ScaleOut {
        let lan = Lan::new();
        let router = Netns::new("router");
        let client = Netns::new("client");
        lan.connect(&router, "eth0");
        add_addr(&router, "eth0", &format!("{ROUTER}/24"));
        veth(&client, "eth0", &router, "eth1");
        add_addr(&client, "eth0", "10.41.0.2/24");
        add_addr(&router, "eth1", "10.41.0.1/24");
        route_add(&client, "default", "10.41.0.1");
        // Client packets cross a node's native XDP, which loses "checksum to be filled in".
        disable_tx_offload(&client, "eth0");
        sysctl(&router, "net.ipv4.conf.all.forwarding", "1");
        // ECMP by the 5-tuple, so one client's flows spread over the nodes.
        sysctl(&router, "net.ipv4.fib_multipath_hash_policy", "1");
        let router_bird = Bird::start(
            &router,
            &shipped_bird_config(
                "router.conf",
                &[("ROUTER_ADDRESS", ROUTER), ("NODE_NETWORK", "10.40.0.0/24")],
            ),
        );

        let mut backend_ns = Vec::new();
        let mut servers = Vec::new();
        let mut backend_addrs = Vec::new();
        for j in 0..backends {
            let addr = format!("10.40.0.{}", 21 + j);
            let host = Netns::new("backend");
            lan.connect(&host, "eth0");
            add_addr(&host, "eth0", &format!("{addr}/24"));
            hold_vip_for_dsr(&host, "eth0", &format!("{VIP}/32"));
            route_add(&host, "default", ROUTER);
            disable_tx_offload(&host, "eth0");
            servers.push(host.spawn_task(echo_server(
                addr.clone(),
                SocketAddr::from(([0, 0, 0, 0], PORT)),
            )));
            backend_ns.push(host);
            backend_addrs.push(addr);
        }

        let mut pass = Vec::new();
        let mut site = ScaleOut {
            _servers: servers,
            nodes: Vec::new(),
            router_bird,
            _pass: Vec::new(),
            backends: backend_addrs,
            backend_ns,
            client,
            router,
            _lan: lan,
        };
        for i in 0..nodes {
            let address = format!("10.40.0.{}", 11 + i);
            let ns = Netns::new("node");
            let port = site._lan.connect(&ns, "eth0");
            add_addr(&ns, "eth0", &format!("{address}/24"));
            ipv4_forwarding(&ns, "eth0");
            // XDP_TX out of the node's eth0 lands on its bridge port, which must run XDP.
            pass.push(attach_xdp_pass(site._lan.switch(), &port));
            let bird = Bird::start(
                &ns,
                &shipped_bird_config(
                    "node.conf",
                    &[
                        ("NODE_ADDRESS", &address),
                        ("ROUTER_ADDRESS", ROUTER),
                        ("SLUICE_TABLE", &ANNOUNCE_TABLE.to_string()),
                    ],
                ),
            );
            let mut agent = SluiceAgent::start(&ns, &site.node_config());
            agent.wait_attached(&ns, "eth0", Duration::from_secs(20));
            site.nodes.push(Node {
                agent: Some(agent),
                bird: Some(bird),
                address,
                ns,
            });
        }
        site._pass = pass;
        let all: Vec<String> = site.nodes.iter().map(|n| n.address.clone()).collect();
        site.wait_for_next_hops(&all, Duration::from_secs(30));
        site
    }

    /// The agent config every node runs (identical on all of them, as Maglev needs).
    pub fn node_config(&self) -> String {
        let mut text = format!(
            "[[interface]]\nname = \"eth0\"\nxdp_mode = \"native\"\n\n\
             [announce]\ntable = {ANNOUNCE_TABLE}\nwithdraw_grace = \"2s\"\n\n\
             [[pool]]\nname = \"echo\"\nwhen_no_healthy = \"refuse\"\n\
             [pool.health_check]\nkind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\n"
        );
        for addr in &self.backends {
            text += &format!("[[pool.backend]]\naddress = \"{addr}\"\nport = {PORT}\n");
        }
        text += &format!(
            "\n[[service]]\nname = \"echo\"\nvip = \"{VIP}\"\nport = {PORT}\nprotocol = \"tcp\"\n\
             [service.l4]\nmode = \"dsr\"\npool = \"echo\"\n"
        );
        text
    }

    /// The router's next hops for the VIP, sorted.
    pub fn next_hops(&self) -> Vec<String> {
        let routes = self.router.ip(["-4", "route", "show", VIP]);
        let mut hops: Vec<String> = routes
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router's next hops for the VIP are exactly `wanted`.
    pub fn wait_for_next_hops(&self, wanted: &[String], timeout: Duration) {
        let mut wanted = wanted.to_vec();
        wanted.sort();
        eventually(timeout, || {
            let hops = self.next_hops();
            if hops == wanted {
                Ok(())
            } else {
                Err(format!(
                    "next hops {hops:?}, want {wanted:?}\nrouter BIRD:\n{}\n{}",
                    self.router_bird.ctl("show protocols"),
                    self.router_bird.log()
                ))
            }
        });
    }

    /// Polls the router every millisecond until node `i` is no longer a next hop; returns
    /// how long that took from `since`. Panics after `timeout`.
    pub fn time_until_withdrawn(&self, i: usize, since: Instant, timeout: Duration) -> Duration {
        let address = &self.nodes[i].address;
        loop {
            if !self.next_hops().contains(address) {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < timeout,
                "node {address} still a next hop after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Node `i` dies: its link is cut first (nothing it does reaches the router any more,
    /// so only BFD can tell), then its agent and BIRD are killed.
    pub fn kill_node(&mut self, i: usize) -> Instant {
        let node = &mut self.nodes[i];
        node.ns.ip(["link", "set", "eth0", "down"]);
        let at = Instant::now();
        if let Some(mut bird) = node.bird.take() {
            bird.kill();
        }
        drop(node.agent.take());
        at
    }

    /// Takes backend `j` off the network (its link goes down, so health checks fail) or puts
    /// it back.
    pub fn set_backend_link(&self, j: usize, up: bool) {
        let host = &self.backend_ns[j];
        host.ip(["link", "set", "eth0", if up { "up" } else { "down" }]);
        if up {
            // A link going down drops its routes; they come back with it.
            host.ip(["route", "replace", "default", "via", ROUTER]);
        }
    }

    /// Runs a `sluice` CLI verb against node `i`'s agent; panics when it fails.
    pub fn sluice(&self, i: usize, args: &[&str]) -> String {
        let (ok, output) = sluice_cli(&self.nodes[i].ns, args);
        assert!(ok, "sluice {args:?} on node {i} failed: {output}");
        output
    }

    /// A metric of node `i`'s agent: the sum of every sample of `name` (all label sets).
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        let text = self.nodes[i]
            .ns
            .in_ns(|| {
                http_client::request(DEFAULT_ADMIN, "GET", "/metrics", Duration::from_secs(5))
            })
            .unwrap_or_else(|e| panic!("GET /metrics of node {i}: {e}"))
            .body;
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// New flows node `i` has placed by Maglev (connection-table misses, SYN or not).
    pub fn new_flows(&self, i: usize) -> u64 {
        self.metric(i, "sluice_l4_service_new_flows_total") as u64
    }

    /// The backend the `lb-common` model says a flow from `client` goes to.
    pub fn model(&self) -> Model {
        let backends: Vec<MaglevBackend> = self
            .backends
            .iter()
            .map(|addr| MaglevBackend {
                key: BackendKey::from(SocketAddr::new(ip(addr), PORT)),
                weight: 1,
            })
            .collect();
        let table = MaglevTable::build(&backends, TABLE_SIZE, 0).unwrap_or_else(|e| panic!("{e}"));
        Model {
            table,
            names: self.backends.clone(),
        }
    }
}

/// The Maglev table every node builds, to predict each flow's backend.
pub struct Model {
    table: MaglevTable,
    names: Vec<String>,
}

impl Model {
    /// The backend a TCP flow from `client` to the VIP lands on.
    pub fn predict(&self, client: SocketAddr) -> &str {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (client.ip(), ip(VIP)) else {
            panic!("IPv4 only: {client}");
        };
        let input = FlowHashInput::from_v4(src.octets(), dst.octets(), client.port(), PORT, 6);
        let slot = maglev_slot(flow_hash(&input, 0), TABLE_SIZE) as usize;
        &self.names[self.table.slots()[slot] as usize]
    }
}

/// A TCP connection to the VIP, held open. The backend first says its name, then echoes.
pub struct Flow {
    pub local: SocketAddr,
    pub served_by: String,
    stream: TcpStream,
    /// Bytes sent and echoed back so far.
    pub echoed: u64,
}

impl Flow {
    /// Connects to the VIP (call from a thread inside the client namespace).
    pub fn open() -> std::io::Result<Flow> {
        let vip = SocketAddr::new(ip(VIP), PORT);
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        let local = stream.local_addr()?;
        let mut name = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            (&stream).read_exact(&mut byte)?;
            name.push(byte[0]);
        }
        Ok(Flow {
            local,
            served_by: String::from_utf8_lossy(&name).trim().to_string(),
            stream,
            echoed: 0,
        })
    }

    /// Sends `len` bytes of a pattern unique to this flow and its position, and checks that
    /// exactly those come back: a reset, a lost or a foreign byte is an error.
    pub fn exchange(&mut self, len: usize) -> std::io::Result<()> {
        let start = self.echoed;
        let seed = u64::from(self.local.port());
        let data: Vec<u8> = (0..len as u64)
            .map(|k| ((start + k).wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect();
        self.stream.write_all(&data)?;
        let mut back = vec![0u8; len];
        self.stream.read_exact(&mut back)?;
        if back != data {
            return Err(std::io::Error::other(format!(
                "flow {}: bytes {start}.. came back different",
                self.local
            )));
        }
        self.echoed += len as u64;
        Ok(())
    }
}

/// Says `name` on each connection, then echoes every byte back.
async fn echo_server(name: String, bind: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    while let Ok((mut conn, _)) = listener.accept().await {
        let line = format!("{name}\n");
        tokio::spawn(async move {
            if conn.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A plain HTTP/1.1 GET; the body.
fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}
