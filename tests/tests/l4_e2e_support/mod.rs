//! The L4 end-to-end topology: a client, the load balancer and four backends on one bridge,
//! in their own namespaces. Backends live on their own subnet with the load balancer as
//! gateway (NAT replies return through it); in DSR mode they also hold the VIP on `lo` and
//! reach the client's subnet directly, so replies bypass the load balancer.
#![allow(
    dead_code,
    reason = "shared by several test binaries, each using part of it"
)]

pub mod restart;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use sluice_tests::{
    Lan, Netns, NsTask, SluiceAgent, XdpPassGuard, add_addr, attach_xdp_pass, disable_tx_offload,
    eventually, hold_vip_for_dsr, ipv4_forwarding, route_add, sluice_cli, sysctl, xdp_program,
};

pub const TCP_PORT: u16 = 7000;
pub const UDP_PORT: u16 = 7001;
const NAT_TCP_PORT: u16 = 8000;
const NAT_UDP_PORT: u16 = 8001;
const TABLE_SIZE: u32 = 65537;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dsr,
    Nat,
}

/// Addresses of one family.
pub struct Plan {
    pub client: &'static str,
    pub client_net: &'static str,
    pub lb_client_side: &'static str,
    pub lb_backend_side: &'static str,
    pub prefix_len: u8,
    pub vip: &'static str,
    /// The fourth joins only when a test adds it by reload.
    pub backends: [&'static str; 4],
    pub weights: [u16; 4],
}

pub const V4: Plan = Plan {
    client: "10.30.0.1",
    client_net: "10.30.0.0/24",
    lb_client_side: "10.30.0.2",
    lb_backend_side: "10.31.0.2",
    prefix_len: 24,
    vip: "10.99.0.1",
    backends: ["10.31.0.11", "10.31.0.12", "10.31.0.13", "10.31.0.14"],
    weights: [1, 1, 2, 1],
};

pub const V6: Plan = Plan {
    client: "fd00:30::1",
    client_net: "fd00:30::/64",
    lb_client_side: "fd00:30::2",
    lb_backend_side: "fd00:31::2",
    prefix_len: 64,
    vip: "fd00:99::1",
    backends: ["fd00:31::11", "fd00:31::12", "fd00:31::13", "fd00:31::14"],
    weights: [1, 1, 2, 1],
};

impl Plan {
    fn is_v6(&self) -> bool {
        self.vip.contains(':')
    }
    pub fn tcp_backend_port(&self, mode: Mode) -> u16 {
        if mode == Mode::Nat {
            NAT_TCP_PORT
        } else {
            TCP_PORT
        }
    }
    pub fn udp_backend_port(&self, mode: Mode) -> u16 {
        if mode == Mode::Nat {
            NAT_UDP_PORT
        } else {
            UDP_PORT
        }
    }
}

fn unspecified(plan: &Plan) -> IpAddr {
    if plan.is_v6() {
        ip("::")
    } else {
        ip("0.0.0.0")
    }
}

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// The Maglev table the agent should have built, to predict each flow's backend.
pub struct Model {
    table: MaglevTable,
    names: Vec<String>,
}

impl Model {
    pub fn predict(&self, client: SocketAddr, vip: SocketAddr, protocol: u8) -> String {
        let input = match (client.ip(), vip.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                FlowHashInput::from_v4(s.octets(), d.octets(), client.port(), vip.port(), protocol)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                FlowHashInput::from_v6(s.octets(), d.octets(), client.port(), vip.port(), protocol)
            }
            _ => panic!("mixed families: {client} to {vip}"),
        };
        let slot = maglev_slot(flow_hash(&input, 0), TABLE_SIZE) as usize;
        self.names[self.table.slots()[slot] as usize].clone()
    }
}

/// A TCP connection through the VIP, held open.
pub struct Conn {
    pub local: SocketAddr,
    pub served_by: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Asks the backend at the other end for its name again.
    pub fn ask(&mut self) -> std::io::Result<String> {
        self.reader.get_mut().write_all(b"?")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        Ok(line.trim().to_string())
    }
}

