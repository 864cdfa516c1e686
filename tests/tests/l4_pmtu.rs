//! Path-MTU discovery through a NAT service: 1 MB each way over one TCP connection (DF set,
//! as Linux sends TCP) where a hop on each side of the load balancer holds only 1280 bytes.
//!
//! ```text
//! client --- edge --- lb (sluice, NAT) --- core --- backend
//!              `-- 1280 toward the client    `-- 1280 toward the backend
//! ```
//!
//! The small hops are route MTUs on the routers, so both ends keep 1500-byte links and
//! advertise a 1460-byte MSS: only ICMP can tell them to send less. The backend's 1500-byte
//! segments, translated to come from the VIP, make `edge` send "fragmentation needed" /
//! "packet too big" to the VIP; sluice must translate it and send it to the backend. The
//! client's segments, translated to go to the backend, make `core` send the same to the
//! client about a packet to the backend; sluice must translate it back to quote the client's
//! packet to the VIP. Without either, the transfer in that direction stalls.
//!
//! No host holds the VIP, so an answer to a ping of it can only come from the program: the
//! agent's VIP set and `[dataplane] vip_echo` (default "reply") reached it.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::Duration;

use sluice_tests::{
    Netns, SluiceAgent, XdpPassGuard, add_addr, attach_xdp_pass, disable_tx_offload, eventually,
    privileged, route_add, sysctl, veth,
};

const BYTES: usize = 1 << 20;
const VIP_PORT: u16 = 7000;
const BACKEND_PORT: u16 = 8000;
const SMALL_MTU: &str = "1280";

/// One family's addresses: four /24 (/64) links and the VIP.
struct Plan {
    /// client--edge, edge--lb, lb--core, core--backend: the prefix of each link; hosts
    /// are `.1` (left) and `.2` (right), written with `host`.
    links: [&'static str; 4],
    vip: &'static str,
    v6: bool,
}

const V4: Plan = Plan {
    links: ["10.40.0", "10.41.0", "10.42.0", "10.43.0"],
    vip: "10.98.0.1",
    v6: false,
};

const V6: Plan = Plan {
    links: ["fd00:40:", "fd00:41:", "fd00:42:", "fd00:43:"],
    vip: "fd00:98::1",
    v6: true,
};

impl Plan {
    /// Host `n` (1: left end, 2: right end) of link `link`.
    fn host(&self, link: usize, n: u8) -> String {
        if self.v6 {
            format!("{}:{n}", self.links[link])
        } else {
            format!("{}.{n}", self.links[link])
        }
    }

    fn cidr(&self, link: usize, n: u8) -> String {
        let len = if self.v6 { 64 } else { 24 };
        format!("{}/{len}", self.host(link, n))
    }

    fn net(&self, link: usize) -> String {
        if self.v6 {
            format!("{}:/64", self.links[link])
        } else {
            format!("{}.0/24", self.links[link])
        }
    }

    fn host_route(&self, link: usize, n: u8) -> String {
        let len = if self.v6 { 128 } else { 32 };
        format!("{}/{len}", self.host(link, n))
    }

    fn family(&self) -> &'static str {
        if self.v6 { "-6" } else { "-4" }
    }

    fn client(&self) -> String {
        self.host(0, 1)
    }

    fn backend(&self) -> String {
        self.host(3, 2)
    }
}

/// The five namespaces, the agent and the XDP_PASS programs on the load balancer's peers.
/// Fields drop in order: the agent first, while its interfaces still exist.
struct Topology {
    agent: SluiceAgent,
    _pass: [XdpPassGuard; 2],
    client: Netns,
    backend: Netns,
    _lb: Netns,
    _edge: Netns,
    _core: Netns,
}

