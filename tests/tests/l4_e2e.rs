//! End to end through the real agent and XDP program: TCP connections and UDP datagrams
//! from a client namespace (many source ports) reach backend namespaces whose servers say who
//! they are, each flow on exactly the backend the `lb-common` Maglev model predicts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use sluice_tests::{
    Lan, Netns, NsTask, SluiceAgent, add_addr, attach_xdp_pass, disable_tx_offload, eventually,
    privileged, route_add, sysctl, xdp_program,
};

const VIP: &str = "10.99.0.1";
const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;
const TABLE_SIZE: u32 = 65537;
const BACKENDS: [(&str, u16); 3] = [("10.30.0.11", 1), ("10.30.0.12", 1), ("10.30.0.13", 2)];

/// Answers every TCP connection and UDP datagram with `name`.
async fn identity_server(name: String, addr: IpAddr) {
    identity_server_on(name, addr, TCP_PORT, UDP_PORT).await;
}

/// Answers TCP connections on `tcp_port` and UDP datagrams on `udp_port` with `name`.
async fn identity_server_on(name: String, addr: IpAddr, tcp_port: u16, udp_port: u16) {
    let tcp = tokio::net::TcpListener::bind((addr, tcp_port))
        .await
        .unwrap_or_else(|e| panic!("bind tcp: {e}"));
    let udp = tokio::net::UdpSocket::bind((addr, udp_port))
        .await
        .unwrap_or_else(|e| panic!("bind udp: {e}"));
    let tcp_name = name.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = tcp.accept().await {
            let reply = tcp_name.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    let mut buf = [0u8; 64];
    while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
        let _ = udp.send_to(name.as_bytes(), peer).await;
    }
}

/// The table the agent builds for a pool of `BACKENDS` listening on `port`.
fn model(port: u16) -> (MaglevTable, Vec<String>) {
    model_of(&BACKENDS, port)
}

fn model_of(list: &[(&str, u16)], port: u16) -> (MaglevTable, Vec<String>) {
    let backends: Vec<MaglevBackend> = list
        .iter()
        .map(|(addr, weight)| MaglevBackend {
            key: BackendKey::from(SocketAddr::new(parse(addr), port)),
            weight: u32::from(*weight),
        })
        .collect();
    let table = MaglevTable::build(&backends, TABLE_SIZE, 0).unwrap_or_else(|e| panic!("{e}"));
    (table, list.iter().map(|(a, _)| a.to_string()).collect())
}