/// Answers each TCP connection on `tcp` with `name` at once and after every byte received,
/// and each UDP datagram on `udp` with `name`.
async fn identity_server(name: String, tcp: SocketAddr, udp: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tcp_addr, udp_addr) = (tcp, udp);
    let tcp = tokio::net::TcpListener::bind(tcp_addr)
        .await
        .unwrap_or_else(|e| panic!("bind tcp {tcp_addr}: {e}"));
    let udp = tokio::net::UdpSocket::bind(udp_addr)
        .await
        .unwrap_or_else(|e| panic!("bind udp {udp_addr}: {e}"));
    let line = format!("{name}\n");
    let tcp_line = line.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = tcp.accept().await {
            let line = tcp_line.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                if conn.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut buf = [0u8; 64];
    while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
        let _ = udp.send_to(name.as_bytes(), peer).await;
    }
}

/// The running topology and agent.
pub struct Setup {
    plan: &'static Plan,
    mode: Mode,
    active: usize,
    /// The `[pool.health_check]` table of every pool.
    health_check: String,
    /// A `[dataplane]` table for the config, if any (see `Setup::start_afresh`).
    pub dataplane: String,
    agent: Option<SluiceAgent>,
    _servers: Vec<NsTask<()>>,
    backends: Vec<Netns>,
    _pass: XdpPassGuard,
    pub client: Netns,
    lb: Netns,
    _lan: Lan,
}

impl Setup {
    pub fn new(plan: &'static Plan, mode: Mode) -> Setup {
        Setup::with_backends(plan, mode, 3)
    }

    /// The topology with all four backends running, `active` of them in the config.
    pub fn with_backends(plan: &'static Plan, mode: Mode, active: usize) -> Setup {
        Setup::with_health_check(plan, mode, active, "kind = \"none\"")
    }

    /// As [`Setup::with_backends`], every pool with this `[pool.health_check]` table.
    pub fn with_health_check(
        plan: &'static Plan,
        mode: Mode,
        active: usize,
        health_check: &str,
    ) -> Setup {
        let lan = Lan::new();
        let client = Netns::new("client");
        let lb = Netns::new("lb");
        lan.connect(&client, "eth0");
        let lb_port = lan.connect(&lb, "eth0");
        let len = plan.prefix_len;
        add_addr(&client, "eth0", &format!("{}/{len}", plan.client));
        add_addr(&lb, "eth0", &format!("{}/{len}", plan.lb_client_side));
        add_addr(&lb, "eth0", &format!("{}/{len}", plan.lb_backend_side));
        let host_len = if plan.is_v6() { 128 } else { 32 };
        route_add(
            &client,
            &format!("{}/{host_len}", plan.vip),
            plan.lb_client_side,
        );
        // Native XDP on veth loses the "checksum to be filled in" state of locally sent frames.
        disable_tx_offload(&client, "eth0");
        ipv4_forwarding(&lb, "eth0");
        sysctl(&lb, "net.ipv6.conf.all.forwarding", "1");
        // XDP_TX out of lb/eth0 lands on its bridge port, a veth that must run XDP to take it.
        let pass = attach_xdp_pass(lan.switch(), &lb_port);

        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for addr in plan.backends {
            let host = Netns::new("backend");
            lan.connect(&host, "eth0");
            add_addr(&host, "eth0", &format!("{addr}/{len}"));
            route_add(&host, "default", plan.lb_backend_side);
            disable_tx_offload(&host, "eth0");
            let bind = if mode == Mode::Dsr {
                hold_vip_for_dsr(&host, "eth0", &format!("{}/{host_len}", plan.vip));
                // Replies go straight to the client, not back through the load balancer.
                host.ip(["route", "add", plan.client_net, "dev", "eth0"]);
                // TCP on every local address: the VIP for clients, its own for health
                // checks. UDP on the VIP only, so answers leave with the VIP as source.
                (unspecified(plan), ip(plan.vip))
            } else {
                (ip(addr), ip(addr))
            };
            let (tcp, udp) = (plan.tcp_backend_port(mode), plan.udp_backend_port(mode));
            servers.push(host.spawn_task(identity_server(
                addr.to_string(),
                SocketAddr::new(bind.0, tcp),
                SocketAddr::new(bind.1, udp),
            )));
            backends.push(host);
        }

        let mut setup = Setup {
            plan,
            mode,
            active,
            health_check: health_check.to_string(),
            dataplane: String::new(),
            agent: None,
            _servers: servers,
            backends,
            _pass: pass,
            client,
            lb,
            _lan: lan,
        };
        let mut agent = SluiceAgent::start(&setup.lb, &setup.config_text());
        agent.wait_attached(&setup.lb, "eth0", Duration::from_secs(20));
        setup.agent = Some(agent);
        setup
    }