impl Topology {
    fn new(plan: &Plan) -> Topology {
        let client = Netns::new("client");
        let edge = Netns::new("edge");
        let lb = Netns::new("lb");
        let core = Netns::new("core");
        let backend = Netns::new("backend");
        veth(&client, "eth0", &edge, "c0");
        veth(&edge, "l0", &lb, "eth0");
        veth(&lb, "eth1", &core, "l0");
        veth(&core, "b0", &backend, "eth0");
        add_addr(&client, "eth0", &plan.cidr(0, 1));
        add_addr(&edge, "c0", &plan.cidr(0, 2));
        add_addr(&edge, "l0", &plan.cidr(1, 1));
        add_addr(&lb, "eth0", &plan.cidr(1, 2));
        add_addr(&lb, "eth1", &plan.cidr(2, 1));
        add_addr(&core, "l0", &plan.cidr(2, 2));
        add_addr(&core, "b0", &plan.cidr(3, 1));
        add_addr(&backend, "eth0", &plan.cidr(3, 2));
        for ns in [&edge, &lb, &core] {
            sysctl(ns, "net.ipv4.conf.all.forwarding", "1");
            sysctl(ns, "net.ipv6.conf.all.forwarding", "1");
        }
        for dev in ["eth0", "eth1"] {
            sysctl(&lb, &format!("net.ipv4.conf.{dev}.forwarding"), "1");
        }
        route_add(&client, "default", &plan.host(0, 2));
        route_add(&edge, "default", &plan.host(1, 2));
        route_add(&lb, &plan.net(0), &plan.host(1, 1));
        route_add(&lb, &plan.net(3), &plan.host(2, 2));
        route_add(&core, "default", &plan.host(2, 1));
        route_add(&backend, "default", &plan.host(3, 1));
        // The bottlenecks: route MTUs the routers honour when forwarding.
        small_hop(&edge, plan, &plan.host_route(0, 1), "c0");
        small_hop(&core, plan, &plan.host_route(3, 2), "b0");
        // Native XDP on veth loses the "checksum to be filled in" state of locally sent frames.
        disable_tx_offload(&client, "eth0");
        disable_tx_offload(&backend, "eth0");
        // The program redirects out of both of the load balancer's links.
        let pass = [attach_xdp_pass(&edge, "l0"), attach_xdp_pass(&core, "l0")];

        let config = format!(
            "[[interface]]\nname = \"eth0\"\nxdp_mode = \"native\"\n\
             [[interface]]\nname = \"eth1\"\nxdp_mode = \"native\"\n\
             [[pool]]\nname = \"bulk\"\n[pool.health_check]\nkind = \"none\"\n\
             [[pool.backend]]\naddress = \"{}\"\nport = {BACKEND_PORT}\n\
             [[service]]\nname = \"bulk\"\nvip = \"{}\"\nport = {VIP_PORT}\nprotocol = \"tcp\"\n\
             [service.l4]\nmode = \"nat\"\npool = \"bulk\"\n",
            plan.backend(),
            plan.vip
        );
        let mut agent = SluiceAgent::start(&lb, &config);
        for dev in ["eth0", "eth1"] {
            agent.wait_attached(&lb, dev, Duration::from_secs(20));
        }
        Topology {
            agent,
            _pass: pass,
            client,
            backend,
            _lb: lb,
            _edge: edge,
            _core: core,
        }
    }
}

/// A route to `dest` through `dev` in `router` whose MTU is [`SMALL_MTU`].
fn small_hop(router: &Netns, plan: &Plan, dest: &str, dev: &str) {
    router.ip([
        plan.family(),
        "route",
        "add",
        dest,
        "dev",
        dev,
        "mtu",
        SMALL_MTU,
    ]);
}

/// Byte `i` of the test stream: no period a lost or repeated segment could hide in.
fn pattern(i: usize, salt: u8) -> u8 {
    ((i ^ (i >> 8) ^ (i >> 16)) as u8).wrapping_add(salt)
}

fn stream(salt: u8) -> Vec<u8> {
    (0..BYTES).map(|i| pattern(i, salt)).collect()
}

/// Reads everything up to EOF and checks it is `stream(salt)`.
fn read_stream(conn: &mut TcpStream, salt: u8, who: &str) -> Result<(), String> {
    let mut got = Vec::with_capacity(BYTES);
    conn.read_to_end(&mut got)
        .map_err(|e| format!("{who}: reading after {} bytes: {e}", got.len()))?;
    if got.len() != BYTES {
        return Err(format!("{who}: got {} of {BYTES} bytes", got.len()));
    }
    if let Some(at) = got
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(i, salt))
    {
        return Err(format!("{who}: byte {at} differs"));
    }
    Ok(())
}

/// The backend: skips the warm-up connections (closed without a byte), then reads the
/// client's megabyte to EOF, checks it, sends its own and closes. Gives up after a minute
/// without the client's connection, so a broken path fails the test instead of hanging it.
fn serve(listener: std::net::TcpListener) -> Result<(), String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("non-blocking listener: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err("backend: no connection with data within 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(format!("accept: {e}")),
        };
        conn.set_nonblocking(false)
            .and_then(|()| conn.set_read_timeout(Some(Duration::from_secs(30))))
            .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(30))))
            .map_err(|e| format!("socket options: {e}"))?;
        match conn.peek(&mut [0u8; 1]) {
            Ok(0) => continue,
            Ok(_) => break conn,
            Err(e) => return Err(format!("backend: waiting for the client's first byte: {e}")),
        }
    };
    read_stream(&mut conn, 1, "backend")?;
    conn.write_all(&stream(2))
        .map_err(|e| format!("backend: sending: {e}"))?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("backend: closing: {e}"))
}

