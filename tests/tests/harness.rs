//! Tests of the namespace harness itself: traffic flows where it should, and nothing outlives
//! a test.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_tests::{
    Lan, Netns, add_addr, attach_xdp_pass, eventually, eventually_async, if_index, mac_of,
    privileged, set_mac, sweep_stale_namespaces, sysctl, veth,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a datagram from `client` to an echo server on `server_addr` in `server`, and checks
/// the echo. The server runs as an async task in its namespace; the client on a thread in its.
fn udp_roundtrip(client: &Netns, server: &Netns, server_addr: SocketAddr) {
    let socket = server
        .in_ns(|| UdpSocket::bind(server_addr))
        .unwrap_or_else(|e| panic!("binding {server_addr} in {}: {e}", server.name()));
    socket.set_nonblocking(true).expect("set_nonblocking");
    let echo = server.spawn_task(async move {
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let mut buf = [0u8; 64];
        let (len, peer) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..len], peer).await?;
        io::Result::Ok(peer)
    });

    let (reply, client_addr) = client.in_ns(|| {
        let unspecified: SocketAddr = if server_addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(unspecified).expect("binding the client socket");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket.send_to(b"sluice", server_addr).expect("send_to");
        let mut buf = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buf).expect("no echo from the server");
        assert_eq!(from, server_addr);
        (
            buf[..len].to_vec(),
            socket.local_addr().expect("local_addr"),
        )
    });
    assert_eq!(reply, b"sluice");
    let peer = echo.join().expect("echo server");
    assert_eq!(peer.port(), client_addr.port());
}

fn netns_exists(name: &str) -> bool {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let in_list = listed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name));
    in_list || Path::new("/var/run/netns").join(name).exists()
}

#[test]
fn veth_carries_udp_over_ipv4() {
    if !privileged() {
        return;
    }
    let a = Netns::new("a");
    let b = Netns::new("b");
    veth(&a, "eth0", &b, "eth0");
    add_addr(&a, "eth0", "10.0.0.1/24");
    add_addr(&b, "eth0", "10.0.0.2/24");
    udp_roundtrip(&a, &b, "10.0.0.2:9000".parse().expect("literal"));
}

#[test]
fn veth_carries_udp_over_ipv6() {
    if !privileged() {
        return;
    }
    let a = Netns::new("a6");
    let b = Netns::new("b6");
    veth(&a, "eth0", &b, "eth0");
    add_addr(&a, "eth0", "fd00::1/64");
    add_addr(&b, "eth0", "fd00::2/64");
    udp_roundtrip(&a, &b, "[fd00::2]:9000".parse().expect("literal"));
}

#[test]
fn bridge_passes_traffic_between_members() {
    if !privileged() {
        return;
    }
    let lan = Lan::new();
    let hosts: Vec<Netns> = ["h1", "h2", "h3"].into_iter().map(Netns::new).collect();
    for (i, host) in hosts.iter().enumerate() {
        lan.connect(host, "eth0");
        add_addr(host, "eth0", &format!("10.1.0.{}/24", i + 1));
    }
    udp_roundtrip(
        &hosts[0],
        &hosts[2],
        "10.1.0.3:9000".parse().expect("literal"),
    );
}

#[test]
fn link_helpers_read_back() {
    if !privileged() {
        return;
    }
    let a = Netns::new("links");
    let b = Netns::new("peer");
    veth(&a, "eth0", &b, "eth1");
    let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    set_mac(&a, "eth0", mac);
    assert_eq!(mac_of(&a, "eth0"), mac);
    assert!(if_index(&b, "eth1") > 1, "lo is 1");
    // A new namespace may inherit IPv4 settings from the root one: flip whatever b has.
    let read = |ns: &Netns| {
        ns.in_ns(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
            .expect("reading ip_forward")
            .trim()
            .to_owned()
    };
    let before = read(&b);
    let flipped = if before == "1" { "0" } else { "1" };
    sysctl(&a, "net.ipv4.ip_forward", flipped);
    assert_eq!(read(&a), flipped);
    assert_eq!(read(&b), before, "the sysctl leaked out of its namespace");
}

#[test]
fn dropping_a_netns_deletes_it() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("dropped");
    let name = ns.name().to_owned();
    assert!(netns_exists(&name));
    drop(ns);
    assert!(!netns_exists(&name), "{name} outlived its guard");
}

#[test]
fn a_panicking_test_still_deletes_its_netns_and_processes() {
    if !privileged() {
        return;
    }
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new("panicky");
        let child = ns.spawn({
            let mut sleep = ns.command("sleep");
            sleep.arg("1000");
            sleep
        });
        seen = Some((ns.name().to_owned(), child.pid()));
        panic!("test body fails");
    }));
    assert!(result.is_err());
    let (name, pid) = seen.expect("the body ran");
    assert!(!netns_exists(&name), "{name} outlived a panic");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} outlived a panic"
    );
}

