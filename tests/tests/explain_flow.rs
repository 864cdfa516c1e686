//! `sluice explain` (through `GET /debug/flow`) against where real traffic went in a
//! namespace topology: for established flows it names the backend that answered them, for
//! new flows the backend Maglev then really gives them, a flow to no service is passed, and
//! for an L7 service it names the route and pool that really received the request.

#[path = "l4_e2e_support/mod.rs"]
mod l4_e2e_support;
mod l7_support;

use std::net::{IpAddr, SocketAddr};

use l4_e2e_support::{Mode, Setup, V4};
use l7_support::Backend;
use l7_support::client::{H1, get};
use sluice_tests::{privileged, sluice_cli};

const L7: &str = "127.0.0.1:8080";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `sluice explain` in the load balancer's namespace, as JSON.
fn explain(setup: &Setup, src: SocketAddr, dst: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let (src, dst) = (src.to_string(), dst.to_string());
    let mut args = vec!["explain", "--proto", "tcp", "--src", &src, "--dst", &dst];
    args.extend_from_slice(extra);
    let (ok, out) = sluice_cli(setup.lb(), &args);
    assert!(ok, "sluice {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The IP of an `ADDRESS:PORT` JSON string.
fn ip_of(value: &serde_json::Value) -> Option<IpAddr> {
    value.as_str()?.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// Connects from `src` to `dst` in the client's namespace; returns who answered.
fn connect_from(setup: &Setup, src: SocketAddr, dst: SocketAddr) -> String {
    setup
        .client
        .spawn_task(async move {
            use tokio::io::AsyncBufReadExt;
            let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
            socket.set_reuseaddr(true).unwrap_or_else(|e| panic!("{e}"));
            socket
                .bind(src)
                .unwrap_or_else(|e| panic!("bind {src}: {e}"));
            let stream =
                tokio::time::timeout(std::time::Duration::from_secs(5), socket.connect(dst))
                    .await
                    .unwrap_or_else(|_| panic!("connect {src} -> {dst} timed out"))
                    .unwrap_or_else(|e| panic!("connect {src} -> {dst}: {e}"));
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await
                .unwrap_or_else(|e| panic!("read: {e}"));
            line.trim().to_string()
        })
        .join()
}

#[test]
fn explain_agrees_with_where_flows_and_requests_went() {
    if !privileged() {
        return;
    }
    let setup = Setup::new(&V4, Mode::Nat);
    let vip = setup.tcp_vip();
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());

    // Established flows: the connection table holds the backend that answered.
    let established: Vec<_> = setup
        .client
        .in_ns(|| (0..15).map(|_| setup.tcp_connect()).collect());
    for conn in &established {
        let answer = explain(&setup, conn.local, vip, &[]);
        let want: IpAddr = conn.served_by.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["service"]["name"], "tcp", "{answer}");
        assert_eq!(answer["connection"]["live"], true, "{answer}");
        assert_eq!(
            ip_of(&answer["connection"]["address"]),
            Some(want),
            "{answer}"
        );
        assert_eq!(ip_of(&answer["backend"]["address"]), Some(want), "{answer}");
        assert_eq!(answer["backend"]["pool"], "tcp", "{answer}");
        let verdict = answer["verdict"].as_str().unwrap_or_default();
        assert!(verdict.contains("established"), "{answer}");
        // NAT backends sit on the load balancer's link: the next hop is the backend itself,
        // out of eth0, and its neighbour entry is resolved.
        let hop = &answer["backend"]["neighbour"];
        assert_eq!(
            hop["next_hop"].as_str().and_then(|a| a.parse().ok()),
            Some(want),
            "{answer}"
        );
        assert_eq!(hop["device"], "eth0", "{answer}");
        assert!(hop["mac"].as_str().is_some(), "{answer}");
    }

    // New flows: the explanation beforehand names the backend that then answers.
    let client: IpAddr = V4.client.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut seen = std::collections::BTreeSet::new();
    for port in 42_000..42_024 {
        let src = SocketAddr::new(client, port);
        let before = explain(&setup, src, vip, &[]);
        assert!(before["connection"].is_null(), "{before}");
        let predicted = ip_of(&before["maglev"]["address"])
            .unwrap_or_else(|| panic!("no Maglev pick: {before}"));
        let served = connect_from(&setup, src, vip);
        assert_eq!(served, predicted.to_string(), "{src}: {before}");
        seen.insert(served);
        let after = explain(&setup, src, vip, &[]);
        assert_eq!(
            ip_of(&after["connection"]["address"]),
            Some(predicted),
            "{after}"
        );
    }
    assert!(seen.len() > 1, "the new flows spread: {seen:?}");

    // A port no service has: passed to the kernel.
    let answer = explain(
        &setup,
        SocketAddr::new(client, 42_100),
        addr("10.99.0.1:9999"),
        &[],
    );
    assert!(answer["service"].is_null(), "{answer}");

    // L7: the route and pool named are those that receive the request.
    let lb = setup.lb();
    let app = Backend::start(lb, "app1", addr("127.0.0.1:9001"), l7_support::Mode::Echo);
    let admin = Backend::start(lb, "admin1", addr("127.0.0.1:9002"), l7_support::Mode::Echo);
    let l7 = "[[pool]]\nname = \"app\"\n[pool.health_check]\nkind = \"none\"\n\
              [[pool.backend]]\nname = \"app1\"\naddress = \"127.0.0.1\"\nport = 9001\n\
              [[pool]]\nname = \"admin\"\n[pool.health_check]\nkind = \"none\"\n\
              [[pool.backend]]\nname = \"admin1\"\naddress = \"127.0.0.1\"\nport = 9002\n\
              [[service]]\nname = \"web\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"tcp\"\n\
              [service.l7]\n[[service.l7.virtual_host]]\nname = \"ops\"\ndomains = [\"ops.example\"]\n\
              [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\nforward = { pool = \"admin\" }\n\
              [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
              [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\nforward = { pool = \"app\" }\n";
    setup.reload_with(&format!("{}{l7}", setup.config_text()));
    let client_addr = addr("127.0.0.1:50000");
    for (host, pool, route, backend) in [
        ("ops.example", "admin", "ops#1", &admin),
        ("www.example", "app", "all#1", &app),
    ] {
        let answer = explain(
            &setup,
            client_addr,
            addr(L7),
            &["--host", host, "--path", "/x?y=1"],
        );
        assert_eq!(answer["service"]["kind"], "l7", "{answer}");
        assert_eq!(answer["l7"]["route"], route, "{answer}");
        assert_eq!(answer["l7"]["pools"][0][0], pool, "{answer}");
        let before = backend.count();
        let host = host.to_string();
        let status = lb
            .spawn_task(async move {
                let mut client = H1::connect(addr(L7)).await.expect("connect");
                client
                    .send(get(&host, "/x?y=1"))
                    .await
                    .expect("reply")
                    .status
            })
            .join();
        assert_eq!(status, 200);
        assert_eq!(backend.count(), before + 1, "{pool} received the request");
    }
    drop(established);
    setup.stop();
}