/// The client: sends its megabyte, half-closes, then reads the backend's.
fn exchange(vip: SocketAddr) -> Result<(), String> {
    let mut conn = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {vip}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| format!("timeouts: {e}"))?;
    conn.write_all(&stream(1))
        .map_err(|e| format!("client: sending: {e}"))?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("client: half-closing: {e}"))?;
    read_stream(&mut conn, 2, "client")
}

/// The route cache's MTU toward `dest` inside `ns`, if it learned one.
fn learned_mtu(ns: &Netns, family: &str, dest: &str) -> Option<u32> {
    let out = ns.ip([family, "route", "get", dest]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

fn pmtu_through_nat(plan: &Plan) {
    let topo = Topology::new(plan);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    let vip = SocketAddr::new(ip(plan.vip), VIP_PORT);
    let bind = SocketAddr::new(ip(&plan.backend()), BACKEND_PORT);
    let listener = topo
        .backend
        .in_ns(|| std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}")));
    let server = topo
        .backend
        .spawn_thread("pmtu-backend".into(), move || serve(listener))
        .unwrap_or_else(|e| panic!("spawning the backend: {e}"));
    // The first flows may wait for the load balancer to resolve the routers' MACs.
    topo.client.in_ns(|| {
        eventually(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&vip, Duration::from_secs(2))
                .map(drop)
                .map_err(|e| format!("connecting to {vip}: {e}"))
        });
    });
    let result = topo.client.in_ns(|| exchange(vip));
    let served = server
        .join()
        .unwrap_or_else(|_| panic!("the backend thread panicked"));
    assert!(
        result.is_ok() && served.is_ok(),
        "1 MB each way through {vip}: client {result:?}, backend {served:?}\nagent log:\n{}",
        topo.agent.log()
    );
    // Each end learned the small hop from ICMP sluice translated for it.
    let f = plan.family();
    let small: u32 = SMALL_MTU.parse().unwrap_or(0);
    assert_eq!(
        learned_mtu(&topo.backend, f, &plan.client()),
        Some(small),
        "the backend's path MTU toward the client (ICMP sent to the VIP, translated)"
    );
    assert_eq!(
        learned_mtu(&topo.client, f, plan.vip),
        Some(small),
        "the client's path MTU toward the VIP (ICMP about the backend's address, translated)"
    );
}

#[test]
fn nat_ipv4_path_mtu_discovery_moves_a_megabyte_each_way() {
    if !privileged() {
        return;
    }
    pmtu_through_nat(&V4);
}

#[test]
fn nat_ipv6_path_mtu_discovery_moves_a_megabyte_each_way() {
    if !privileged() {
        return;
    }
    pmtu_through_nat(&V6);
}

/// One echo request to `dest` through an ICMP datagram ("ping") socket, and its reply.
fn ping(dest: IpAddr) -> Result<(), String> {
    let (domain, protocol, request, reply) = match dest {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8, 0),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    // SAFETY: a plain socket(2) call; its descriptor is owned by the UdpSocket at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(format!("ICMP socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh, open socket nothing else owns.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("timeout: {e}"))?;
    // Type, code, checksum and identifier (the kernel fills them in), sequence 1, payload.
    let mut message = vec![request, 0, 0, 0, 0, 0, 0, 1];
    message.extend_from_slice(b"sluice echo");
    socket
        .send_to(&message, SocketAddr::new(dest, 0))
        .map_err(|e| format!("sending an echo request to {dest}: {e}"))?;
    let mut buf = [0u8; 128];
    let (len, from) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no echo reply from {dest}: {e}"))?;
    let answer = &buf[..len];
    if from.ip() != dest || answer.first() != Some(&reply) || answer.get(8..) != Some(&message[8..])
    {
        return Err(format!("unexpected answer from {from}: {answer:?}"));
    }
    Ok(())
}

#[test]
fn echo_to_the_vip_is_answered_by_the_program() {
    if !privileged() {
        return;
    }
    for plan in [&V4, &V6] {
        let topo = Topology::new(plan);
        // ICMP datagram sockets for root, as ping uses them.
        sysctl(&topo.client, "net.ipv4.ping_group_range", "0 0");
        let vip: IpAddr = plan
            .vip
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", plan.vip));
        topo.client
            .in_ns(|| eventually(Duration::from_secs(10), || ping(vip)));
    }
}