    /// Takes backend `index` off the network (its link goes down), as a host that dies.
    pub fn kill_backend(&self, index: usize) {
        self.backends[index].ip(["link", "set", "eth0", "down"]);
    }

    /// Puts backend `index` back on the network.
    pub fn revive_backend(&mut self, index: usize) {
        self.backends[index].ip(["link", "set", "eth0", "up"]);
        // A link going down drops its routes; they must come back with it.
        self.backends[index].ip([
            "route",
            "replace",
            "default",
            "via",
            self.plan.lb_backend_side,
        ]);
        if self.mode == Mode::Dsr {
            self.backends[index].ip(["route", "replace", self.plan.client_net, "dev", "eth0"]);
        }
    }

    /// The load balancer's namespace.
    pub fn lb(&self) -> &Netns {
        &self.lb
    }

    pub fn active_backends(&self) -> usize {
        self.active
    }

    /// The config file the agent was started with (or last reloaded with).
    pub fn config_text(&self) -> String {
        self.config_text_for(self.active)
    }

    /// The config file with the first `active` backends in the pools.
    pub fn config_text_for(&self, active: usize) -> String {
        let mode = if self.mode == Mode::Nat { "nat" } else { "dsr" };
        let pool = |name: &str, port: u16| {
            let mut text = format!(
                "[[pool]]\nname = \"{name}\"\n[pool.health_check]\n{}\n",
                self.health_check
            );
            for (addr, weight) in self
                .plan
                .backends
                .iter()
                .zip(self.plan.weights)
                .take(active)
            {
                text += &format!(
                    "[[pool.backend]]\naddress = \"{addr}\"\nport = {port}\nweight = {weight}\n"
                );
            }
            text
        };
        let service = |name: &str, port: u16, protocol: &str| {
            format!(
                "[[service]]\nname = \"{name}\"\nvip = \"{}\"\nport = {port}\nprotocol = \"{protocol}\"\n[service.l4]\nmode = \"{mode}\"\npool = \"{name}\"\n",
                self.plan.vip
            )
        };
        format!(
            "[[interface]]\nname = \"eth0\"\nxdp_mode = \"native\"\n{}{}{}{}{}",
            pool("tcp", self.plan.tcp_backend_port(self.mode)),
            pool("udp", self.plan.udp_backend_port(self.mode)),
            service("tcp", TCP_PORT, "tcp"),
            service("udp", UDP_PORT, "udp"),
            self.dataplane,
        )
    }

    /// The model of the table over the active backends listening on `port`.
    pub fn model(&self, port: u16) -> Model {
        self.model_for(port, self.active)
    }

    /// The model of the table over the first `active` backends listening on `port`.
    pub fn model_for(&self, port: u16, active: usize) -> Model {
        let backends: Vec<MaglevBackend> = self
            .plan
            .backends
            .iter()
            .zip(self.plan.weights)
            .take(active)
            .map(|(addr, weight)| MaglevBackend {
                key: BackendKey::from(SocketAddr::new(ip(addr), port)),
                weight: u32::from(weight),
            })
            .collect();
        let table = MaglevTable::build(&backends, TABLE_SIZE, 0).unwrap_or_else(|e| panic!("{e}"));
        let names = self
            .plan
            .backends
            .iter()
            .take(active)
            .map(|a| a.to_string())
            .collect();
        Model { table, names }
    }