#[test]
fn spawned_process_runs_in_the_netns_and_dies_on_drop() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("spawn");
    let mut sleep = ns.command("sleep");
    sleep.arg("1000");
    let child = ns.spawn(sleep);
    let pid = child.pid();
    let want = std::fs::metadata(ns.path()).expect("netns file").ino();
    let got = eventually(TIMEOUT, || {
        // Before nsenter's exec the process is briefly still in the root namespace.
        let ino = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map_err(|e| e.to_string())?
            .ino();
        if ino == want {
            Ok(ino)
        } else {
            Err(format!("pid {pid} in netns inode {ino}"))
        }
    });
    assert_eq!(got, want);
    drop(child);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} survived its guard"
    );
}

#[test]
fn dropping_the_netns_kills_processes_whose_guard_lives_on() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("orphans");
    let mut sleep = ns.command("sleep");
    sleep.arg("1000");
    let mut child = ns.spawn(sleep);
    let pid = child.pid();
    drop(ns);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} outlived its netns"
    );
    assert_eq!(child.kill(), None, "already reaped by the netns");
}

/// A namespace named by hand with `ip netns ARGS...`, deleted whatever the test's outcome.
struct RawNetns(String);

impl RawNetns {
    fn new(name: String, args: &[&str]) -> RawNetns {
        let status = Command::new("ip").arg("netns").args(args).status();
        assert!(status.expect("ip netns").success(), "ip netns {args:?}");
        RawNetns(name)
    }
}

impl Drop for RawNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A process outside any test namespace, killed and reaped whatever the test's outcome.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sweep_removes_namespaces_of_dead_pids_only() {
    if !privileged() {
        return;
    }
    let mut exited = Command::new("true").spawn().expect("spawning true");
    let dead_pid = exited.id();
    exited.wait().expect("reaping true");
    let live = Killed(
        Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawning sleep"),
    );

    // A leftover of the killed run: a process in the stale namespace. It is inside before
    // the namespace gets its name, so no other test process's sweep can see the name first.
    let mut leftover = Killed(
        Command::new("unshare")
            .args(["--net", "sleep", "1000"])
            .spawn()
            .expect("spawning a leftover"),
    );
    let root_netns = std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino();
    eventually(TIMEOUT, || {
        let pid = leftover.0.id();
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|e| e.to_string())?;
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
        if comm.trim() == "sleep" && netns.ino() != root_netns {
            Ok(())
        } else {
            Err(format!(
                "pid {pid} is {comm:?}, not yet sleeping in its own netns"
            ))
        }
    });
    let dead_name = format!("slc-{dead_pid}-0-stale");
    let pid = leftover.0.id().to_string();
    let dead = RawNetns::new(dead_name.clone(), &["attach", &dead_name, &pid]);
    let alive_name = format!("slc-{}-0-alive", live.0.id());
    let alive = RawNetns::new(alive_name.clone(), &["add", &alive_name]);

    sweep_stale_namespaces();
    // Another test process's sweep may be deleting it at the same time: check the state it
    // converges to, not what our sweep returned.
    eventually(TIMEOUT, || match netns_exists(&dead.0) {
        true => Err(format!("{} survived the sweep", dead.0)),
        false => Ok(()),
    });
    assert!(
        netns_exists(&alive.0),
        "the sweep removed {} of a live pid",
        alive.0
    );
    let status = eventually(TIMEOUT, || {
        leftover
            .0
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or("the leftover process still runs".to_owned())
    });
    assert!(!status.success());
}

#[test]
fn xdp_pass_attaches_and_detaches() {
    if !privileged() {
        return;
    }
    let a = Netns::new("xa");
    let b = Netns::new("xb");
    veth(&a, "eth0", &b, "eth0");
    add_addr(&a, "eth0", "10.2.0.1/24");
    add_addr(&b, "eth0", "10.2.0.2/24");
    let guard = attach_xdp_pass(&b, "eth0");
    assert!(
        b.ip(["link", "show", "dev", "eth0"]).contains("xdp"),
        "no XDP program on eth0"
    );
    udp_roundtrip(&a, &b, "10.2.0.2:9000".parse().expect("literal"));
    drop(guard);
    assert!(
        !b.ip(["link", "show", "dev", "eth0"]).contains("xdp"),
        "XDP program left attached"
    );
}

#[test]
fn tasks_propagate_panics_and_are_cancelled_on_drop() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("tasks");
    let forever = ns.spawn_task(std::future::pending::<()>());
    assert!(!forever.is_finished());
    drop(forever);

    let polled = ns.spawn_task(async {
        let attempts = AtomicUsize::new(0);
        eventually_async(TIMEOUT, || {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                match attempt {
                    3.. => Ok(attempt),
                    _ => Err(format!("attempt {attempt}")),
                }
            }
        })
        .await
    });
    assert_eq!(polled.join(), 3);

    let failing = ns.spawn_task(async { panic!("task body fails") });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| failing.join()));
    assert!(result.is_err(), "join() swallowed the task's panic");
}