fn parse(addr: &str) -> IpAddr {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn predicted(
    table: &MaglevTable,
    names: &[String],
    client: SocketAddr,
    port: u16,
    proto: u8,
) -> String {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (client.ip(), parse(VIP)) else {
        panic!("IPv4 only here");
    };
    let input = FlowHashInput::from_v4(src.octets(), dst.octets(), client.port(), port, proto);
    let slot = maglev_slot(flow_hash(&input, 0), TABLE_SIZE) as usize;
    names[table.slots()[slot] as usize].clone()
}

#[test]
fn dsr_spreads_tcp_and_udp_flows_exactly_as_the_maglev_model() {
    if !privileged() {
        return;
    }
    let lan = Lan::new();
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    lan.connect(&client, "eth0");
    let lb_port = lan.connect(&lb, "eth0");
    add_addr(&client, "eth0", "10.30.0.1/24");
    add_addr(&lb, "eth0", "10.30.0.2/24");
    route_add(&client, &format!("{VIP}/32"), "10.30.0.2");
    disable_tx_offload(&client, "eth0");
    sysctl(&lb, "net.ipv4.conf.all.forwarding", "1");
    sysctl(&lb, "net.ipv4.conf.eth0.forwarding", "1");
    // XDP_TX out of lb/eth0 lands on its bridge port, a veth that must run XDP to accept it.
    let _pass = attach_xdp_pass(lan.switch(), &lb_port);

    let mut hosts = Vec::new();
    let mut servers: Vec<NsTask<()>> = Vec::new();
    for (addr, _) in BACKENDS {
        let host = Netns::new("backend");
        lan.connect(&host, "eth0");
        add_addr(&host, "eth0", &format!("{addr}/24"));
        add_addr(&host, "lo", &format!("{VIP}/32"));
        for iface in ["all", "eth0"] {
            sysctl(&host, &format!("net.ipv4.conf.{iface}.arp_ignore"), "1");
            sysctl(&host, &format!("net.ipv4.conf.{iface}.arp_announce"), "2");
        }
        servers.push(host.spawn_task(identity_server(addr.to_string(), parse(VIP))));
        hosts.push(host);
    }

    let backends: String = BACKENDS
        .iter()
        .map(|(addr, weight)| {
            format!("[[pool.backend]]\naddress = \"{addr}\"\nport = PORT\nweight = {weight}\n")
        })
        .collect();
    let config = format!(
        r#"
[[interface]]
name = "eth0"
xdp_mode = "native"

[[pool]]
name = "tcp"
[pool.health_check]
kind = "none"
{tcp_backends}
[[pool]]
name = "udp"
[pool.health_check]
kind = "none"
{udp_backends}
[[service]]
name = "tcp"
vip = "{VIP}"
port = {TCP_PORT}
protocol = "tcp"
[service.l4]
mode = "dsr"
pool = "tcp"

[[service]]
name = "udp"
vip = "{VIP}"
port = {UDP_PORT}
protocol = "udp"
[service.l4]
mode = "dsr"
pool = "udp"
"#,
        tcp_backends = backends.replace("PORT", &TCP_PORT.to_string()),
        udp_backends = backends.replace("PORT", &UDP_PORT.to_string()),
    );
    let mut agent = SluiceAgent::start(&lb, &config);
    eventually(Duration::from_secs(20), || {
        agent.assert_running();
        xdp_program(&lb, "eth0").ok_or_else(|| "not attached yet".to_string())
    });

    let (table, names) = model(TCP_PORT);
    let (udp_table, _) = model(UDP_PORT);
    let (tcp_hits, udp_hits) = client.in_ns(|| {
        let vip = parse(VIP);
        let mut tcp_hits: BTreeMap<String, usize> = BTreeMap::new();
        // The first flows may wait for the managed neighbour entries to resolve.
        let first = eventually(Duration::from_secs(20), || {
            tcp_exchange(SocketAddr::new(vip, TCP_PORT)).map_err(|e| e.to_string())
        });
        assert_eq!(first.1, predicted(&table, &names, first.0, TCP_PORT, 6));
        for _ in 0..150 {
            let (local, served_by) = tcp_exchange(SocketAddr::new(vip, TCP_PORT))
                .unwrap_or_else(|e| panic!("TCP through the VIP: {e}"));
            assert_eq!(
                served_by,
                predicted(&table, &names, local, TCP_PORT, 6),
                "flow {local}"
            );
            *tcp_hits.entry(served_by).or_default() += 1;
        }
        let mut udp_hits: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..150 {
            let (local, served_by) = udp_exchange(SocketAddr::new(vip, UDP_PORT));
            assert_eq!(
                served_by,
                predicted(&udp_table, &names, local, UDP_PORT, 17),
                "flow {local}"
            );
            *udp_hits.entry(served_by).or_default() += 1;
        }
        (tcp_hits, udp_hits)
    });
    for hits in [&tcp_hits, &udp_hits] {
        assert_eq!(hits.len(), 3, "every backend got flows: {hits:?}");
        let heavy = hits.get("10.30.0.13").copied().unwrap_or(0);
        // Weight 2 of 4: about half of 150 flows.
        assert!((45..=105).contains(&heavy), "weights followed: {hits:?}");
    }
    let status = agent.stop(Duration::from_secs(10));
    assert!(status.success(), "sluice exited with {status}");
    drop(servers);
}

fn tcp_exchange(vip: SocketAddr) -> std::io::Result<(SocketAddr, String)> {
    let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let local = stream.local_addr()?;
    let mut name = String::new();
    stream.read_to_string(&mut name)?;
    let _ = stream.write_all(b"");
    Ok((local, name))
}

fn udp_exchange(vip: SocketAddr) -> (SocketAddr, String) {
    udp_exchange_from("10.30.0.1:0", vip)
}

fn udp_exchange_from(local: &str, vip: SocketAddr) -> (SocketAddr, String) {
    let socket = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap_or_else(|e| panic!("{e}"));
    let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        socket
            .send_to(b"who", vip)
            .unwrap_or_else(|e| panic!("send: {e}"));
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return (local, String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    panic!("no UDP answer through the VIP from {local}");
}

const NAT_BACKENDS: [(&str, u16); 3] = [("10.41.0.11", 1), ("10.41.0.12", 2), ("10.41.0.13", 1)];
const NAT_TCP_BACKEND_PORT: u16 = 8000;
const NAT_UDP_BACKEND_PORT: u16 = 8001;

#[test]
fn nat_translates_both_ways_and_follows_the_maglev_model() {
    if !privileged() {
        return;
    }
    let lan = Lan::new();
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    lan.connect(&client, "eth0");
    let lb_port = lan.connect(&lb, "eth0");
    add_addr(&client, "eth0", "10.40.0.1/24");
    add_addr(&lb, "eth0", "10.40.0.2/24");
    add_addr(&lb, "eth0", "10.41.0.2/24");
    route_add(&client, &format!("{VIP}/32"), "10.40.0.2");
    disable_tx_offload(&client, "eth0");
    sysctl(&lb, "net.ipv4.conf.all.forwarding", "1");
    sysctl(&lb, "net.ipv4.conf.eth0.forwarding", "1");
    let _pass = attach_xdp_pass(lan.switch(), &lb_port);

    let mut hosts = Vec::new();
    let mut servers: Vec<NsTask<()>> = Vec::new();
    for (addr, _) in NAT_BACKENDS {
        let host = Netns::new("backend");
        lan.connect(&host, "eth0");
        add_addr(&host, "eth0", &format!("{addr}/24"));
        // Replies go back through the load balancer, which translates them.
        route_add(&host, "default", "10.41.0.2");
        disable_tx_offload(&host, "eth0");
        servers.push(host.spawn_task(identity_server_on(
            addr.to_string(),
            parse(addr),
            NAT_TCP_BACKEND_PORT,
            NAT_UDP_BACKEND_PORT,
        )));
        hosts.push(host);
    }
    let pool = |name: &str, port: u16| {
        let mut text =
            format!("[[pool]]\nname = \"{name}\"\n[pool.health_check]\nkind = \"none\"\n");
        for (addr, weight) in NAT_BACKENDS {
            text += &format!(
                "[[pool.backend]]\naddress = \"{addr}\"\nport = {port}\nweight = {weight}\n"
            );
        }
        text
    };
    let config = format!(
        r#"
[[interface]]
name = "eth0"
xdp_mode = "native"
{tcp_pool}
{udp_pool}
[[service]]
name = "tcp"
vip = "{VIP}"
port = {TCP_PORT}
protocol = "tcp"
[service.l4]
mode = "nat"
pool = "tcp"

[[service]]
name = "udp"
vip = "{VIP}"
port = {UDP_PORT}
protocol = "udp"
[service.l4]
mode = "nat"
pool = "udp"
"#,
        tcp_pool = pool("tcp", NAT_TCP_BACKEND_PORT),
        udp_pool = pool("udp", NAT_UDP_BACKEND_PORT),
    );
    let mut agent = SluiceAgent::start(&lb, &config);
    eventually(Duration::from_secs(20), || {
        agent.assert_running();
        xdp_program(&lb, "eth0").ok_or_else(|| "not attached yet".to_string())
    });

    let (tcp_table, names) = model_of(&NAT_BACKENDS, NAT_TCP_BACKEND_PORT);
    let (udp_table, _) = model_of(&NAT_BACKENDS, NAT_UDP_BACKEND_PORT);
    let hits = client.in_ns(|| {
        let vip = parse(VIP);
        let mut hits: BTreeMap<String, usize> = BTreeMap::new();
        eventually(Duration::from_secs(20), || {
            tcp_exchange(SocketAddr::new(vip, TCP_PORT)).map_err(|e| e.to_string())
        });
        for _ in 0..100 {
            // The client talks to VIP:port only; a reply from anywhere else is refused by
            // its TCP stack, so a completed exchange proves the reverse translation.
            let (local, served_by) = tcp_exchange(SocketAddr::new(vip, TCP_PORT))
                .unwrap_or_else(|e| panic!("TCP through the VIP: {e}"));
            assert_eq!(
                served_by,
                predicted(&tcp_table, &names, local, TCP_PORT, 6),
                "flow {local}"
            );
            *hits.entry(served_by).or_default() += 1;
        }
        for _ in 0..100 {
            let socket = UdpSocket::bind("10.40.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
            socket
                .connect(SocketAddr::new(vip, UDP_PORT))
                .unwrap_or_else(|e| panic!("connect: {e}"));
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap_or_else(|e| panic!("{e}"));
            let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 64];
            // A connected UDP socket only receives datagrams from VIP:port.
            let n = (0..5)
                .find_map(|_| {
                    socket.send(b"who").ok()?;
                    socket.recv(&mut buf).ok()
                })
                .unwrap_or_else(|| panic!("no UDP answer from the VIP to {local}"));
            let served_by = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert_eq!(
                served_by,
                predicted(&udp_table, &names, local, UDP_PORT, 17),
                "flow {local}"
            );
        }
        hits
    });
    assert_eq!(hits.len(), 3, "every backend got flows: {hits:?}");
    let status = agent.stop(Duration::from_secs(10));
    assert!(status.success(), "sluice exited with {status}");
    drop(servers);
}