    pub fn tcp_vip(&self) -> SocketAddr {
        SocketAddr::new(ip(self.plan.vip), TCP_PORT)
    }

    pub fn udp_vip(&self) -> SocketAddr {
        SocketAddr::new(ip(self.plan.vip), UDP_PORT)
    }

    fn agent(&self) -> &SluiceAgent {
        self.agent
            .as_ref()
            .unwrap_or_else(|| panic!("agent not started"))
    }

    /// The agent's config file.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.agent().config_path()
    }

    pub fn agent_log(&self) -> String {
        self.agent().log()
    }

    /// The first flows may wait for the backends' neighbour entries to resolve.
    pub fn wait_for_first_tcp_flow(&self) {
        eventually(Duration::from_secs(20), || {
            self.try_tcp_connect()
                .map_err(|e| format!("{e}; agent log:\n{}", self.agent_log()))
        });
    }

    fn try_tcp_connect(&self) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&self.tcp_vip(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let local = stream.local_addr()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok(Conn {
            local,
            served_by: line.trim().to_string(),
            reader,
        })
    }

    /// A TCP connection through the VIP (from a thread inside the client namespace).
    pub fn tcp_connect(&self) -> Conn {
        self.try_tcp_connect()
            .unwrap_or_else(|e| panic!("TCP through the VIP: {e}"))
    }

    /// One UDP datagram through the VIP and its answer, from a fresh source port. The socket
    /// is connected, so only an answer from VIP:port is accepted (proving NAT's reverse path).
    pub fn udp_exchange(&self) -> (SocketAddr, String) {
        let socket = UdpSocket::bind(SocketAddr::new(ip(self.plan.client), 0))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        socket
            .connect(self.udp_vip())
            .unwrap_or_else(|e| panic!("connect: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap_or_else(|e| panic!("{e}"));
        let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            socket.send(b"who").unwrap_or_else(|e| panic!("send: {e}"));
            if let Ok(n) = socket.recv(&mut buf) {
                return (local, String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        panic!("no UDP answer through the VIP to {local}");
    }

    /// Puts the fourth backend in the config and reloads (SIGHUP), waiting until applied.
    pub fn add_backend_and_reload(&mut self) {
        self.active = 4;
        let config = self.config_text();
        self.reload_with(&config);
        let log = self.agent_log();
        assert!(log.contains("config reloaded"), "log:\n{log}");
    }

    /// Writes `config` to the agent's config file, sends SIGHUP and waits for the verdict.
    pub fn reload_with(&self, config: &str) {
        let agent = self.agent();
        let path = agent.config_path();
        let before = verdicts(&agent.log());
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        agent.reload();
        eventually(Duration::from_secs(10), || {
            if verdicts(&agent.log()) > before {
                Ok(())
            } else {
                Err(format!("reload not done; log:\n{}", agent.log()))
            }
        });
    }

    /// SIGTERM: the agent exits cleanly and leaves the data path running; `sluice detach`
    /// then removes the program and every pin.
    pub fn stop(mut self) {
        let agent = self
            .agent
            .take()
            .unwrap_or_else(|| panic!("agent not started"));
        let pins = agent.pins();
        let log = agent.log();
        let status = agent.stop(Duration::from_secs(10));
        assert!(status.success(), "sluice exited with {status}; log:\n{log}");
        assert!(
            xdp_program(&self.lb, "eth0").is_some(),
            "SIGTERM leaves the program attached"
        );
        let pin_dir = pins.path().display().to_string();
        let (ok, out) = sluice_cli(&self.lb, &["detach", "--pin-dir", &pin_dir]);
        assert!(ok, "sluice detach: {out}");
        assert_eq!(
            xdp_program(&self.lb, "eth0"),
            None,
            "`sluice detach` detaches the program: {out}"
        );
        assert_eq!(
            pins.pinned(),
            Vec::<std::path::PathBuf>::new(),
            "no pin left"
        );
    }
}

fn verdicts(log: &str) -> usize {
    log.matches("config reloaded").count()
        + log.matches("config rejected").count()
        + log.matches("reload failed").count()
}
